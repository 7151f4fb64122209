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

use prometheus_client::metrics::histogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use remoteback_protocol::record::Barrier;
use remoteback_protocol::Record;

use super::ack::{Delivery, DeliveryReport, Dropped, Lost, Track};
use super::backlog::Backlog;
use super::pack::Pack;
use super::{FlushError, Heartbeat, Sender};
use crate::settings::KafkaSenderSettings;

/// Producer properties remoteback sets unless the configuration overrides them:
/// idempotence against duplicates and reordering; records up to 64 MiB, as a
/// Redis value may be far larger than Kafka's usual 1 MB (the broker's
/// `message.max.bytes` must allow what the proxy sends); librdkafka's own
/// queue as large as it goes, so that the proxy's backlog is the bound that
/// applies; and no local timeout, so that a record waiting in that backlog
/// for a slow broker is delivered late rather than given up on (with
/// librdkafka's 300 s, a full 256 MiB backlog draining at a few hundred
/// records a second lost records that were never refused). No linger:
/// the sender packs records itself while a partition's message is on its
/// way, so librdkafka's wait (5 ms by default) would only add latency.
const DEFAULTS: &[(&str, &str)] = &[
    ("linger.ms", "0"),
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("message.timeout.ms", "0"),
    ("message.max.bytes", "67108864"),
    ("queue.buffering.max.messages", "2147483647"),
    ("queue.buffering.max.kbytes", "2147483647"),
];

/// Delivery counters, shared with librdkafka's delivery callback.
pub struct Counters {
    /// Records the broker acknowledged (a message of several packed
    /// records counts each).
    pub delivered: AtomicU64,
    /// Records the producer gave up on after its retries.
    pub failed: AtomicU64,
    /// Records never queued because the backlog or the queue was full.
    pub dropped: AtomicU64,
    /// Barriers written (each a copy to every partition).
    pub barriers: AtomicU64,
    /// Kafka messages queued: records packed together are one.
    pub messages: AtomicU64,
    /// Heartbeats queued (counted in no other counter).
    pub heartbeats: AtomicU64,
    /// From handing a message with records to librdkafka to its
    /// acknowledgement, in seconds.
    pub delivery_seconds: Histogram,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            barriers: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            heartbeats: AtomicU64::new(0),
            delivery_seconds: Histogram::new(crate::status::latency_buckets()),
        }
    }
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

/// What travels with a message through librdkafka to its delivery report.
struct Queued {
    /// Its share of the backlog.
    size: u64,
    /// Its partition, whose lane has one message less on its way after the
    /// report.
    partition: u32,
    /// The records packed in it.
    records: u64,
    /// Whether it is a heartbeat.
    heartbeat: bool,
    /// When it was handed to librdkafka.
    queued_at: Instant,
    /// Who waits for them (`ack = "kafka"`, the sync).
    reports: Vec<Report>,
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
/// backlog the message is settled in, the lanes whose packing thread may
/// send the next message, and the loss log.
struct DeliveryContext {
    topic: String,
    counters: Arc<Counters>,
    backlog: Arc<Backlog>,
    packing: Arc<Packing>,
    failures: LossLog,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Queued>;

    fn delivery(&self, result: &DeliveryResult<'_>, queued: Box<Queued>) {
        self.backlog.settle(queued.size);
        let outcome = match result {
            Ok(_) => {
                self.counters
                    .delivered
                    .fetch_add(queued.records, Ordering::Relaxed);
                if queued.records > 0 {
                    self.counters
                        .delivery_seconds
                        .observe(queued.queued_at.elapsed().as_secs_f64());
                }
                Ok(())
            }
            Err((e, _)) => {
                let n = self
                    .counters
                    .failed
                    .fetch_add(queued.records, Ordering::Relaxed)
                    + queued.records;
                // A heartbeat holds no record: nothing is lost with it.
                if queued.records > 0 && self.failures.due() {
                    log::error!(
                        "KafkaSender(topic={}): a message of {} records was not delivered: {e} ({n} \
                         records lost so far); the backup needs a resync",
                        self.topic,
                        queued.records
                    );
                }
                Err(Lost::NotAcknowledged(e.clone()))
            }
        };
        {
            let mut lanes = self.packing.lock();
            if let Some(lane) = lanes.lanes.get_mut(queued.partition as usize) {
                match queued.heartbeat {
                    true => lane.heartbeat_in_flight = false,
                    false => lane.in_flight = lane.in_flight.saturating_sub(1),
                }
                if lane.pack.is_some() && lane.in_flight < IN_FLIGHT {
                    self.packing.wake.notify_one();
                }
            }
        }
        for report in queued.reports {
            report.settle(outcome.clone());
        }
    }
}

/// How many messages of a partition may be on their way to the broker at
/// once. The records that follow gather in the partition's [`Pack`] and
/// leave together when one was acknowledged, so the broker gets fewer,
/// larger messages as the load grows (see `sender/pack.rs`).
const IN_FLIGHT: u32 = 1;

/// One partition of the topic, as this sender writes it.
struct Lane {
    /// The last `rb-seq` given to a message of this partition.
    seq: u64,
    /// The records gathered for its next message.
    pack: Option<Pack<Report>>,
    /// Its messages not yet settled by a delivery report.
    in_flight: u32,
    /// Whether a heartbeat of it is on its way (apart from `in_flight`: a
    /// heartbeat holds no pack back).
    heartbeat_in_flight: bool,
    /// When its last message (or heartbeat) was queued.
    last_sent: Instant,
    /// When its last message with records was queued: the next waits for
    /// the gap after it (`pack_gap_ms`).
    last_records: Option<Instant>,
}

/// When a partition's waiting pack leaves.
enum Leave {
    Now,
    /// Once the gap after its last message has passed.
    After(Duration),
    /// When the message on its way was acknowledged (`IN_FLIGHT`).
    OnDelivery,
}

impl Lane {
    /// When its pack leaves: once nothing of it is on its way, and `gap`
    /// after its last message with records (`pack_gap_ms`).
    fn leave(&self, gap: Duration) -> Leave {
        if self.in_flight >= IN_FLIGHT {
            return Leave::OnDelivery;
        }
        let Some(last) = self.last_records.filter(|_| !gap.is_zero()) else {
            return Leave::Now;
        };
        match gap.checked_sub(last.elapsed()) {
            Some(left) if !left.is_zero() => Leave::After(left),
            _ => Leave::Now,
        }
    }
}

impl Default for Lane {
    fn default() -> Self {
        Lane {
            seq: 0,
            pack: None,
            in_flight: 0,
            heartbeat_in_flight: false,
            last_sent: Instant::now(),
            last_records: None,
        }
    }
}

/// What this sender queued, held while producing so that `rb-seq` follows
/// the order messages enter each partition's queue and barriers enter every
/// partition in the same order.
struct Lanes {
    /// One per partition of the topic, as read when the proxy started.
    lanes: Vec<Lane>,
    /// The last barrier number.
    barrier: u64,
    /// What the packing thread writes to an idle partition, once it was
    /// told ([`Sender::start_heartbeats`]).
    heartbeat: Option<Heartbeat>,
    /// The sender is gone: the packing thread ends.
    stop: bool,
}

/// The lanes and what wakes the packing thread: a delivery that leaves a
/// partition with a pack waiting and room to send it.
struct Packing {
    lanes: Mutex<Lanes>,
    wake: Condvar,
}

impl Packing {
    fn lock(&self) -> MutexGuard<'_, Lanes> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The producer and what its messages are counted in: shared by the sender
/// and its packing thread.
struct Outbox {
    topic: String,
    producer: ThreadedProducer<DeliveryContext>,
    counters: Arc<Counters>,
    backlog: Arc<Backlog>,
    packing: Arc<Packing>,
    drops: LossLog,
    /// The least time between two messages of a partition while records
    /// follow one another (`pack_gap_ms`).
    gap: Duration,
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

/// Produces records to one topic.
pub struct KafkaSender {
    outbox: Arc<Outbox>,
    /// Whether each record comes with a [`Delivery`] (`ack = "kafka"`).
    acks: bool,
    /// The most payload bytes a pack takes (`pack_bytes`); 0 sends every
    /// record as its own message.
    pack_bytes: usize,
    /// Sends the packs that waited for a delivery.
    packer: Option<std::thread::JoinHandle<()>>,
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
        let packing = Arc::new(Packing {
            lanes: Mutex::new(Lanes {
                lanes: vec![Lane::default()],
                barrier: 0,
                heartbeat: None,
                stop: false,
            }),
            wake: Condvar::new(),
        });
        let context = DeliveryContext {
            topic: settings.topic.clone(),
            counters: counters.clone(),
            backlog: backlog.clone(),
            packing: packing.clone(),
            failures: LossLog::default(),
        };
        let producer = client_config(settings).create_with_context(context)?;
        let outbox = Arc::new(Outbox {
            topic: settings.topic.clone(),
            producer,
            counters,
            backlog,
            packing,
            drops: LossLog::default(),
            gap: settings.pack_gap,
        });
        let packer = std::thread::Builder::new()
            .name("kafka-packer".into())
            .spawn({
                let outbox = outbox.clone();
                move || outbox.send_waiting_packs()
            })
            .map_err(|e| {
                KafkaError::ClientCreation(format!("cannot start the packing thread: {e}"))
            })?;
        Ok(KafkaSender {
            outbox,
            acks,
            pack_bytes: pack_limit(settings),
            packer: Some(packer),
        })
    }

    pub fn counters(&self) -> Arc<Counters> {
        self.outbox.counters.clone()
    }

    fn tracked(&self, track: Track) -> bool {
        self.acks || track == Track::Always
    }

    /// A report for a tracked record, and the delivery its client or the
    /// sync waits on.
    fn report(&self, track: Track) -> (Option<Report>, Option<Delivery>) {
        match self.tracked(track) {
            true => {
                let (report, delivery) = Delivery::pending();
                (Some(Report::One(report)), Some(delivery))
            }
            false => (None, None),
        }
    }
}

/// `pack_bytes`, within the producer's `message.max.bytes` where the
/// configuration lowered it: a pack librdkafka refuses for its size would
/// lose every record in it. Half of it leaves room for the headers and a
/// first record's own size.
fn pack_limit(settings: &KafkaSenderSettings) -> usize {
    let max = settings
        .kafka
        .iter()
        .rev()
        .find(|(k, _)| k == "message.max.bytes")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    match max {
        Some(max) => settings.pack_bytes.min(max / 2),
        None => settings.pack_bytes,
    }
}

impl Drop for KafkaSender {
    fn drop(&mut self) {
        // What still waits in a pack goes to librdkafka, whose own drop
        // delivers or reports it: no record leaves uncounted.
        let mut lanes = self.outbox.packing.lock();
        self.outbox.send_all_packs(&mut lanes);
        lanes.stop = true;
        drop(lanes);
        self.outbox.packing.wake.notify_all();
        if let Some(packer) = self.packer.take() {
            let _ = packer.join();
        }
    }
}

/// What the proxy holds per queued message besides its bytes: librdkafka's
/// message and header structures, the delivery report's state, allocator
/// rounding. Measured: 300,000 small records waiting for a slow broker, one
/// a message, took about 700 bytes of the proxy's memory each, of which
/// about 140 were payload, key and headers. Counting it makes
/// `backlog_bytes` a bound on memory, not only on payload.
const RECORD_OVERHEAD: usize = 512;

/// The headers' bytes besides `rb-source`: names and numbers.
const HEADERS_SIZE: usize = 96;

/// What a record packed after others holds besides its bytes: a `SELECT`,
/// its delivery report's place, buffer growth.
const PACKED_OVERHEAD: usize = 64;

/// The most a `SELECT` a pack puts before a record takes.
const SELECT_BYTES: usize = 32;

/// What a record weighs in the backlog as the first of its message.
fn message_size(record: &Record) -> u64 {
    let key = record.key.as_ref().map_or(0, |k| k.len());
    (record.payload.len() + key + record.source.len() + HEADERS_SIZE + RECORD_OVERHEAD) as u64
}

/// What a record weighs in the backlog packed after others.
fn packed_size(record: &Record) -> u64 {
    (record.payload.len() + PACKED_OVERHEAD) as u64
}

impl Outbox {
    /// The packing thread: sends each waiting pack once its partition has
    /// room, and a heartbeat to each partition idle for the heartbeat's
    /// interval, until the sender is dropped.
    fn send_waiting_packs(&self) {
        let mut lanes = self.packing.lock();
        loop {
            if lanes.stop {
                return;
            }
            let mut gap_ends = None;
            for p in 0..lanes.lanes.len() {
                let lane = &lanes.lanes[p];
                if lane.pack.is_none() {
                    continue;
                }
                match lane.leave(self.gap) {
                    Leave::Now => self.send_pack(&mut lanes, p as u32),
                    Leave::After(left) => {
                        gap_ends = Some(gap_ends.map_or(left, |d: Duration| d.min(left)))
                    }
                    Leave::OnDelivery => {}
                }
            }
            let next = [self.send_heartbeats(&mut lanes), gap_ends]
                .into_iter()
                .flatten()
                .min();
            lanes = match next {
                Some(wait) => {
                    self.packing
                        .wake
                        .wait_timeout(lanes, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self
                    .packing
                    .wake
                    .wait(lanes)
                    .unwrap_or_else(|e| e.into_inner()),
            };
        }
    }

    /// Queues a heartbeat to every partition with nothing packed, nothing
    /// on its way and nothing sent for the heartbeat's interval (a partition
    /// whose messages are not acknowledged gets none: its lag grows, as it
    /// should); says how long until the next one is due.
    fn send_heartbeats(&self, lanes: &mut Lanes) -> Option<Duration> {
        let heartbeat = lanes.heartbeat.clone()?;
        let mut next = heartbeat.every;
        let now = Instant::now();
        for p in 0..lanes.lanes.len() {
            let lane = &lanes.lanes[p];
            let idle = now.saturating_duration_since(lane.last_sent);
            if lane.pack.is_some() || lane.in_flight > 0 || lane.heartbeat_in_flight {
                continue;
            }
            if idle < heartbeat.every {
                next = next.min(heartbeat.every - idle);
                continue;
            }
            // Not in the backlog: at most one per partition is on its way
            // (none is sent while anything is), and a full backlog must
            // not hold writes for a heartbeat.
            self.produce(lanes, p as u32, Pack::heartbeat(heartbeat.record()), None);
        }
        Some(next)
    }

    /// Sends partition `p`'s pack, if it has one, whatever is in flight.
    fn send_pack(&self, lanes: &mut Lanes, p: u32) {
        if let Some(pack) = lanes.lanes[p as usize].pack.take() {
            self.produce(lanes, p, pack, None);
        }
    }

    /// Sends every partition's pack: before a barrier, a flush, a gap.
    fn send_all_packs(&self, lanes: &mut Lanes) {
        for p in 0..lanes.lanes.len() {
            self.send_pack(lanes, p as u32);
        }
    }

    /// Numbers `pack` as partition `p`'s next message (a copy of `barrier`)
    /// and queues it. A message librdkafka does not take is lost, numbered
    /// all the same so that the replay sees the gap: its records are
    /// counted, logged and reported lost.
    fn produce(&self, lanes: &mut Lanes, p: u32, pack: Pack<Report>, barrier: Option<Barrier>) {
        let lane = &mut lanes.lanes[p as usize];
        let (size, records) = (pack.size(), pack.records());
        let heartbeat = pack.is_heartbeat();
        lane.last_sent = Instant::now();
        if !heartbeat {
            lane.seq += 1;
            lane.last_records = Some(lane.last_sent);
        }
        let (message, reports) = pack.into_message(lane.seq, barrier);
        let mut headers = OwnedHeaders::new_with_capacity(8);
        for (key, value) in message.headers() {
            headers = headers.insert(Header {
                key,
                value: Some(&value),
            });
        }
        let queued = Box::new(Queued {
            size,
            partition: p,
            records,
            heartbeat,
            queued_at: lane.last_sent,
            reports,
        });
        let mut record = BaseRecord::<str, [u8], Box<Queued>>::with_opaque_to(&self.topic, queued)
            .payload(&message.payload[..])
            .partition(p as i32)
            .headers(headers);
        if let Some(key) = message.key.as_deref() {
            record = record.key(key);
        }
        match self.producer.send(record) {
            Ok(()) if heartbeat => {
                lane.heartbeat_in_flight = true;
                self.counters.heartbeats.fetch_add(1, Ordering::Relaxed);
            }
            Ok(()) => {
                lane.in_flight += 1;
                self.counters.messages.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, record)) => {
                let queued = record.delivery_opaque;
                self.backlog.settle(queued.size);
                if queued.records > 0 {
                    self.count_dropped(queued.records, &Dropped::NotQueued(e.clone()));
                }
                for report in queued.reports {
                    report.settle(Err(Lost::Dropped(Dropped::NotQueued(e.clone()))));
                }
            }
        }
    }

    /// Counts `n` records dropped for `reason`, and logs it (once a second).
    fn count_dropped(&self, n: u64, reason: &Dropped) {
        let total = self.counters.dropped.fetch_add(n, Ordering::Relaxed) + n;
        if self.drops.due() {
            log::error!(
                "KafkaSender(topic={}): record dropped, {reason}: {total} records lost so far; the backup needs a resync",
                self.topic
            );
        }
    }
}

impl Sender for KafkaSender {
    fn send(&self, record: Record, track: Track) -> Option<Delivery> {
        let outbox = &*self.outbox;
        let mut lanes = outbox.packing.lock();
        let partitions = lanes.lanes.len() as u32;
        let Some(p) = record.placement.partition(partitions) else {
            return self.send_barrier(&mut lanes, record, track);
        };
        let packable = self.pack_bytes > 0 && Pack::<Report>::packable(&record);
        let joins = packable
            && lanes.lanes[p as usize].pack.as_ref().is_some_and(|pack| {
                pack.bytes() + record.payload.len() + SELECT_BYTES <= self.pack_bytes
            });
        let size = match joins {
            true => packed_size(&record),
            false => message_size(&record),
        };
        if !outbox.backlog.admit(size) {
            // What was packed goes first; the record is numbered all the
            // same after it: the replay sees the gap too.
            outbox.send_pack(&mut lanes, p);
            lanes.lanes[p as usize].seq += 1;
            drop(lanes);
            return self.dropped_at_full_backlog(track);
        }
        let (report, delivery) = self.report(track);
        match lanes.lanes[p as usize].pack.as_mut() {
            Some(pack) if joins => pack.push(&record, size, report),
            _ => {
                // A full pack, or a record that travels alone, leaves
                // before the record's own.
                outbox.send_pack(&mut lanes, p);
                lanes.lanes[p as usize].pack = Some(Pack::new(record, size, report));
            }
        }
        if !packable {
            outbox.send_pack(&mut lanes, p);
            return delivery;
        }
        match lanes.lanes[p as usize].leave(outbox.gap) {
            Leave::Now => outbox.send_pack(&mut lanes, p),
            // The packing thread sends it once the gap has passed: told of
            // a new pack only, which sets when.
            Leave::After(_) if !joins => outbox.packing.wake.notify_one(),
            Leave::After(_) | Leave::OnDelivery => {}
        }
        delivery
    }

    fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        let outbox = &*self.outbox;
        // The proxy is stopping: no more heartbeats, so that what is left
        // to deliver is only records.
        outbox.packing.lock().heartbeat = None;
        let deadline = Instant::now() + timeout;
        // A record sent meanwhile may wait in a pack for a delivery: send
        // the packs, flush, again until nothing waits or the time is up.
        let result = loop {
            outbox.send_all_packs(&mut outbox.packing.lock());
            let left = deadline.saturating_duration_since(Instant::now());
            let result = outbox.producer.flush(left);
            let packed = outbox.packing.lock().lanes.iter().any(|l| l.pack.is_some());
            if result.is_err() || !packed || Instant::now() >= deadline {
                break result;
            }
        };
        let queued = outbox.producer.in_flight_count();
        let failed = outbox.counters.failed.load(Ordering::Relaxed);
        let dropped = outbox.counters.dropped.load(Ordering::Relaxed);
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
        format!("KafkaSender(topic={})", self.outbox.topic)
    }

    fn set_partitions(&self, partitions: u32) {
        let mut lanes = self.outbox.packing.lock();
        lanes
            .lanes
            .resize_with(partitions.max(1) as usize, Lane::default);
    }

    fn start_heartbeats(&self, heartbeat: Heartbeat) {
        self.outbox.packing.lock().heartbeat = Some(heartbeat);
        self.outbox.packing.wake.notify_all();
    }
}

impl KafkaSender {
    /// A record the full backlog did not take (`drop`), numbered already:
    /// counted, logged, and reported lost to whoever tracks it.
    fn dropped_at_full_backlog(&self, track: Track) -> Option<Delivery> {
        let backlog = &self.outbox.backlog;
        let reason = Dropped::BacklogFull {
            bytes: backlog.bytes(),
            limit: backlog.limit(),
        };
        self.outbox.count_dropped(1, &reason);
        self.tracked(track)
            .then_some(Delivery::Lost(Lost::Dropped(reason)))
    }

    /// A barrier: what each partition packed goes first, then a copy of
    /// the record to every partition, numbered in each.
    fn send_barrier(&self, lanes: &mut Lanes, record: Record, track: Track) -> Option<Delivery> {
        let outbox = &*self.outbox;
        outbox.send_all_packs(lanes);
        let partitions = lanes.lanes.len() as u32;
        let size = message_size(&record);
        if !outbox.backlog.admit(size * u64::from(partitions)) {
            // Numbered all the same: the replay sees the gap too.
            lanes.lanes.iter_mut().for_each(|lane| lane.seq += 1);
            return self.dropped_at_full_backlog(track);
        }
        let barrier = Barrier {
            number: lanes.barrier + 1,
            partitions,
        };
        lanes.barrier = barrier.number;
        outbox.counters.barriers.fetch_add(1, Ordering::Relaxed);
        let (copies, delivery) = match self.tracked(track) {
            true => {
                let (report, delivery) = Delivery::pending();
                let copies = Arc::new(Copies {
                    remaining: AtomicU64::new(u64::from(partitions)),
                    report: Mutex::new(Some(report)),
                });
                (Some(copies), Some(delivery))
            }
            false => (None, None),
        };
        // A copy that is not queued is lost and numbered all the same: the
        // replay reports the partition that misses it as a gap in its
        // rb-seq (and no longer waits for it once it is past the barrier).
        for p in 0..partitions {
            let copy = Pack::new(record.clone(), size, copies.clone().map(Report::Copy));
            outbox.produce(lanes, p, copy, Some(barrier));
        }
        delivery
    }
}
