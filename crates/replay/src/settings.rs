//! The replay's effective settings, after the configuration file was read and
//! validated (parsing lives in the binary's `config` module).

use std::fmt;
use std::time::Duration;

use remoteback_protocol::{Format, Worker};
pub use remoteback_transport::TlsSettings;

/// Everything the replay needs to run.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplaySettings {
    /// The payload format it expects; a record in another format stops it.
    pub message: Format,
    /// How partitions are scheduled (`worker`).
    pub worker: Worker,
    /// What a command the backup refuses does (`on_apply_error`).
    pub on_apply_error: OnApplyError,
    /// What a record that cannot be read does (`on_bad_record`).
    pub on_bad_record: OnBadRecord,
    /// Where `/metrics` and `/health` are served (`metrics`), if anywhere.
    pub metrics: Option<String>,
    pub receiver: ReceiverSettings,
    pub backup: BackupSettings,
}

/// What happens when the backup refuses a command of a record (an error
/// inside `EXEC`, or the record's transaction aborted with `EXECABORT`).
///
/// The proxy captures only commands the primary accepted, so a refusal means
/// the backup differs from the primary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnApplyError {
    /// Log the refusal (topic, partition, offset, reason), count it and go
    /// on with the next record.
    #[default]
    Continue,
    /// Stop the replay with an error; the stored offset is the refused
    /// record's, so a restart after fixing the backup applies it again.
    Stop,
}

impl OnApplyError {
    /// The name used in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            OnApplyError::Continue => "continue",
            OnApplyError::Stop => "stop",
        }
    }
}

impl fmt::Display for OnApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What happens to a record the replay cannot read: headers that are not
/// remoteback's (a malformed `rb-db`, `rb-seq`, `rb-barrier`, no
/// `rb-format`) or a payload that is not valid in its format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnBadRecord {
    /// Apply the records before it, store its offset and stop with topic,
    /// partition, offset and reason: nothing is skipped unseen.
    #[default]
    Stop,
    /// Log it at error level with topic, partition, offset and reason,
    /// count it (`remoteback_replay_bad_records_skipped_total`), store the
    /// offset after it and go on. The backup misses what it held.
    Skip,
}

impl OnBadRecord {
    /// The name used in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            OnBadRecord::Stop => "stop",
            OnBadRecord::Skip => "skip",
        }
    }
}

impl fmt::Display for OnBadRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a partition with no offset stored in the backup starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Start {
    /// At the first record the partition still holds.
    #[default]
    Earliest,
    /// At the partition's end (its high watermark) when the replay starts;
    /// that offset is stored in the backup at once, so a restart continues
    /// from there rather than from the end of that later moment.
    Latest,
}

impl Start {
    /// The name used in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            Start::Earliest => "earliest",
            Start::Latest => "latest",
        }
    }
}

impl fmt::Display for Start {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The `[receiver]` table (`class = "KafkaReceiver"`).
#[derive(Clone, Debug, PartialEq)]
pub struct ReceiverSettings {
    /// Topics to consume.
    pub topics: Vec<String>,
    /// The partitions of each topic this replay applies (`partitions`);
    /// `None` for all of them. Several replay processes can share a topic
    /// by listing disjoint partitions.
    pub partitions: Option<Vec<i32>>,
    /// Where a partition without a stored offset starts (`start`).
    pub start: Start,
    /// How long one poll waits for a record (`polltimeout`).
    pub poll_timeout: Duration,
    /// librdkafka properties, renamed (`group-id` → `group.id`) and rendered
    /// as strings, in file order.
    pub kafka: Vec<(String, String)>,
}

/// The `[redis]` table: the backup Redis.
#[derive(Clone, Debug, PartialEq)]
pub struct BackupSettings {
    pub host: String,
    pub port: u16,
    /// TLS to the backup (`[redis] tls` and its files); `None` for plain
    /// TCP.
    pub tls: Option<TlsSettings>,
    pub username: Option<String>,
    pub password: Option<String>,
}
