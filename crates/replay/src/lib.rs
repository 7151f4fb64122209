//! The remoteback replay: consumes captured writes from Kafka and applies
//! them to the backup Redis.
//!
//! Data flow, one module each: [`receiver`] reads one partition from the
//! offset stored in the backup ([`offsets`]) → [`applier`] (or [`row`] for
//! `ROW` records) applies batches through a [`backup`] connection, counting
//! into [`stats`].

pub mod applier;
pub mod backup;
pub mod offsets;
pub mod receiver;
pub mod row;
pub mod settings;
pub mod stats;

use std::future::Future;
use std::sync::Arc;

use remoteback_protocol::{Format, Worker};
use tokio::sync::{mpsc, watch};

use applier::{Applier, ApplyError};
use receiver::{ReceiveError, Received};
use row::RowApplier;
pub use settings::{BackupSettings, ReceiverSettings, ReplaySettings};
use stats::Stats;

/// Why the replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Receive(#[from] ReceiveError),
    #[error("record at {topic}[{partition}]@{offset} is in {found} format but this replay expects {expected} (message = \"{expected}\"); stopping")]
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

/// Runs the replay until `shutdown` resolves or a partition fails.
pub async fn run(
    settings: ReplaySettings,
    shutdown: impl Future<Output = ()>,
    stats: Stats,
) -> Result<(), ReplayError> {
    let settings = Arc::new(settings);
    let partitions = receiver::partitions(&settings.receiver).await?;
    log::info!(
        "replay: {} partitions of {} → backup {}:{}, message={}, worker={}",
        partitions.len(),
        settings.receiver.topics.join(","),
        settings.backup.host,
        settings.backup.port,
        settings.message,
        settings.worker
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
    tokio::pin!(shutdown);
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

impl PartitionJob {
    async fn run(mut self) -> Result<(), ReplayError> {
        let backup = self.settings.backup.clone();
        let control = Applier::new(
            backup.clone(),
            &self.topic,
            self.partition,
            self.stats.clone(),
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
        let start = match &mut sink {
            Sink::Batched(a) => a.stored_offset().await?,
            Sink::Row(r) => r.stored_offset().await?,
        };
        let consumer =
            receiver::consumer(&self.settings.receiver, &self.topic, self.partition, start)?;
        log::info!(
            "partition {}[{}]: starting at {}",
            self.topic,
            self.partition,
            start
                .map(|o| format!("offset {o} (stored in the backup)"))
                .unwrap_or_else(|| "the beginning".into())
        );
        loop {
            if *self.stop.borrow() {
                return Ok(());
            }
            let batch = tokio::select! {
                _ = self.stop.changed() => return Ok(()),
                b = receiver::next_batch(&consumer, self.settings.receiver.poll_timeout) => b?,
            };
            if batch.is_empty() {
                continue;
            }
            self.check_format(&batch)?;
            match &mut sink {
                Sink::Batched(a) => a.apply(batch).await?,
                Sink::Row(r) => r.apply(batch).await?,
            }
        }
    }

    fn check_format(&self, batch: &[Received]) -> Result<(), ReplayError> {
        match batch
            .iter()
            .find(|r| r.meta.format != self.settings.message)
        {
            Some(r) => Err(ReplayError::FormatMismatch {
                topic: self.topic.clone(),
                partition: self.partition,
                offset: r.offset,
                found: r.meta.format,
                expected: self.settings.message,
            }),
            None => Ok(()),
        }
    }
}
