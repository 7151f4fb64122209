//! Why applying a partition's records stopped, and what makes a record
//! unreadable.

use remoteback_protocol::codec::protocol::ProtocolPayloadError;
use remoteback_protocol::codec::string::StringError;
use remoteback_protocol::record::{RecordError, HEADER_DB};
use remoteback_protocol::Format;

use crate::backup::BackupError;

/// Why applying stopped. Connection problems and an unavailable backup are
/// retried, never returned.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The record cannot be read (undecodable payload, missing header). The
    /// records before it were applied and their offset stored.
    #[error(transparent)]
    BadRecord(#[from] BadRecord),
    /// The backup refused a record and `on_apply_error = "stop"`.
    #[error("backup refused the record at {topic}[{partition}]@{offset}: {reason}; stopping (on_apply_error = \"stop\"); {resume}")]
    Refused {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
        /// Where a restart resumes, in words.
        resume: String,
    },
    /// The backup's stored offset went back (it restarted from an older
    /// snapshot) or vanished (it lost its data): the partition must be read
    /// again from `to` (`None`: from its beginning). Handled by the caller.
    #[error("backup {addr} holds offset {} for {topic}[{partition}], but offset {from} had been stored: it lost writes (restarted from an older snapshot?)", to.map(|o| o.to_string()).unwrap_or_else(|| "none".into()))]
    Rewind {
        addr: String,
        topic: String,
        partition: i32,
        from: i64,
        to: Option<i64>,
    },
    /// A shutdown was requested while waiting for the backup.
    #[error("stopped while waiting for the backup")]
    Stopped,
    /// A bounded replay's partition is at a barrier whose other copies lie
    /// past the bound: it ends there, the copy at `next_offset` not
    /// applied (its arrival is stored, so a later run goes on from it).
    #[error("at a barrier whose other partitions ended before their copies")]
    PastBound { next_offset: i64 },
    #[error(transparent)]
    Backup(#[from] BackupError),
}

/// A record the replay cannot read: it stops there, so that nothing is
/// skipped silently.
#[derive(Debug, thiserror::Error)]
#[error("record at {topic}[{partition}]@{offset}: {reason}; stopping (the records before it were applied, a restart resumes at it)")]
pub struct BadRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    #[source]
    pub reason: Unreadable,
}

/// What is wrong with a record: its headers (seen by the receiver) or its
/// payload (seen by the applier).
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    #[error(transparent)]
    Header(RecordError),
    #[error("payload: {0}")]
    Protocol(#[source] ProtocolPayloadError),
    #[error("payload: {0}")]
    String(#[source] StringError),
    #[error("payload holds no command")]
    Empty,
    #[error("a heartbeat (rb-heartbeat: 1) with a payload of {0} bytes: a heartbeat holds none")]
    Heartbeat(usize),
    #[error("header {HEADER_DB} is missing (every {0} record names its database)")]
    NoDatabase(Format),
    #[error("ROW records are applied per connection, not in transactions")]
    Row,
    #[error("{0}")]
    Barrier(String),
}
