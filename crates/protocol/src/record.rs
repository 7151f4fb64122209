//! The record that travels through Kafka: payload plus headers.
//!
//! The payload is exactly the configured format and nothing else, so a
//! consumer that knows the format can read it without remoteback. Everything
//! else rides in Kafka headers; docs/record-format.md is the public
//! description of this module.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::Format;

/// Header: the payload format, `ROW`, `STRING` or `PROTOCOL`.
pub const HEADER_FORMAT: &str = "rb-format";
/// Header: the database index the commands apply to (absent for `ROW`).
pub const HEADER_DB: &str = "rb-db";
/// Header: which proxy captured the record (`host:port`).
pub const HEADER_SOURCE: &str = "rb-source";
/// Header: the proxy run that captured the record: its start time in
/// milliseconds since the Unix epoch. `(rb-source, rb-run)` names one
/// stream of sequence numbers.
pub const HEADER_RUN: &str = "rb-run";
/// Header: the record's number in its stream: from 1 per proxy run and
/// Kafka partition, without gaps, so a consumer can tell a duplicate (a
/// number it has seen) from a loss (a number skipped).
pub const HEADER_SEQ: &str = "rb-seq";
/// Header: present on each copy of a barrier, `<number>/<partitions>`: a
/// record written to every partition `0..partitions` of the topic because
/// its commands name keys of several partitions or no key at all. Barriers
/// are numbered from 1 per proxy run; every copy carries the same payload,
/// and a consumer applies it once, when every partition has reached it.
pub const HEADER_BARRIER: &str = "rb-barrier";
/// Header: when the primary answered, milliseconds since the Unix epoch
/// (`ROW`: when the proxy read the client's bytes).
pub const HEADER_TIME: &str = "rb-time";
/// Header: the client connection the bytes came from (`ROW` only).
pub const HEADER_CONN: &str = "rb-conn";
/// Header: present with value `1` when a `ROW` client connection closed; the
/// payload is then empty.
pub const HEADER_CLOSE: &str = "rb-close";

/// Header: present with value `1` on a heartbeat: a record with an empty
/// payload that a proxy writes to a partition that had no record for a
/// while, so that a consumer's lag stays true when no one writes. Applied
/// by nothing; it has an `rb-time` but no `rb-seq` (a lost or repeated
/// heartbeat is neither a gap nor a duplicate).
pub const HEADER_HEARTBEAT: &str = "rb-heartbeat";
/// Header: on the records a full `remoteback sync` writes to every
/// partition when it starts and when it ended with every key copied,
/// `start:<id>` and `end:<id>`; the id (the sync's start time in
/// milliseconds) pairs them, with `rb-source`. The records hold no
/// commands. A restore may begin at a sync's start on every partition
/// once its end is in the log: from there the records alone rebuild the
/// whole dataset, and what came before is not needed.
pub const HEADER_SYNC: &str = "rb-sync";

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

/// Where a record belongs among a topic's partitions, from the hash slots
/// of the keys its commands name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// No command names a key (`FLUSHALL`, `SWAPDB`, `EVAL` without keys):
    /// with several partitions, a barrier.
    Keyless,
    /// Every key is in this slot.
    Slot(u16),
    /// Keys in several slots, the first key's slot first; a barrier unless
    /// they all fall in one partition.
    Slots(Box<[u16]>),
    /// A `ROW` record: the client connection's bytes stay in one partition.
    Connection(u64),
}

impl Placement {
    /// The slot of the first key, the record's Kafka key.
    pub fn first_slot(&self) -> Option<u16> {
        match self {
            Placement::Keyless | Placement::Connection(_) => None,
            Placement::Slot(s) => Some(*s),
            Placement::Slots(s) => s.first().copied(),
        }
    }

    /// The one partition of `partitions` every key maps to (slot modulo the
    /// partition count; a `ROW` connection's number modulo it), or `None`
    /// when the record needs a barrier.
    pub fn partition(&self, partitions: u32) -> Option<u32> {
        let partitions = partitions.max(1);
        match self {
            Placement::Keyless if partitions == 1 => Some(0),
            Placement::Keyless => None,
            Placement::Slot(s) => Some(u32::from(*s) % partitions),
            Placement::Connection(c) => Some((*c % u64::from(partitions)) as u32),
            Placement::Slots(slots) => {
                let first = u32::from(*slots.first()?) % partitions;
                slots
                    .iter()
                    .all(|s| u32::from(*s) % partitions == first)
                    .then_some(first)
            }
        }
    }
}

/// A barrier copy's identity (`rb-barrier`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Barrier {
    /// From 1 per proxy run.
    pub number: u64,
    /// The copies written: one to each partition `0..partitions`.
    pub partitions: u32,
}

impl std::fmt::Display for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.number, self.partitions)
    }
}

impl std::str::FromStr for Barrier {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (number, partitions) = s
            .split_once('/')
            .ok_or_else(|| format!("not NUMBER/PARTITIONS: {s:?}"))?;
        let number = number
            .parse()
            .map_err(|_| format!("not NUMBER/PARTITIONS: {s:?}"))?;
        let partitions: u32 = partitions
            .parse()
            .map_err(|_| format!("not NUMBER/PARTITIONS: {s:?}"))?;
        if partitions == 0 {
            return Err(format!("a barrier over no partitions: {s:?}"));
        }
        Ok(Barrier { number, partitions })
    }
}

/// A sync's mark in the log (`rb-sync`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncMark {
    pub phase: SyncPhase,
    /// The sync's start time, milliseconds since the Unix epoch.
    pub id: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPhase {
    /// Before the sync's first copy, on every partition.
    Start,
    /// After its last copy, every key of every database copied.
    End,
}

impl std::fmt::Display for SyncMark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let phase = match self.phase {
            SyncPhase::Start => "start",
            SyncPhase::End => "end",
        };
        write!(f, "{phase}:{}", self.id)
    }
}

impl std::str::FromStr for SyncMark {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("not start:ID or end:ID: {s:?}");
        let (phase, id) = s.split_once(':').ok_or_else(bad)?;
        let phase = match phase {
            "start" => SyncPhase::Start,
            "end" => SyncPhase::End,
            _ => return Err(bad()),
        };
        Ok(SyncMark {
            phase,
            id: id.parse().map_err(|_| bad())?,
        })
    }
}

/// One unit of replication: what the replay applies, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub format: Format,
    /// Database index, for `STRING` and `PROTOCOL`.
    pub db: Option<u32>,
    /// The database selected after its commands: `db`, unless a
    /// transaction's `SELECT` changed it. A sender packing records after
    /// this one selects theirs again when it differs.
    pub db_after: Option<u32>,
    pub payload: Bytes,
    /// The Kafka key: the hash slot of the first key (`STRING`/`PROTOCOL`)
    /// or the connection id (`ROW`), as decimal text; none for keyless
    /// commands.
    pub key: Option<String>,
    /// Where the record belongs among the partitions (`STRING`/`PROTOCOL`).
    pub placement: Placement,
    /// This proxy (`rb-source`): one string shared by all its records.
    pub source: Arc<str>,
    /// The proxy run (`rb-run`).
    pub run: u64,
    /// Set by the sender, per partition.
    pub seq: u64,
    /// Set by the sender on each copy of a barrier.
    pub barrier: Option<Barrier>,
    pub time_ms: u64,
    /// The client connection (`ROW`).
    pub conn: Option<u64>,
    /// Whether this `ROW` record marks the end of its connection.
    pub close: bool,
    /// Whether this is a heartbeat (no commands).
    pub heartbeat: bool,
    /// A sync's mark (no commands).
    pub sync: Option<SyncMark>,
}

impl Record {
    /// The Kafka headers of this record, in a stable order.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![
            (HEADER_FORMAT, self.format.name().to_string()),
            (HEADER_SOURCE, self.source.to_string()),
            (HEADER_RUN, self.run.to_string()),
        ];
        // A heartbeat has no number: it changes nothing, so a lost or
        // repeated one is no gap and no duplicate.
        if !self.heartbeat {
            h.push((HEADER_SEQ, self.seq.to_string()));
        }
        h.push((HEADER_TIME, self.time_ms.to_string()));
        if let Some(barrier) = self.barrier {
            h.push((HEADER_BARRIER, barrier.to_string()));
        }
        if let Some(db) = self.db {
            h.push((HEADER_DB, db.to_string()));
        }
        if let Some(conn) = self.conn {
            h.push((HEADER_CONN, conn.to_string()));
        }
        if self.close {
            h.push((HEADER_CLOSE, "1".to_string()));
        }
        if self.heartbeat {
            h.push((HEADER_HEARTBEAT, "1".to_string()));
        }
        if let Some(mark) = self.sync {
            h.push((HEADER_SYNC, mark.to_string()));
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
    pub run: Option<u64>,
    pub seq: Option<u64>,
    pub barrier: Option<Barrier>,
    pub time_ms: Option<u64>,
    pub conn: Option<u64>,
    pub close: bool,
    pub heartbeat: bool,
    pub sync: Option<SyncMark>,
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
            run: None,
            seq: None,
            barrier: None,
            time_ms: None,
            conn: None,
            close: false,
            heartbeat: false,
            sync: None,
        };
        for (name, value) in headers {
            match name {
                HEADER_FORMAT => format = Some(parsed(HEADER_FORMAT, value)?),
                HEADER_DB => meta.db = Some(number(HEADER_DB, value)?),
                HEADER_SOURCE => meta.source = Some(text(HEADER_SOURCE, value)?.to_string()),
                HEADER_RUN => meta.run = Some(number(HEADER_RUN, value)?),
                HEADER_SEQ => meta.seq = Some(number(HEADER_SEQ, value)?),
                HEADER_BARRIER => meta.barrier = Some(parsed(HEADER_BARRIER, value)?),
                HEADER_TIME => meta.time_ms = Some(number(HEADER_TIME, value)?),
                HEADER_CONN => meta.conn = Some(number(HEADER_CONN, value)?),
                HEADER_CLOSE => meta.close = value == b"1",
                HEADER_HEARTBEAT => meta.heartbeat = value == b"1",
                HEADER_SYNC => meta.sync = Some(parsed(HEADER_SYNC, value)?),
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

/// A header whose text parses into `T`, its parser's reason kept.
fn parsed<T: std::str::FromStr<Err = String>>(
    header: &'static str,
    value: &[u8],
) -> Result<T, RecordError> {
    text(header, value)?
        .parse()
        .map_err(|reason| RecordError { header, reason })
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
            db_after: None,
            payload: Bytes::new(),
            key: Some("7".into()),
            placement: Placement::Keyless,
            source: "host:6666".into(),
            run: 1700000000000,
            seq: 9,
            barrier: Some(Barrier {
                number: 3,
                partitions: 4,
            }),
            time_ms: 1700000000000,
            conn: Some(7),
            close: true,
            heartbeat: false,
            sync: Some(SyncMark {
                phase: SyncPhase::End,
                id: 1700000000000,
            }),
        };
        let h = r.headers();
        let meta = Meta::from_headers(h.iter().map(|(k, v)| (*k, v.as_bytes()))).unwrap();
        assert_eq!(meta.format, Format::Row);
        assert_eq!(meta.conn, Some(7));
        assert_eq!(meta.seq, Some(9));
        assert_eq!(meta.run, Some(1700000000000));
        assert_eq!(
            meta.barrier,
            Some(Barrier {
                number: 3,
                partitions: 4
            })
        );
        assert!(meta.close);
        assert_eq!(meta.db, None);
        assert_eq!(meta.sync, r.sync);
        let bad = Meta::from_headers([(HEADER_FORMAT, &b"PROTOCOL"[..]), (HEADER_SYNC, b"mid:1")]);
        assert_eq!(bad.unwrap_err().header, HEADER_SYNC);
    }

    #[test]
    fn a_record_needs_a_barrier_when_its_keys_span_partitions() {
        assert_eq!(Placement::Keyless.partition(1), Some(0));
        assert_eq!(Placement::Keyless.partition(4), None);
        assert_eq!(Placement::Slot(7).partition(4), Some(3));
        assert_eq!(Placement::Slots(vec![1, 5, 9].into()).partition(4), Some(1));
        assert_eq!(Placement::Slots(vec![1, 2].into()).partition(4), None);
        assert_eq!(Placement::Slots(vec![1, 2].into()).partition(1), Some(0));
        assert_eq!(Placement::Slots(vec![1, 2].into()).first_slot(), Some(1));
    }

    #[test]
    fn barrier_headers_are_checked() {
        let bad = |v: &'static [u8]| {
            Meta::from_headers([(HEADER_FORMAT, &b"PROTOCOL"[..]), (HEADER_BARRIER, v)])
                .unwrap_err()
                .header
        };
        assert_eq!(bad(b"3"), HEADER_BARRIER);
        assert_eq!(bad(b"3/0"), HEADER_BARRIER);
        assert_eq!(bad(b"x/2"), HEADER_BARRIER);
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
