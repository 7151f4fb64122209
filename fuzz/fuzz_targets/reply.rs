//! Replies from the primary: the scanner that finds where a reply ends, fed
//! the bytes in pieces as reads would bring them, agrees with the decoder
//! and with itself fed everything at once; neither panics on any input.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use remoteback_protocol::frame::{decode, Scanner};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, data)) = data.split_first() else {
        return;
    };
    let whole = Scanner::new().next(data);
    // The same bytes arriving in two reads.
    let cut = usize::from(cut).min(data.len());
    let mut scanner = Scanner::new();
    let pieces = match scanner.next(&data[..cut]) {
        Ok(None) => scanner.next(data),
        done => done,
    };
    match (&whole, &pieces) {
        (Ok(Some(a)), Ok(Some(b))) => assert_eq!(a, b),
        (Ok(None), Ok(None)) | (Err(_), Err(_)) => {}
        // A complete reply within the first piece, or an error seen early.
        (_, Ok(Some(b))) => assert!(*b <= cut),
        (_, Err(_)) => {}
        (a, b) => panic!("whole {a:?}, in pieces {b:?}"),
    }
    if let Ok(Some(len)) = whole {
        assert!(len <= data.len());
        let bytes = Bytes::copy_from_slice(&data[..len]);
        match decode(&bytes) {
            Ok(Some((_, decoded))) => assert_eq!(decoded, len),
            // Deeper than the decoder takes, or a type it refuses to build.
            Err(_) => {}
            Ok(None) => panic!("the scanner found {len} bytes complete, the decoder wants more"),
        }
    }
});
