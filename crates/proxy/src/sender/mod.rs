//! Senders: where captured writes go (`[[sender]]` in the configuration).
//!
//! Each configured sender is one [`Sender`] behind its own [`Filter`]. A send
//! never waits: client traffic must not slow down because a destination is
//! slow, so senders buffer and count what they cannot take.

pub mod kafka;
pub mod log;

use std::time::Duration;

use bytes::Bytes;
use remoteback_protocol::commands::CommandSpec;
use remoteback_protocol::{Command, Format, Record};

use crate::record;
use crate::settings::{Filter, ProxySettings, SenderSettings};

/// A destination for records.
pub trait Sender: Send + Sync {
    /// Takes a record without blocking. The sender numbers it (`seq`).
    fn send(&self, record: Record);
    /// Waits up to `timeout` for buffered records to be delivered; the error
    /// says how many were not.
    fn flush(&self, timeout: Duration) -> Result<(), String>;
    /// A short description for logs (`KafkaSender(topic=...)`).
    fn describe(&self) -> String;
}

/// What a session captured: commands that took effect on the primary.
pub struct Captured<'a> {
    pub db: u32,
    pub commands: &'a [Command],
    /// Whether `commands` ran as one `MULTI`/`EXEC` transaction.
    pub transaction: bool,
    pub time_ms: u64,
}

struct Sink {
    filter: Filter,
    sender: Box<dyn Sender>,
}

/// Every configured sender, shared by all sessions.
pub struct Senders {
    format: Format,
    source: String,
    sinks: Vec<Sink>,
}

/// A sender could not be built from its settings.
#[derive(Debug, thiserror::Error)]
#[error("sender[{index}] ({class}): {reason}")]
pub struct SenderError {
    pub index: usize,
    pub class: &'static str,
    pub reason: String,
}

impl Senders {
    /// Builds every sender of `settings`. `source` identifies this proxy in
    /// record headers.
    pub fn build(settings: &ProxySettings, source: &str) -> Result<Senders, SenderError> {
        let mut sinks = Vec::new();
        for (index, s) in settings.senders.iter().enumerate() {
            let sink = match s {
                SenderSettings::Log(l) => Sink {
                    filter: Filter::Writes,
                    sender: Box::new(log::LogSender::new(l)),
                },
                SenderSettings::Kafka(k) => Sink {
                    filter: k.filter.clone(),
                    sender: Box::new(kafka::KafkaSender::new(k).map_err(|reason| SenderError {
                        index,
                        class: "KafkaSender",
                        reason,
                    })?),
                },
            };
            sinks.push(sink);
        }
        Ok(Senders {
            format: settings.message,
            source: source.to_string(),
            sinks,
        })
    }

    /// Senders built directly, for tests and embedding.
    pub fn from_parts(
        format: Format,
        source: &str,
        sinks: Vec<(Filter, Box<dyn Sender>)>,
    ) -> Senders {
        Senders {
            format,
            source: source.to_string(),
            sinks: sinks
                .into_iter()
                .map(|(filter, sender)| Sink { filter, sender })
                .collect(),
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Whether any sender takes `command` (so capture can skip reads
    /// cheaply). Never in `ROW` format, where the request side sends the
    /// client's raw bytes instead.
    pub fn wants(&self, command: &Command, spec: Option<&CommandSpec>) -> bool {
        self.format != Format::Row && self.sinks.iter().any(|s| s.filter.accepts(command, spec))
    }

    /// Hands a capture to every sender whose filter passes some of it.
    pub fn capture(&self, captured: &Captured<'_>) {
        if self.format == Format::Row {
            return;
        }
        for sink in &self.sinks {
            let kept: Vec<Command>;
            let commands = if captured.transaction {
                kept = captured
                    .commands
                    .iter()
                    .filter(|c| {
                        c.is("SELECT")
                            || sink
                                .filter
                                .accepts(c, remoteback_protocol::commands::lookup(c.args()))
                    })
                    .cloned()
                    .collect();
                if kept.iter().all(|c| c.is("SELECT")) {
                    continue;
                }
                &kept[..]
            } else {
                let c = &captured.commands[0];
                if !sink
                    .filter
                    .accepts(c, remoteback_protocol::commands::lookup(c.args()))
                {
                    continue;
                }
                captured.commands
            };
            sink.sender.send(record::for_commands(
                self.format,
                &self.source,
                captured.db,
                commands,
                captured.transaction,
                captured.time_ms,
            ));
        }
    }

    /// Hands raw client bytes (`ROW`) to every sender, unfiltered.
    pub fn capture_row(&self, conn: u64, bytes: Bytes, close: bool, time_ms: u64) {
        for sink in &self.sinks {
            sink.sender.send(record::for_row(
                &self.source,
                conn,
                bytes.clone(),
                close,
                time_ms,
            ));
        }
    }

    /// Flushes every sender; returns the failures, one line each.
    pub fn flush(&self, timeout: Duration) -> Vec<String> {
        self.sinks
            .iter()
            .filter_map(|s| {
                s.sender
                    .flush(timeout)
                    .err()
                    .map(|e| format!("{}: {e}", s.sender.describe()))
            })
            .collect()
    }

    /// One description per sender, for the start-up log line.
    pub fn describe(&self) -> Vec<String> {
        self.sinks.iter().map(|s| s.sender.describe()).collect()
    }
}
