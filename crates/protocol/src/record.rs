//! The record that travels through Kafka: payload plus headers.
//!
//! The payload is exactly the configured format and nothing else, so a
//! consumer that knows the format can read it without remoteback. Everything
//! else rides in Kafka headers; docs/record-format.md is the public
//! description of this module.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::Format;

/// Header: the payload format, `ROW`, `STRING` or `PROTOCOL`.
pub const HEADER_FORMAT: &str = "rb-format";
/// Header: the database index the commands apply to (absent for `ROW`).
pub const HEADER_DB: &str = "rb-db";
/// Header: which proxy captured the record (`host:port`).
pub const HEADER_SOURCE: &str = "rb-source";
/// Header: the record's number in its sender's stream, from 1 per proxy run.
pub const HEADER_SEQ: &str = "rb-seq";
/// Header: when the primary answered, milliseconds since the Unix epoch
/// (`ROW`: when the proxy read the client's bytes).
pub const HEADER_TIME: &str = "rb-time";
/// Header: the client connection the bytes came from (`ROW` only).
pub const HEADER_CONN: &str = "rb-conn";
/// Header: present with value `1` when a `ROW` client connection closed; the
/// payload is then empty.
pub const HEADER_CLOSE: &str = "rb-close";

/// Prefix of every key remoteback itself keeps in the backup (the replay's
/// offsets): never data, never reported as a difference, kept when the
/// sync empties the backup.
pub const KEY_PREFIX: &str = "__remoteback:";

/// Milliseconds since the Unix epoch on this machine's clock: what
/// `rb-time` carries, and what the replay's lag is measured against.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One unit of replication: what the replay applies, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub format: Format,
    /// Database index, for `STRING` and `PROTOCOL`.
    pub db: Option<u32>,
    pub payload: Bytes,
    /// The Kafka key: the hash slot of the first key (`STRING`/`PROTOCOL`)
    /// or the connection id (`ROW`), as decimal text; none for keyless
    /// commands.
    pub key: Option<String>,
    pub source: String,
    pub seq: u64,
    pub time_ms: u64,
    /// The client connection (`ROW`).
    pub conn: Option<u64>,
    /// Whether this `ROW` record marks the end of its connection.
    pub close: bool,
}

impl Record {
    /// The Kafka headers of this record, in a stable order.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![
            (HEADER_FORMAT, self.format.name().to_string()),
            (HEADER_SOURCE, self.source.clone()),
            (HEADER_SEQ, self.seq.to_string()),
            (HEADER_TIME, self.time_ms.to_string()),
        ];
        if let Some(db) = self.db {
            h.push((HEADER_DB, db.to_string()));
        }
        if let Some(conn) = self.conn {
            h.push((HEADER_CONN, conn.to_string()));
        }
        if self.close {
            h.push((HEADER_CLOSE, "1".to_string()));
        }
        h
    }
}

/// A Kafka message that is not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad record header {header}: {reason}")]
pub struct RecordError {
    pub header: &'static str,
    pub reason: String,
}

/// The metadata of a received record, read back from its headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub format: Format,
    pub db: Option<u32>,
    pub source: Option<String>,
    pub seq: Option<u64>,
    pub time_ms: Option<u64>,
    pub conn: Option<u64>,
    pub close: bool,
}

impl Meta {
    /// Reads the headers of a consumed message. `rb-format` is required;
    /// the others are checked when present.
    pub fn from_headers<'a>(
        headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Meta, RecordError> {
        let mut format = None;
        let mut meta = Meta {
            format: Format::Protocol,
            db: None,
            source: None,
            seq: None,
            time_ms: None,
            conn: None,
            close: false,
        };
        for (name, value) in headers {
            match name {
                HEADER_FORMAT => {
                    let text = text(HEADER_FORMAT, value)?;
                    format = Some(text.parse::<Format>().map_err(|reason| RecordError {
                        header: HEADER_FORMAT,
                        reason,
                    })?);
                }
                HEADER_DB => meta.db = Some(number(HEADER_DB, value)?),
                HEADER_SOURCE => meta.source = Some(text(HEADER_SOURCE, value)?.to_string()),
                HEADER_SEQ => meta.seq = Some(number(HEADER_SEQ, value)?),
                HEADER_TIME => meta.time_ms = Some(number(HEADER_TIME, value)?),
                HEADER_CONN => meta.conn = Some(number(HEADER_CONN, value)?),
                HEADER_CLOSE => meta.close = value == b"1",
                _ => {}
            }
        }
        meta.format = format.ok_or(RecordError {
            header: HEADER_FORMAT,
            reason: "missing".into(),
        })?;
        Ok(meta)
    }
}

fn text<'a>(header: &'static str, value: &'a [u8]) -> Result<&'a str, RecordError> {
    std::str::from_utf8(value).map_err(|_| RecordError {
        header,
        reason: "not UTF-8".into(),
    })
}

fn number<T: std::str::FromStr>(header: &'static str, value: &[u8]) -> Result<T, RecordError> {
    text(header, value)?.parse().map_err(|_| RecordError {
        header,
        reason: format!("not a number: {:?}", String::from_utf8_lossy(value)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let r = Record {
            format: Format::Row,
            db: None,
            payload: Bytes::new(),
            key: Some("7".into()),
            source: "host:6666".into(),
            seq: 9,
            time_ms: 1700000000000,
            conn: Some(7),
            close: true,
        };
        let h = r.headers();
        let meta = Meta::from_headers(h.iter().map(|(k, v)| (*k, v.as_bytes()))).unwrap();
        assert_eq!(meta.format, Format::Row);
        assert_eq!(meta.conn, Some(7));
        assert_eq!(meta.seq, Some(9));
        assert!(meta.close);
        assert_eq!(meta.db, None);
    }

    #[test]
    fn missing_or_bad_format_is_an_error() {
        assert!(Meta::from_headers([(HEADER_DB, &b"1"[..])]).is_err());
        let e = Meta::from_headers([(HEADER_FORMAT, &b"JSON"[..])]).unwrap_err();
        assert_eq!(e.header, HEADER_FORMAT);
        assert!(
            Meta::from_headers([(HEADER_FORMAT, &b"STRING"[..]), (HEADER_DB, &b"x"[..])]).is_err()
        );
    }
}
