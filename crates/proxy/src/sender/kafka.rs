//! `KafkaSender`: captured writes produced to a Kafka topic with librdkafka.
//!
//! The sender picks each record's partition itself: the slot of its keys
//! modulo the topic's partition count (a `ROW` connection's number modulo
//! it). A record whose keys fall in several partitions, or that names no
//! key, is a barrier: a copy goes to every partition, all copies queued
//! under one lock so that every partition sees barriers in the same order.
//! `rb-seq` counts each partition's records from 1, so the replay can tell
//! a duplicate from a loss.
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
use remoteback_protocol::record::{Barrier, HEADER_BARRIER, HEADER_SEQ};
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
/// applies; and no local timeout, so that a record waiting in that backlog
/// for a slow broker is delivered late rather than given up on (with
/// librdkafka's 300 s, a full 256 MiB backlog draining at a few hundred
/// records a second lost records that were never refused).
const DEFAULTS: &[(&str, &str)] = &[
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("message.timeout.ms", "0"),
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
    /// Barriers written (each a copy to every partition).
    pub barriers: AtomicU64,
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
    /// Who waits for it (`ack = "kafka"`, the sync).
    report: Option<Report>,
}

/// Where a delivery outcome goes.
enum Report {
    /// A record's own.
    One(DeliveryReport),
    /// One copy of a barrier: the outcome is known when every copy was
    /// delivered, or one was not.
    Copy(Arc<Copies>),
}

/// The copies of one barrier still awaited.
struct Copies {
    remaining: AtomicU64,
    report: Mutex<Option<DeliveryReport>>,
}

impl Copies {
    fn settle(&self, outcome: Result<(), Lost>) {
        let last = self.remaining.fetch_sub(1, Ordering::AcqRel) == 1;
        if outcome.is_err() || last {
            let report = self.report.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(report) = report {
                // The session may be gone; its client no longer waits.
                let _ = report.send(outcome);
            }
        }
    }
}

impl Report {
    fn settle(self, outcome: Result<(), Lost>) {
        match self {
            // The session may be gone; its client no longer waits.
            Report::One(report) => drop(report.send(outcome)),
            Report::Copy(copies) => copies.settle(outcome),
        }
    }
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
            report.settle(outcome);
        }
    }
}

/// The numbering of what this sender queued, held while producing.
struct Numbering {
    /// The last `rb-seq` of each partition: one entry per partition of the
    /// topic, as read when the proxy started.
    seq: Vec<u64>,
    /// The last barrier number.
    barrier: u64,
}

/// Produces records to one topic.
pub struct KafkaSender {
    topic: String,
    producer: ThreadedProducer<DeliveryContext>,
    counters: Arc<Counters>,
    backlog: Arc<Backlog>,
    /// Whether each record comes with a [`Delivery`] (`ack = "kafka"`).
    acks: bool,
    /// Held while producing, so that `rb-seq` follows the order records
    /// enter each partition's queue and barriers enter every partition in
    /// the same order.
    numbering: Mutex<Numbering>,
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
    /// bad property. The topic has one partition until
    /// [`set_partitions`](Sender::set_partitions) says otherwise.
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
            numbering: Mutex::new(Numbering {
                seq: vec![0],
                barrier: 0,
            }),
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

/// What the proxy holds per queued record besides its bytes: librdkafka's
/// message and header structures, the delivery report's state, allocator
/// rounding. Measured: 300,000 small records waiting for a slow broker
/// took about 700 bytes of the proxy's memory each, of which about 140 were
/// payload, key and headers. Counting it makes `backlog_bytes` a bound on
/// memory, not only on payload.
const RECORD_OVERHEAD: usize = 512;

/// What a record weighs in the backlog: what librdkafka keeps of it.
fn size_of(record: &Record, headers: &[(&str, String)]) -> u64 {
    let headers: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    (record.payload.len() + record.key.as_ref().map_or(0, |k| k.len()) + headers + RECORD_OVERHEAD)
        as u64
}

impl KafkaSender {
    /// Queues one copy of `record` to `partition` with `rb-seq` `seq` (and
    /// `rb-barrier` for a barrier's copy).
    #[allow(clippy::too_many_arguments)]
    fn produce(
        &self,
        record: &Record,
        headers: &[(&str, String)],
        partition: u32,
        seq: u64,
        barrier: Option<Barrier>,
        size: u64,
        report: Option<Report>,
    ) -> Result<(), KafkaError> {
        let mut kafka_headers = OwnedHeaders::new_with_capacity(headers.len() + 1);
        let seq = seq.to_string();
        for (key, value) in headers {
            let value = if *key == HEADER_SEQ { &seq } else { value };
            kafka_headers = kafka_headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let barrier = barrier.map(|b| b.to_string());
        if let Some(barrier) = &barrier {
            kafka_headers = kafka_headers.insert(Header {
                key: HEADER_BARRIER,
                value: Some(barrier),
            });
        }
        let queued = Box::new(Queued { size, report });
        let mut message = BaseRecord::<str, [u8], Box<Queued>>::with_opaque_to(&self.topic, queued)
            .payload(&record.payload[..])
            .partition(partition as i32)
            .headers(kafka_headers);
        if let Some(key) = record.key.as_deref() {
            message = message.key(key);
        }
        self.producer.send(message).map_err(|(e, _)| e)
    }
}

impl Sender for KafkaSender {
    fn send(&self, record: Record, track: Track) -> Option<Delivery> {
        let headers = record.headers();
        let size = size_of(&record, &headers);
        let mut numbering = self.numbering.lock().unwrap_or_else(|e| e.into_inner());
        let partitions = numbering.seq.len() as u32;
        let partition = record.placement.partition(partitions);
        let copies = match partition {
            Some(_) => 1,
            None => u64::from(partitions),
        };
        if !self.backlog.admit(size * copies) {
            // Numbered all the same: the replay sees the gap too.
            match partition {
                Some(p) => numbering.seq[p as usize] += 1,
                None => numbering.seq.iter_mut().for_each(|s| *s += 1),
            }
            drop(numbering);
            return self.on_dropped(
                Dropped::BacklogFull {
                    bytes: self.backlog.bytes(),
                    limit: self.backlog.limit(),
                },
                track,
            );
        }
        let tracked = self.acks || track == Track::Always;
        if let Some(p) = partition {
            let (report, delivery) = match tracked {
                true => {
                    let (report, delivery) = Delivery::pending();
                    (Some(Report::One(report)), Some(delivery))
                }
                false => (None, None),
            };
            let seq = numbering.seq[p as usize] + 1;
            return match self.produce(&record, &headers, p, seq, None, size, report) {
                Ok(()) => {
                    numbering.seq[p as usize] = seq;
                    delivery
                }
                Err(e) => {
                    // Numbered all the same: the replay sees the gap too.
                    numbering.seq[p as usize] = seq;
                    drop(numbering);
                    self.backlog.settle(size);
                    self.on_dropped(Dropped::NotQueued(e), track)
                }
            };
        }
        // A barrier: a copy to every partition, numbered in each.
        let barrier = Barrier {
            number: numbering.barrier + 1,
            partitions,
        };
        numbering.barrier = barrier.number;
        self.counters.barriers.fetch_add(1, Ordering::Relaxed);
        let (copies, delivery) = match tracked {
            true => {
                let (report, delivery) = Delivery::pending();
                let copies = Arc::new(Copies {
                    remaining: AtomicU64::new(copies),
                    report: Mutex::new(Some(report)),
                });
                (Some(copies), Some(delivery))
            }
            false => (None, None),
        };
        let mut outcome = delivery;
        for p in 0..partitions {
            let seq = numbering.seq[p as usize] + 1;
            let report = copies.clone().map(Report::Copy);
            match self.produce(&record, &headers, p, seq, Some(barrier), size, report) {
                Ok(()) => numbering.seq[p as usize] = seq,
                Err(e) => {
                    // The copies not queued are lost, numbered all the same:
                    // the replay reports the partitions that miss one as a
                    // gap in their rb-seq (and no longer waits for them once
                    // they are past the barrier).
                    for q in p..partitions {
                        numbering.seq[q as usize] += 1;
                    }
                    self.backlog.settle(size * u64::from(partitions - p));
                    if let Some(copies) = &copies {
                        copies.settle(Err(Lost::Dropped(Dropped::NotQueued(e.clone()))));
                    }
                    let lost = self.on_dropped(Dropped::NotQueued(e), track);
                    outcome = outcome.and(lost);
                    break;
                }
            }
        }
        outcome
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

    fn set_partitions(&self, partitions: u32) {
        let mut numbering = self.numbering.lock().unwrap_or_else(|e| e.into_inner());
        numbering.seq.resize(partitions.max(1) as usize, 0);
    }
}
