//! Senders: where captured writes go (`[[sender]]` in the configuration).
//!
//! Each configured sender is one [`Sender`] behind its own [`Filter`]. A send
//! never waits: client traffic must not slow down because a destination is
//! slow, so senders buffer, within the [`Backlog`], and count what they
//! cannot take. Where waiting is wanted, it happens in the session: before a
//! write is forwarded while the backlog is full (`on_backlog_full =
//! "block"`), and before a reply is released (`ack = "kafka"`).

pub mod ack;
pub mod backlog;
pub mod kafka;
pub mod log;

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use remoteback_protocol::commands::CommandSpec;
use remoteback_protocol::{Command, Format, Record};

use crate::record;
use crate::settings::{Filter, ProxySettings, SenderSettings};
use ack::{AckMode, Delivery};
use backlog::Backlog;
use kafka::Counters;

/// A destination for records.
pub trait Sender: Send + Sync {
    /// Takes a record without blocking. The sender numbers it (`seq`). The
    /// delivery, when the sender reports one (`ack = "kafka"`), is what the
    /// client's reply waits for.
    fn send(&self, record: Record) -> Option<Delivery>;
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
    /// Records not yet acknowledged by Kafka, shared by every Kafka sender.
    backlog: Arc<Backlog>,
    /// The Kafka senders' delivery counters.
    kafka: Vec<KafkaCounters>,
    ack: AckMode,
    /// Writes whose outcome the proxy never saw (see
    /// [`count_uncaptured`](Senders::count_uncaptured)).
    uncaptured: AtomicU64,
    /// Added to connection numbers in `ROW` records (`rb-conn`), so that a
    /// connection id is never reused by a later run of the proxy.
    row_base: u64,
}

/// The `rb-conn` base of a proxy run started at `start_ms`: the start time
/// followed by six digits of connection number (`1795632173803000042` is
/// connection 42 of the run started at 1795632173803 ms).
pub fn row_base(start_ms: u64) -> u64 {
    start_ms.saturating_mul(1_000_000)
}

/// One Kafka sender's counters, and what tells it from the others (two
/// senders may produce to topics of the same name on different clusters).
pub struct KafkaCounters {
    /// Its position among the `[[sender]]` tables.
    pub index: usize,
    pub topic: String,
    pub counters: Arc<Counters>,
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
        let backlog = Arc::new(Backlog::new(
            settings.backlog_bytes,
            settings.on_backlog_full,
        ));
        let acks = settings.ack == AckMode::Kafka;
        let mut sinks = Vec::new();
        let mut kafka = Vec::new();
        for (index, s) in settings.senders.iter().enumerate() {
            let sink = match s {
                SenderSettings::Log(l) => Sink {
                    filter: Filter::Writes,
                    sender: Box::new(log::LogSender::new(l)),
                },
                SenderSettings::Kafka(k) => {
                    let sender =
                        kafka::KafkaSender::new(k, backlog.clone(), acks).map_err(|reason| {
                            SenderError {
                                index,
                                class: "KafkaSender",
                                reason,
                            }
                        })?;
                    kafka.push(KafkaCounters {
                        index,
                        topic: k.topic.clone(),
                        counters: sender.counters(),
                    });
                    Sink {
                        filter: k.filter.clone(),
                        sender: Box::new(sender),
                    }
                }
            };
            sinks.push(sink);
        }
        Ok(Senders {
            format: settings.message,
            source: source.to_string(),
            sinks,
            backlog,
            kafka,
            ack: settings.ack,
            uncaptured: AtomicU64::new(0),
            row_base: row_base(crate::capture::now_ms()),
        })
    }

    /// Senders built directly, for tests and embedding (no Kafka senders:
    /// an unbounded backlog, replies never held).
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
            backlog: Arc::new(Backlog::new(u64::MAX, backlog::OnFull::Drop)),
            kafka: Vec::new(),
            ack: AckMode::Redis,
            uncaptured: AtomicU64::new(0),
            row_base: 0,
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// The backlog every Kafka sender counts its undelivered records in.
    pub fn backlog(&self) -> &Arc<Backlog> {
        &self.backlog
    }

    /// Whether replies to writes wait for Kafka.
    pub fn ack(&self) -> AckMode {
        self.ack
    }

    /// Each Kafka sender's delivery counters.
    pub fn kafka_counters(&self) -> &[KafkaCounters] {
        &self.kafka
    }

    /// Records lost by every Kafka sender since start.
    pub fn lost(&self) -> u64 {
        self.kafka.iter().map(|k| k.counters.lost()).sum()
    }

    /// `n` writes were forwarded but their sessions ended before the primary
    /// answered (reply timeout, primary gone): they may have taken effect
    /// without a record. Counted and logged; the backup needs a resync.
    pub fn count_uncaptured(&self, n: u64) {
        let total = self.uncaptured.fetch_add(n, AtomicOrdering::Relaxed) + n;
        ::log::error!(
            "{n} writes were forwarded to the primary but never answered before their \
             connection ended; they may have taken effect without being captured \
             ({total} so far); the backup needs a resync"
        );
    }

    /// Writes whose outcome the proxy never saw, since start.
    pub fn uncaptured(&self) -> u64 {
        self.uncaptured.load(AtomicOrdering::Relaxed)
    }

    /// Whether the backup misses writes: a record was lost or a write's
    /// outcome is unknown.
    pub fn resync_needed(&self) -> bool {
        self.lost() > 0 || self.uncaptured() > 0
    }

    /// Whether any sender takes `command` (so capture can skip reads
    /// cheaply). Never in `ROW` format, where the request side sends the
    /// client's raw bytes instead.
    pub fn wants(&self, command: &Command, spec: Option<&CommandSpec>) -> bool {
        self.format != Format::Row && self.sinks.iter().any(|s| s.filter.accepts(command, spec))
    }

    /// Hands a capture to every sender whose filter passes some of it; the
    /// deliveries a held reply must wait for go to `deliveries`.
    pub fn capture(&self, captured: &Captured<'_>, deliveries: &mut Vec<Delivery>) {
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
            deliveries.extend(sink.sender.send(record::for_commands(
                self.format,
                &self.source,
                captured.db,
                commands,
                captured.transaction,
                captured.time_ms,
            )));
        }
    }

    /// Hands raw client bytes (`ROW`) to every sender, unfiltered. Replies
    /// are not held in `ROW` format: its records are the requests, not
    /// writes that took effect.
    pub fn capture_row(&self, conn: u64, bytes: Bytes, close: bool, time_ms: u64) {
        for sink in &self.sinks {
            let _ = sink.sender.send(record::for_row(
                &self.source,
                self.row_base + conn,
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
