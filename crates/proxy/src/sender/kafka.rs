//! `KafkaSender`: captured writes produced to a Kafka topic with librdkafka.
//!
//! The producer is idempotent with `acks=all` unless the configuration says
//! otherwise, so broker reconnects and retries neither duplicate nor reorder
//! records. Every record counts in the proxy's [`Backlog`] until its delivery
//! report; `send` itself never waits (a full backlog holds writes before they
//! reach the primary, in the session). A record the backlog or librdkafka's
//! queue does not take, or that the producer gives up on, is lost: counted,
//! logged at error level, and the backup is reported as needing a resync.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use remoteback_protocol::record::HEADER_SEQ;
use remoteback_protocol::Record;

use super::ack::{Delivery, DeliveryReport, Dropped, Lost, Track};
use super::backlog::Backlog;
use super::{FlushError, Sender};
use crate::settings::KafkaSenderSettings;

/// Producer properties remoteback sets unless the configuration overrides them:
/// idempotence against duplicates and reordering; records up to 64 MiB, as a
/// Redis value may be far larger than Kafka's usual 1 MB (the broker's
/// `message.max.bytes` must allow what the proxy sends); librdkafka's own
/// queue as large as it goes, so that the proxy's backlog is the bound that
/// applies.
const DEFAULTS: &[(&str, &str)] = &[
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("message.max.bytes", "67108864"),
    ("queue.buffering.max.messages", "2147483647"),
    ("queue.buffering.max.kbytes", "2147483647"),
];

/// Delivery counters, shared with librdkafka's delivery callback.
#[derive(Default)]
pub struct Counters {
    /// Records the broker acknowledged.
    pub delivered: AtomicU64,
    /// Records the producer gave up on after its retries.
    pub failed: AtomicU64,
    /// Records never queued because the backlog or the queue was full.
    pub dropped: AtomicU64,
}

impl Counters {
    /// Records lost since start: the backup misses them.
    pub fn lost(&self) -> u64 {
        self.failed.load(Ordering::Relaxed) + self.dropped.load(Ordering::Relaxed)
    }
}

/// Says whether a loss should be logged now: at most once a second, so a
/// broker outage gives a line a second with the running total, not a line a
/// record.
#[derive(Default)]
struct LossLog(Mutex<Option<Instant>>);

impl LossLog {
    fn due(&self) -> bool {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if due {
            *last = Some(Instant::now());
        }
        due
    }
}

/// What travels with a record through librdkafka to its delivery report.
struct Queued {
    /// Its share of the backlog.
    size: u64,
    /// The held reply waiting for it (`ack = "kafka"`).
    report: Option<DeliveryReport>,
}

/// What librdkafka hands each delivery report to: the counters, the
/// backlog the record is settled in, and the loss log.
struct DeliveryContext {
    topic: String,
    counters: Arc<Counters>,
    backlog: Arc<Backlog>,
    failures: LossLog,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Queued>;

    fn delivery(&self, result: &DeliveryResult<'_>, queued: Box<Queued>) {
        self.backlog.settle(queued.size);
        let outcome = match result {
            Ok(_) => {
                self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err((e, _)) => {
                let n = self.counters.failed.fetch_add(1, Ordering::Relaxed) + 1;
                if self.failures.due() {
                    log::error!(
                        "KafkaSender(topic={}): a record was not delivered: {e} ({n} lost so far); the backup needs a resync",
                        self.topic
                    );
                }
                Err(Lost::NotAcknowledged(e.clone()))
            }
        };
        if let Some(report) = queued.report {
            // The session may be gone; its client no longer waits.
            let _ = report.send(outcome);
        }
    }
}

/// Produces records to one topic.
pub struct KafkaSender {
    topic: String,
    producer: ThreadedProducer<DeliveryContext>,
    counters: Arc<Counters>,
    backlog: Arc<Backlog>,
    /// Whether each record comes with a [`Delivery`] (`ack = "kafka"`).
    acks: bool,
    /// The sequence number of the last record; held while producing so that
    /// `rb-seq` follows the order records enter the partition queues.
    seq: Mutex<u64>,
    drops: LossLog,
}

/// The client configuration for `settings`: remoteback's defaults, then the
/// passthrough properties in file order.
pub fn client_config(settings: &KafkaSenderSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (k, v) in DEFAULTS {
        config.set(*k, *v);
    }
    for (k, v) in &settings.kafka {
        config.set(k, v);
    }
    config
}

impl KafkaSender {
    /// Creates the producer, counting its records in `backlog`; with `acks`
    /// each send returns a [`Delivery`]. Fails with librdkafka's error for a
    /// bad property.
    pub fn new(
        settings: &KafkaSenderSettings,
        backlog: Arc<Backlog>,
        acks: bool,
    ) -> Result<Self, KafkaError> {
        let counters = Arc::new(Counters::default());
        let context = DeliveryContext {
            topic: settings.topic.clone(),
            counters: counters.clone(),
            backlog: backlog.clone(),
            failures: LossLog::default(),
        };
        let producer = client_config(settings).create_with_context(context)?;
        Ok(KafkaSender {
            topic: settings.topic.clone(),
            producer,
            counters,
            backlog,
            acks,
            seq: Mutex::new(0),
            drops: LossLog::default(),
        })
    }

    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    fn on_dropped(&self, reason: Dropped, track: Track) -> Option<Delivery> {
        let n = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if self.drops.due() {
            log::error!(
                "KafkaSender(topic={}): record dropped, {reason}: {n} records lost so far; the backup needs a resync",
                self.topic
            );
        }
        (self.acks || track == Track::Always).then_some(Delivery::Lost(Lost::Dropped(reason)))
    }
}

/// What a record weighs in the backlog: what librdkafka keeps of it.
fn size_of(record: &Record, headers: &[(&str, String)]) -> u64 {
    let headers: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    (record.payload.len() + record.key.as_ref().map_or(0, |k| k.len()) + headers) as u64
}

impl Sender for KafkaSender {
    fn send(&self, mut record: Record, track: Track) -> Option<Delivery> {
        let headers = record.headers();
        let size = size_of(&record, &headers);
        if !self.backlog.admit(size) {
            return self.on_dropped(
                Dropped::BacklogFull {
                    bytes: self.backlog.bytes(),
                    limit: self.backlog.limit(),
                },
                track,
            );
        }
        let mut kafka_headers = OwnedHeaders::new_with_capacity(headers.len());
        let mut seq = self.seq.lock().unwrap_or_else(|e| e.into_inner());
        record.seq = *seq + 1;
        for (key, value) in &headers {
            let value = if *key == HEADER_SEQ {
                record.seq.to_string()
            } else {
                value.clone()
            };
            kafka_headers = kafka_headers.insert(Header {
                key,
                value: Some(&value),
            });
        }
        let (report, delivery) = match self.acks || track == Track::Always {
            true => {
                let (report, delivery) = Delivery::pending();
                (Some(report), Some(delivery))
            }
            false => (None, None),
        };
        let queued = Box::new(Queued { size, report });
        let mut message = BaseRecord::<str, [u8], Box<Queued>>::with_opaque_to(&self.topic, queued)
            .payload(&record.payload[..])
            .headers(kafka_headers);
        if let Some(key) = record.key.as_deref() {
            message = message.key(key);
        }
        match self.producer.send(message) {
            Ok(()) => {
                *seq += 1;
                delivery
            }
            Err((e, _)) => {
                drop(seq);
                self.backlog.settle(size);
                self.on_dropped(Dropped::NotQueued(e), track)
            }
        }
    }

    fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        let result = self.producer.flush(timeout);
        let queued = self.producer.in_flight_count();
        let failed = self.counters.failed.load(Ordering::Relaxed);
        let dropped = self.counters.dropped.load(Ordering::Relaxed);
        match (result, queued, failed + dropped) {
            (Ok(()), 0, 0) => Ok(()),
            (result, queued, _) => Err(FlushError {
                queued: queued.max(0) as u64,
                dropped,
                failed,
                cause: result.err(),
            }),
        }
    }

    fn describe(&self) -> String {
        format!("KafkaSender(topic={})", self.topic)
    }
}
