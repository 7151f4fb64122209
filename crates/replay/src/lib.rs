//! The remoteback replay: consumes captured writes from Kafka and applies
//! them to the backup Redis.
//!
//! Data flow, one module each: [`run`] starts a [`partition`] worker per
//! partition; its `receiver` reads the partition from the offset stored in
//! the backup (`state`) → the `applier` (or `row` for `ROW` records)
//! applies batches over the partition's `link` to the backup (a `backup`
//! connection), waiting out backup outages (`retry`), meeting the other
//! partitions at barriers (`barrier`) and counting into [`Stats`].
//!
//! docs/guarantees.md states what the replay guarantees and names the
//! tests that show it.

mod applier;
pub mod backup;
mod barrier;
mod bound;
mod error;
mod link;
mod partition;
mod promotion;
mod receiver;
mod retry;
mod row;
pub mod settings;
mod state;
mod stats;
mod sync_marks;

#[cfg(test)]
mod live_tests;

use std::future::Future;
use std::sync::Arc;

use remoteback_protocol::Format;
use tokio::sync::{mpsc, watch};

pub use bound::{Bound, Reached};
pub use error::{ApplyError, BadRecord, Unreadable};
use partition::PartitionJob;
pub use promotion::Promotion;
pub use receiver::ReceiveError;
pub use settings::{
    BackupSettings, OnApplyError, OnBadRecord, ReceiverSettings, ReplaySettings, Start,
};
pub use state::offset_field;
pub use state::{KEY_PREFIX, STATE_KEY};
pub use stats::{PartitionStats, Stats};
pub use sync_marks::{last_full_sync, SyncInLog};

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
    Worker(#[source] std::io::Error),
}

impl ReplayError {
    /// Whether the configuration asks for something that is not there (a
    /// listed partition): exit status 2, like an invalid file.
    pub fn is_config(&self) -> bool {
        matches!(self, ReplayError::Receive(e) if e.is_config())
    }
}

/// Builds a consumer as [`run`] would, so that librdkafka checks the
/// receiver's properties, without connecting anywhere.
pub fn validate(settings: &ReplaySettings) -> Result<(), rdkafka::error::KafkaError> {
    receiver::client_config(&settings.receiver)
        .create::<rdkafka::consumer::BaseConsumer>()
        .map(drop)
}

/// Runs the replay until `shutdown` resolves or a partition fails.
pub async fn run(
    settings: ReplaySettings,
    shutdown: impl Future<Output = ()>,
    stats: Stats,
) -> Result<(), ReplayError> {
    serve(settings, shutdown, stats, Promotion::default()).await
}

/// [`run`], and a backup that can be promoted: once `promotion` is
/// requested each partition stops at its end of that moment, and the
/// replay idles until `shutdown`.
pub async fn serve(
    settings: ReplaySettings,
    shutdown: impl Future<Output = ()>,
    stats: Stats,
    promotion: Promotion,
) -> Result<(), ReplayError> {
    run_partitions(settings, shutdown, stats, Ends::Promotion(promotion)).await
}

/// Runs the replay until every partition reached `bound` (see
/// [`Bound`]), `shutdown` resolves or a partition fails; what each
/// partition reached is in `bound` then.
pub async fn run_until(
    settings: ReplaySettings,
    bound: Arc<Bound>,
    shutdown: impl Future<Output = ()>,
    stats: Stats,
) -> Result<(), ReplayError> {
    run_partitions(settings, shutdown, stats, Ends::Bound(bound)).await
}

/// Where a replay's partitions end.
#[derive(Clone)]
pub(crate) enum Ends {
    /// At the bound.
    Bound(Arc<Bound>),
    /// At the promotion's bound, once requested; never before.
    Promotion(Promotion),
}

impl Ends {
    pub(crate) fn bound(&self) -> Option<Arc<Bound>> {
        match self {
            Ends::Bound(b) => Some(b.clone()),
            Ends::Promotion(p) => p.bound(),
        }
    }
}

async fn run_partitions(
    settings: ReplaySettings,
    shutdown: impl Future<Output = ()>,
    stats: Stats,
    ends: Ends,
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
        "replay: partitions {} → backup {}:{}{}, message={}, worker={}, start={}, on_apply_error={}, on_bad_record={}",
        listed.join(" "),
        settings.backup.host,
        settings.backup.port,
        if settings.backup.tls.is_some() { " (TLS)" } else { "" },
        settings.message,
        settings.worker,
        settings.receiver.start,
        settings.on_apply_error,
        settings.on_bad_record
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    match &ends {
        Ends::Bound(bound) => bound.set_partitions(partitions.len()),
        Ends::Promotion(promotion) => promotion.set_partitions(partitions.len()),
    }
    let barriers = barrier::Barriers::default();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    for (topic, partition) in partitions.iter().cloned() {
        let job = PartitionJob {
            settings: settings.clone(),
            topic,
            partition,
            stop: stop_rx.clone(),
            stats: stats.clone(),
            barriers: barriers.clone(),
            ends: ends.clone(),
        };
        partition::spawn(settings.worker, job, done_tx.clone());
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
    // Promoted: every partition ended at its bound, and the replay goes on
    // serving its status until it is stopped.
    let promoted = matches!(&ends, Ends::Promotion(p) if p.bound().is_some_and(|b| b.is_done()));
    if result.is_ok() && !stopping && promoted {
        log::info!(
            "replay promoted: every partition applied up to its end; applying nothing more \
             until stopped"
        );
        shutdown.await;
    }
    result
}
