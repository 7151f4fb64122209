//! The replay's effective settings, after the configuration file was read and
//! validated (parsing lives in the binary's `config` module).

use std::time::Duration;

use remoteback_protocol::{Format, Worker};

/// Everything the replay needs to run.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplaySettings {
    /// The payload format it expects; a record in another format stops it.
    pub message: Format,
    /// How partitions are scheduled (`worker`).
    pub worker: Worker,
    pub receiver: ReceiverSettings,
    pub backup: BackupSettings,
}

/// The `[receiver]` table (`class = "KafkaReceiver"`).
#[derive(Clone, Debug, PartialEq)]
pub struct ReceiverSettings {
    /// Topics to consume, every partition of each.
    pub topics: Vec<String>,
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
    pub username: Option<String>,
    pub password: Option<String>,
}
