//! Records from Kafka: headers and a PROTOCOL payload as a consumer reads
//! them. Any header values give metadata or a named bad header, any
//! payload commands or an error, never a panic; decoded commands encode
//! back to the same payload.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use remoteback_protocol::codec::protocol;
use remoteback_protocol::record::{
    Meta, HEADER_BARRIER, HEADER_DB, HEADER_FORMAT, HEADER_RUN, HEADER_SEQ, HEADER_TIME,
};

const NAMES: [&str; 6] = [
    HEADER_FORMAT,
    HEADER_DB,
    HEADER_RUN,
    HEADER_SEQ,
    HEADER_TIME,
    HEADER_BARRIER,
];

fuzz_target!(|data: &[u8]| {
    // The first bytes choose header values, separated by 0xff; the rest is
    // the payload.
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (head, payload) = data.split_at(split);
    let mut values: Vec<&[u8]> = head.split(|&b| b == 0xff).collect();
    values.resize(NAMES.len(), b"PROTOCOL");
    let headers = NAMES.iter().zip(&values).map(|(n, v)| (*n, *v));
    let _ = Meta::from_headers(headers);
    let payload = Bytes::copy_from_slice(payload.get(1..).unwrap_or(&[]));
    if let Ok(commands) = protocol::decode(&payload) {
        let mut out = BytesMut::new();
        protocol::encode(&commands, &mut out);
        assert_eq!(
            protocol::decode(&out.freeze()).expect("re-decodes"),
            commands
        );
    }
});
