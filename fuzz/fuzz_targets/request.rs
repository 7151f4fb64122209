//! Client requests: whatever bytes a client sends, the parser answers with
//! requests, "need more" or a protocol error, never a panic, and a request
//! it found lies within the bytes it was given; the bytes of the requests it
//! found, parsed again alone, give the same requests (a request's end does
//! not depend on what follows it).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use remoteback_protocol::request::{parse, Args};

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
});
