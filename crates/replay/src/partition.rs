//! One partition's worker: reads the partition from the offset stored in
//! the backup and applies its records, until a shutdown or a failure.

use std::sync::Arc;

use rdkafka::consumer::StreamConsumer;
use remoteback_protocol::{Format, Worker};
use tokio::sync::{mpsc, watch};

use crate::applier::{Applier, Policy};
use crate::barrier::Barriers;
use crate::bound::{Bound, PartitionBound};
use crate::error::{ApplyError, BadRecord};
use crate::link::BackupLink;
use crate::receiver::{self, Batch, ReceiveError, StartAt};
use crate::row::RowApplier;
use crate::settings::{OnBadRecord, ReplaySettings, Start};
use crate::stats::Stats;
use crate::Ends;
use crate::ReplayError;

/// Everything one partition's worker needs.
pub(crate) struct PartitionJob {
    pub settings: Arc<ReplaySettings>,
    pub topic: String,
    pub partition: i32,
    pub stop: watch::Receiver<bool>,
    pub stats: Stats,
    /// The wake-ups shared by this process's partitions at barriers.
    pub barriers: Barriers,
    /// Where the partition ends: at a bound (`restore`), or once promoted.
    pub ends: Ends,
}

/// Where a worker reports how its partition ended.
pub(crate) type Done = mpsc::UnboundedSender<Result<(), ReplayError>>;

/// Runs a partition as a task on the shared pool (`coroutine`) or on an OS
/// thread of its own with a single-threaded runtime (`thread`).
pub(crate) fn spawn(worker: Worker, job: PartitionJob, done: Done) {
    match worker {
        Worker::Coroutine => {
            tokio::spawn(async move {
                let _ = done.send(job.run().await);
            });
        }
        Worker::Thread => {
            let name = format!("partition-{}-{}", job.topic, job.partition);
            let spawned = std::thread::Builder::new().name(name).spawn(move || {
                let result = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(job.run()),
                    Err(e) => Err(ReplayError::Worker(e)),
                };
                let _ = done.send(result);
            });
            if let Err(e) = spawned {
                log::error!("cannot start a partition thread: {e}");
            }
        }
    }
}

/// The applier a partition uses, by record format.
enum PartitionApplier {
    Batched(Applier),
    Row(RowApplier),
}

impl PartitionApplier {
    async fn stored_offset(&mut self) -> Result<Option<i64>, ApplyError> {
        match self {
            PartitionApplier::Batched(a) => a.stored_offset().await,
            PartitionApplier::Row(r) => r.stored_offset().await,
        }
    }

    async fn store_offset(&mut self, next: i64) -> Result<(), ApplyError> {
        match self {
            PartitionApplier::Batched(a) => a.store_offset(next).await,
            PartitionApplier::Row(r) => r.store_offset(next).await,
        }
    }

    async fn apply(&mut self, batch: Vec<receiver::Received>) -> Result<(), ApplyError> {
        match self {
            PartitionApplier::Batched(a) => a.apply(batch).await,
            PartitionApplier::Row(r) => r.apply(batch).await,
        }
    }
}

impl PartitionJob {
    async fn run(mut self) -> Result<(), ReplayError> {
        let backup = self.settings.backup.clone();
        let policy = Policy {
            on_error: self.settings.on_apply_error,
            rewind_when_emptied: self.settings.receiver.start == Start::Earliest,
        };
        let mut sink = match self.settings.message {
            Format::Row => PartitionApplier::Row(RowApplier::new(
                BackupLink::new(
                    backup,
                    &self.topic,
                    self.partition,
                    self.stats.clone(),
                    policy.rewind_when_emptied,
                    self.stop.clone(),
                ),
                self.stats.clone(),
            )),
            _ => PartitionApplier::Batched(
                Applier::new(
                    backup,
                    &self.topic,
                    self.partition,
                    self.stats.clone(),
                    policy,
                    self.stop.clone(),
                    self.barriers.clone(),
                )
                .ending(self.ends.clone()),
            ),
        };
        let start = match self.start(&mut sink).await {
            Ok(start) => start,
            Err(ReplayError::Apply(ApplyError::Stopped)) => return Ok(()),
            Err(e) => return Err(e),
        };
        // Where the next record to apply is: where a promotion's bound
        // starts counting.
        let mut position = start;
        let mut limit: Option<(Arc<Bound>, PartitionBound)> = None;
        if let Ends::Bound(bound) = &self.ends {
            let partition_bound = self.bounded(bound, start).await?;
            // Records deleted since an earlier bounded run stopped: start
            // where the partition begins now (the report warns).
            position = StartAt::Offset(partition_bound.next_offset());
            limit = Some((bound.clone(), partition_bound));
        }
        let mut consumer = receiver::consumer(
            &self.settings.receiver,
            &self.topic,
            self.partition,
            position,
        )?;
        let mut outage = Outage::default();
        loop {
            if limit.is_none() {
                // Only a promotion can bring a bound now (a bounded run has
                // its own from the start).
                if let Some(bound) = self.ends.bound() {
                    match self.bounded(&bound, position).await {
                        Ok(partition_bound) => limit = Some((bound, partition_bound)),
                        // The brokers may well be in trouble on the day of
                        // a promotion: ask again, as a poll would.
                        Err(ReplayError::Receive(e)) if e.is_transient() => {
                            outage.report_receive(&self.topic, self.partition, &e);
                            tokio::select! {
                                _ = self.stop.changed() => return Ok(()),
                                _ = tokio::time::sleep(OUTAGE_PAUSE) => {}
                            }
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            if let Some((bound, done)) = limit.take_if(|(_, l)| l.at_end()) {
                self.note_behind(&consumer, position);
                bound.report(done);
                return Ok(());
            }
            if *self.stop.borrow() {
                return Ok(());
            }
            self.note_behind(&consumer, position);
            // A promotion is seen at the top of the loop: a poll returns
            // within `polltimeout` when idle. Not a branch here, since a
            // batch dropped half-received would lose its records.
            let Batch { mut records, error } = tokio::select! {
                _ = self.stop.changed() => return Ok(()),
                b = receiver::next_batch(&consumer, self.settings.receiver.poll_timeout) => b,
            };
            // Past the bound, the rest of the batch and its error are not
            // this run's: cut first.
            let mut cut = limit.as_mut().is_some_and(|(_, l)| l.cut(&mut records));
            let mut error = match error {
                Some(ReceiveError::BadRecord(bad))
                    if limit.as_ref().is_some_and(|(_, l)| l.is_past(bad.offset)) =>
                {
                    cut = true;
                    None
                }
                _ if cut => None,
                e => e.map(ReplayError::from),
            };
            if let Some(i) = records
                .iter()
                .position(|r| r.meta.format != self.settings.message)
            {
                let r = &records[i];
                error = Some(ReplayError::FormatMismatch {
                    topic: self.topic.clone(),
                    partition: self.partition,
                    offset: r.offset,
                    found: r.meta.format,
                    expected: self.settings.message,
                });
                records.truncate(i);
            }
            let applying = limit.as_ref().map(|(_, l)| l.applying(&records));
            let last = records.last().map(|r| r.offset);
            if !records.is_empty() {
                match sink.apply(records).await {
                    Ok(()) => {
                        if let Some(last) = last {
                            position = StartAt::Offset(last + 1);
                        }
                        if let (Some((_, l)), Some(batch)) = (limit.as_mut(), applying) {
                            l.applied(batch);
                        }
                    }
                    Err(ApplyError::Stopped) => return Ok(()),
                    Err(ApplyError::PastBound { next_offset }) => {
                        // A promotion asked while this partition waited at
                        // the barrier: its bound starts where it is.
                        if limit.is_none() {
                            if let Some(bound) = self.ends.bound() {
                                let partition_bound = self.bounded(&bound, position).await?;
                                limit = Some((bound, partition_bound));
                            }
                        }
                        if let Some((bound, mut l)) = limit.take() {
                            log::info!(
                                "partition {}[{}]: ends at the barrier at offset {next_offset}: \
                                 the other partitions it spans ended before their copies",
                                self.topic,
                                self.partition
                            );
                            l.stopped_at(next_offset);
                            bound.report(l);
                        }
                        return Ok(());
                    }
                    Err(ApplyError::BadRecord(bad))
                        if self.settings.on_bad_record == OnBadRecord::Skip =>
                    {
                        consumer = self.skip(&mut sink, &bad).await?;
                        position = StartAt::Offset(bad.offset + 1);
                        if let Some((_, l)) = limit.as_mut() {
                            l.skipped(bad.offset);
                        }
                        continue;
                    }
                    Err(e @ ApplyError::Rewind { .. }) => {
                        let ApplyError::Rewind { to, .. } = &e else {
                            unreachable!()
                        };
                        let at = to.map(StartAt::Offset).unwrap_or(StartAt::Beginning);
                        log::warn!("{e}; reading the partition again from {}", describe(at));
                        consumer = receiver::consumer(
                            &self.settings.receiver,
                            &self.topic,
                            self.partition,
                            at,
                        )?;
                        position = at;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if cut {
                self.note_behind(&consumer, position);
                if let Some((bound, done)) = limit.take() {
                    bound.report(done);
                }
                return Ok(());
            }
            match error {
                Some(ReplayError::Receive(ReceiveError::BadRecord(bad)))
                    if self.settings.on_bad_record == OnBadRecord::Skip =>
                {
                    consumer = self.skip(&mut sink, &bad).await?;
                    position = StartAt::Offset(bad.offset + 1);
                    if let Some((_, l)) = limit.as_mut() {
                        l.skipped(bad.offset);
                    }
                }
                // The brokers are unreachable for now: librdkafka connects
                // again by itself, and the partition goes on where it was.
                Some(ReplayError::Receive(ReceiveError::Kafka(e)))
                    if receiver::is_transient(&e) =>
                {
                    outage.report(&self.topic, self.partition, &e);
                    tokio::select! {
                        _ = self.stop.changed() => return Ok(()),
                        _ = tokio::time::sleep(OUTAGE_PAUSE) => {}
                    }
                }
                Some(e) => return Err(e),
                None => outage.end(&self.topic, self.partition),
            }
        }
    }

    /// How many records the partition is behind, from `position` and the
    /// high watermark the consumer last heard.
    fn note_behind(&self, consumer: &StreamConsumer, position: StartAt) {
        let StartAt::Offset(next) = position else {
            return;
        };
        if let Some(high) = receiver::cached_high_watermark(consumer, &self.topic, self.partition) {
            self.stats
                .set_position((&self.topic, self.partition), next, high);
        }
    }

    /// `bound` as this partition sees it from `position`.
    async fn bounded(
        &self,
        bound: &Bound,
        position: StartAt,
    ) -> Result<PartitionBound, ReplayError> {
        let at = bound
            .for_partition(
                &self.settings.receiver,
                &self.topic,
                self.partition,
                position,
            )
            .await?;
        Ok(at)
    }

    /// `on_bad_record = "skip"`: `bad` (the records before it are applied)
    /// is logged, counted and passed: the offset after it is stored and the
    /// partition read again from there, since the rest of its batch was
    /// left unapplied.
    async fn skip(
        &self,
        sink: &mut PartitionApplier,
        bad: &BadRecord,
    ) -> Result<StreamConsumer, ReplayError> {
        let what = format!(
            "record at {}[{}]@{}: {}",
            bad.topic, bad.partition, bad.offset, bad.reason
        );
        log::error!("{what}; skipped (on_bad_record = \"skip\"): the backup misses what it held");
        self.stats.add_bad_skipped(what);
        match sink.store_offset(bad.offset + 1).await {
            Ok(()) => {}
            Err(ApplyError::Stopped) => return Err(ApplyError::Stopped.into()),
            Err(e) => return Err(e.into()),
        }
        Ok(receiver::consumer(
            &self.settings.receiver,
            &self.topic,
            self.partition,
            StartAt::Offset(bad.offset + 1),
        )?)
    }

    /// Where the partition starts: the offset stored in the backup, else
    /// the `start` setting (`latest` is stored at once).
    async fn start(&self, sink: &mut PartitionApplier) -> Result<StartAt, ReplayError> {
        let (topic, partition) = (&self.topic, self.partition);
        if let Some(stored) = sink.stored_offset().await? {
            log::info!("partition {topic}[{partition}]: starting at offset {stored} (stored in the backup)");
            return Ok(StartAt::Offset(stored));
        }
        match self.settings.receiver.start {
            Start::Earliest => {
                log::info!(
                    "partition {topic}[{partition}]: no offset stored in the backup; starting at the beginning (start = \"earliest\")"
                );
                Ok(StartAt::Beginning)
            }
            Start::Latest => {
                let end =
                    receiver::high_watermark(&self.settings.receiver, topic, partition).await?;
                sink.store_offset(end).await?;
                log::info!(
                    "partition {topic}[{partition}]: no offset stored in the backup; starting at the end, offset {end} (start = \"latest\"), stored in the backup"
                );
                Ok(StartAt::Offset(end))
            }
        }
    }
}

fn describe(at: StartAt) -> String {
    match at {
        StartAt::Beginning => "its beginning".into(),
        StartAt::Offset(o) => format!("offset {o}"),
    }
}

/// How long a partition waits after a consumer error that says the brokers
/// are unreachable, before it polls again.
const OUTAGE_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

/// A broker outage seen by one partition: told once when it starts, once
/// when it ends.
#[derive(Default)]
struct Outage {
    since: Option<std::time::Instant>,
}

impl Outage {
    fn report(&mut self, topic: &str, partition: i32, e: &rdkafka::error::KafkaError) {
        if self.since.is_none() {
            log::warn!(
                "partition {topic}[{partition}]: {e}; waiting for the brokers (librdkafka \
                 reconnects), the partition goes on where it was"
            );
            self.since = Some(std::time::Instant::now());
        }
    }

    /// As [`report`](Outage::report), for the end-offset request a
    /// promotion's bound needs.
    fn report_receive(&mut self, topic: &str, partition: i32, e: &ReceiveError) {
        if self.since.is_none() {
            log::warn!(
                "partition {topic}[{partition}]: {e}; asking again (the brokers may be \
                 unreachable for now)"
            );
            self.since = Some(std::time::Instant::now());
        }
    }

    fn end(&mut self, topic: &str, partition: i32) {
        if let Some(since) = self.since.take() {
            log::info!(
                "partition {topic}[{partition}]: brokers reachable again after {:.1} s",
                since.elapsed().as_secs_f64()
            );
        }
    }
}
