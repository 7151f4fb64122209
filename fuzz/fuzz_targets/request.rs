//! Client requests: whatever bytes a client sends, the parser answers with
//! requests, "need more" or a protocol error, never a panic, and a request
//! it found lies within the bytes it was given; the bytes of the requests it
//! found, parsed again alone, give the same requests (a request's end does
//! not depend on what follows it); and the first request, fed in pieces to
//! the resuming parser as reads would bring it, is the one parsed whole.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use remoteback_protocol::request::{parse, parse_resuming, Args, Limits};

/// The requests at the start of `buf` until one is incomplete or refused:
/// their arguments and how many bytes they took.
fn requests(buf: &Bytes) -> (Vec<Vec<Bytes>>, usize, bool) {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        match parse(&buf[pos..]) {
            Ok(Some(parsed)) => {
                assert!(parsed.len > 0 && pos + parsed.len <= buf.len());
                if let Args::Ranges(ranges) = &parsed.args {
                    for r in ranges {
                        assert!(r.start <= r.end && r.end <= parsed.len);
                    }
                }
                let len = parsed.len;
                let frame = buf.slice(pos..pos + len);
                out.push(parsed.command(&frame).args().to_vec());
                pos += len;
            }
            Ok(None) => return (out, pos, false),
            Err(_) => return (out, pos, true),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let whole = Bytes::copy_from_slice(data);
    let (all, used, refused) = requests(&whole);
    // The prefix that parsed, parsed again alone, gives the same requests.
    let prefix = whole.slice(..used);
    let (again, used_again, refused_again) = requests(&prefix);
    assert_eq!(all, again);
    assert_eq!(used, used_again);
    assert!(!refused_again || refused);
    // The first request in pieces of 7 bytes, resuming each time.
    let mut partial = None;
    let mut end = 0;
    let in_pieces = loop {
        end = (end + 7).min(whole.len());
        match parse_resuming(&whole[..end], &mut partial, Limits::default()) {
            Ok(None) if end < whole.len() => continue,
            other => break other.map(|p| p.map(|p| p.len)),
        }
    };
    match (parse(&whole), in_pieces) {
        (Ok(Some(p)), Ok(Some(len))) => assert_eq!(p.len, len),
        (Ok(None), Ok(None)) | (Err(_), Err(_)) => {}
        (a, b) => panic!("whole {a:?}, in pieces {b:?}"),
    }
});
