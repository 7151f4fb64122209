//! The `PROTOCOL` payload: RESP multi-bulk commands, concatenated.
//!
//! This is what Redis itself writes to its AOF and replication stream, so a
//! third-party consumer needs nothing but a RESP parser to read it.

use bytes::{Bytes, BytesMut};

use crate::request::{self, Args};
use crate::Command;

/// A `PROTOCOL` payload that is not a sequence of multi-bulk commands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("PROTOCOL payload: {reason} at byte {offset}")]
pub struct ProtocolPayloadError {
    pub offset: usize,
    pub reason: String,
}

/// Appends each command as a RESP multi-bulk.
pub fn encode(commands: &[Command], out: &mut BytesMut) {
    for c in commands {
        c.write_resp(out);
    }
}

/// Splits a payload back into its commands; arguments are zero-copy slices.
pub fn decode(payload: &Bytes) -> Result<Vec<Command>, ProtocolPayloadError> {
    let mut commands = Vec::new();
    let mut pos = 0;
    while pos < payload.len() {
        let err = |reason: String| ProtocolPayloadError {
            offset: pos,
            reason,
        };
        if payload[pos] != b'*' {
            return Err(err("expected a multi-bulk command".into()));
        }
        let parsed = request::parse(&payload[pos..])
            .map_err(|e| err(String::from_utf8_lossy(&e.0).into_owned()))?
            .ok_or_else(|| err("truncated command".into()))?;
        if let Args::Ranges(ranges) = &parsed.args {
            if !ranges.is_empty() {
                let frame = payload.slice(pos..pos + parsed.len);
                commands.push(parsed.clone().command(&frame));
            }
        }
        pos += parsed.len;
    }
    Ok(commands)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_binary_commands() {
        let cmds = vec![
            Command::from_parts([&b"MULTI"[..]]),
            Command::from_parts([&b"SET"[..], b"\0\r\n", b""]),
            Command::from_parts([&b"SET"[..], b"k", &vec![0xffu8; 1 << 20][..]]),
            Command::from_parts([&b"EXEC"[..]]),
        ];
        let mut out = BytesMut::new();
        encode(&cmds, &mut out);
        assert_eq!(decode(&out.freeze()).unwrap(), cmds);
    }

    #[test]
    fn rejects_truncated_and_inline() {
        assert!(decode(&Bytes::from_static(b"*2\r\n$3\r\nGET\r\n")).is_err());
        assert!(decode(&Bytes::from_static(b"GET a\r\n")).is_err());
    }
}
