//! STRING payloads: decoding any bytes gives commands or a positioned
//! error, never a panic; commands encode to a payload that decodes to the
//! same commands (binary safe).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use remoteback_protocol::codec::string;

fuzz_target!(|data: &[u8]| {
    let Ok(commands) = string::decode(data) else {
        return;
    };
    let mut out = BytesMut::new();
    string::encode(&commands, &mut out);
    let again = string::decode(&out).expect("an encoded payload decodes");
    assert_eq!(commands, again);
});
