//! The remoteback replay: consumes captured writes from Kafka and applies
//! them to the backup Redis.
//!
//! Data flow, one module each: [`receiver`] reads one partition from the
//! offset stored in the backup ([`offsets`]) → [`applier`] (or [`row`] for
//! `ROW` records) applies batches through a [`backup`] connection, waiting
//! out backup outages ([`retry`]) and counting into [`stats`].
//!
//! docs/guarantees.md states what the replay guarantees and names the
//! tests that show it.

pub mod applier;
pub mod backup;
pub mod offsets;
pub mod receiver;
pub mod retry;
pub mod row;
pub mod settings;
pub mod stats;

#[cfg(test)]
mod live_tests;

use std::future::Future;
use std::sync::Arc;

use remoteback_protocol::{Format, Worker};
use tokio::sync::{mpsc, watch};

use applier::{Applier, ApplyError, Policy};
use receiver::{Batch, ReceiveError, StartAt};
use row::RowApplier;
pub use settings::{BackupSettings, OnApplyError, ReceiverSettings, ReplaySettings, Start};
use stats::Stats;

/// Why the replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Receive(#[from] ReceiveError),
    #[error("record at {topic}[{partition}]@{offset} is in {found} format but this replay expects {expected} (message = \"{expected}\"); stopping (the records before it were applied, a restart resumes at it)")]
    FormatMismatch {
        topic: String,
        partition: i32,
        offset: i64,
        found: Format,
        expected: Format,
    },
    #[error("partition worker failed: {0}")]
    Worker(String),
}

impl ReplayError {
    /// Whether the configuration asks for something that is not there (a
    /// listed partition): exit status 2, like an invalid file.
    pub fn is_config(&self) -> bool {
        matches!(self, ReplayError::Receive(e) if e.is_config())
    }
}

/// Runs the replay until `shutdown` resolves or a partition fails.
pub async fn run(
    settings: ReplaySettings,
    shutdown: impl Future<Output = ()>,
    stats: Stats,
) -> Result<(), ReplayError> {
    let settings = Arc::new(settings);
    tokio::pin!(shutdown);
    // Shutdown is polled first, so that whatever it waits for (signal
    // handlers) is in place before the replay waits for anything itself.
    let partitions = tokio::select! {
        biased;
        _ = &mut shutdown => {
            log::info!("replay shutting down before it started");
            return Ok(());
        }
        p = receiver::partitions(&settings.receiver) => p?,
    };
    if settings.message == Format::Row && settings.on_apply_error == OnApplyError::Stop {
        log::warn!(
            "on_apply_error = \"stop\" has no effect with message = \"ROW\": the backup's \
             replies to ROW bytes are not read"
        );
    }
    let listed: Vec<String> = partitions
        .iter()
        .map(|(t, p)| format!("{t}[{p}]"))
        .collect();
    log::info!(
        "replay: partitions {} → backup {}:{}, message={}, worker={}, start={}, on_apply_error={}",
        listed.join(" "),
        settings.backup.host,
        settings.backup.port,
        settings.message,
        settings.worker,
        settings.receiver.start,
        settings.on_apply_error
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    for (topic, partition) in partitions.iter().cloned() {
        let job = PartitionJob {
            settings: settings.clone(),
            topic,
            partition,
            stop: stop_rx.clone(),
            stats: stats.clone(),
        };
        let done = done_tx.clone();
        spawn_partition(settings.worker, job, done);
    }
    drop(done_tx);
    let mut result = Ok(());
    let mut remaining = partitions.len();
    let mut stopping = false;
    while remaining > 0 {
        tokio::select! {
            _ = &mut shutdown, if !stopping => {
                log::info!("replay shutting down: finishing the batches in hand");
                stopping = true;
                let _ = stop_tx.send(true);
            }
            done = done_rx.recv() => {
                let Some(r) = done else { break };
                remaining -= 1;
                if let Err(e) = r {
                    log::error!("{e}");
                    if result.is_ok() {
                        result = Err(e);
                    }
                    stopping = true;
                    let _ = stop_tx.send(true);
                }
            }
        }
    }
    result
}

/// Everything one partition's worker needs.
struct PartitionJob {
    settings: Arc<ReplaySettings>,
    topic: String,
    partition: i32,
    stop: watch::Receiver<bool>,
    stats: Stats,
}

type Done = mpsc::UnboundedSender<Result<(), ReplayError>>;

/// Runs a partition as a task on the shared pool (`coroutine`) or on an OS
/// thread of its own with a single-threaded runtime (`thread`).
fn spawn_partition(worker: Worker, job: PartitionJob, done: Done) {
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
                    Err(e) => Err(ReplayError::Worker(e.to_string())),
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
enum Sink {
    Batched(Applier),
    Row(RowApplier),
}

impl Sink {
    async fn stored_offset(&mut self) -> Result<Option<i64>, ApplyError> {
        match self {
            Sink::Batched(a) => a.stored_offset().await,
            Sink::Row(r) => r.stored_offset().await,
        }
    }

    async fn store_offset(&mut self, next: i64) -> Result<(), ApplyError> {
        match self {
            Sink::Batched(a) => a.store_offset(next).await,
            Sink::Row(r) => r.store_offset(next).await,
        }
    }

    async fn apply(&mut self, batch: Vec<receiver::Received>) -> Result<(), ApplyError> {
        match self {
            Sink::Batched(a) => a.apply(batch).await,
            Sink::Row(r) => r.apply(batch).await,
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
        let control = Applier::new(
            backup.clone(),
            &self.topic,
            self.partition,
            self.stats.clone(),
            policy,
            self.stop.clone(),
        );
        let mut sink = match self.settings.message {
            Format::Row => Sink::Row(RowApplier::new(
                backup,
                control,
                &self.topic,
                self.partition,
            )),
            _ => Sink::Batched(control),
        };
        let start = match self.start(&mut sink).await {
            Ok(start) => start,
            Err(ReplayError::Apply(ApplyError::Stopped)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut consumer =
            receiver::consumer(&self.settings.receiver, &self.topic, self.partition, start)?;
        loop {
            if *self.stop.borrow() {
                return Ok(());
            }
            let Batch { mut records, error } = tokio::select! {
                _ = self.stop.changed() => return Ok(()),
                b = receiver::next_batch(&consumer, self.settings.receiver.poll_timeout) => b,
            };
            let mut error = error.map(ReplayError::from);
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
            if !records.is_empty() {
                match sink.apply(records).await {
                    Ok(()) => {}
                    Err(ApplyError::Stopped) => return Ok(()),
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
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if let Some(e) = error {
                return Err(e);
            }
        }
    }

    /// Where the partition starts: the offset stored in the backup, else
    /// the `start` setting (`latest` is stored at once).
    async fn start(&self, sink: &mut Sink) -> Result<StartAt, ReplayError> {
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
