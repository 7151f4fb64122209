//! Copying the primary's existing dataset to the backup through the log,
//! while clients keep writing (`remoteback sync`), and resyncing single
//! keys (`remoteback verify --repair`).
//!
//! Only the proxy can do this consistently: it alone can order a key's
//! snapshot against the clients' writes to it. The sync walks the primary
//! with `SCAN` ([`job`]); for each key it takes the key's lock, the same
//! one client writes take, reads the key's whole state, hands the records
//! that set the backup's key to that state to the senders and gives the
//! lock back ([`copier`]). Every client write to the key that follows in
//! the log applies on top of exactly that state, so the backup ends equal
//! to the primary with no cut in time. Big keys are rebuilt from typed
//! commands in chunks ([`rebuild`], streams in [`stream`]). What Kafka has not acknowledged is
//! bounded and tells where a resumed sync starts ([`unacked`],
//! [`position`]).

mod copier;
mod job;
#[cfg(test)]
mod live_tests;
mod position;
mod progress;
mod rebuild;
mod stream;
mod unacked;

pub use copier::CopyError;
pub use position::{BadPosition, SyncPosition};
pub use progress::{SyncProgress, SyncState};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::ordering::MAX_NOTED;
use crate::primary::Primary;
use crate::session::SessionContext;
use copier::{Copier, Expiry};
use progress::SyncCounters;
use unacked::Unacked;

/// Lock holder ids of syncs and repairs start here, far above any
/// session's connection number, and each gets its own: a holder re-enters
/// its own locks, and a repair must not share a key with a sync.
const HOLDER_BASE: u64 = 1 << 63;
/// Longest one reply to the sync may take: a `DUMP` of a key just under
/// the chunk size, or a page of a big key, on a busy primary.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A sync connection to the primary with database `db` selected.
async fn open(primary: &Primary, db: u32) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    primary.connect(db, CONNECT_TIMEOUT, REPLY_TIMEOUT).await
}

/// Default `--chunk-bytes`: below common Kafka `message.max.bytes` limits.
pub const DEFAULT_CHUNK_BYTES: u64 = 8 * 1024 * 1024;
/// Default bound of the sync's bytes Kafka has not acknowledged.
pub const DEFAULT_INFLIGHT_BYTES: u64 = 64 * 1024 * 1024;

/// How keys are copied (`--method`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Method {
    /// `DUMP` and `RESTORE`: exact and fast, for a backup running the same
    /// or a newer Redis than the primary.
    #[default]
    Restore,
    /// Typed commands (`HSET`, `RPUSH`, ...) for every key: for a backup
    /// on an older Redis, or on Valkey, where `DUMP` payloads do not load.
    Commands,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Restore => "restore",
            Method::Commands => "commands",
        }
    }
}

/// What a sync is asked to copy, and how.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncRequest {
    /// These databases only (`--db`); every one that has keys if `None`.
    pub dbs: Option<Vec<u32>>,
    /// Keys matching this `SCAN` pattern only (`--match`).
    pub pattern: Option<Bytes>,
    pub method: Method,
    /// Empty the backup first, but for remoteback's own keys (`--flush`).
    pub flush: bool,
    /// At most this many keys a second (`--keys-per-second`).
    pub keys_per_second: Option<u64>,
    /// A key whose state would take more than this goes in chunks.
    pub chunk_bytes: u64,
    /// The sync's bytes Kafka has not acknowledged, at most.
    pub inflight_bytes: u64,
    /// Continue from a position an earlier sync reported (`--resume`).
    pub resume: Option<SyncPosition>,
}

impl Default for SyncRequest {
    fn default() -> Self {
        SyncRequest {
            dbs: None,
            pattern: None,
            method: Method::Restore,
            flush: false,
            keys_per_second: None,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            inflight_bytes: DEFAULT_INFLIGHT_BYTES,
            resume: None,
        }
    }
}

impl SyncRequest {
    /// Whether the sync copies every key, from the start: when it
    /// completes, the backup no longer needs a resync. A resumed sync is
    /// not: keys before its position were copied by an earlier proxy run,
    /// whose losses this one does not know.
    pub fn is_full(&self) -> bool {
        self.dbs.is_none() && self.pattern.is_none() && self.resume.is_none()
    }
}

/// Why a sync or a repair could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("a sync is running already; wait for it, or cancel it first")]
    Running,
    #[error("the proxy runs with message = \"ROW\": its records are the clients' requests, which a sync's records cannot be ordered with; sync needs PROTOCOL or STRING")]
    RowFormat,
    #[error("the proxy has no [[sender]]: nothing would reach the backup")]
    NoSenders,
    #[error(
        "--flush cannot be combined with --resume: the backup was emptied when the sync began"
    )]
    FlushOnResume,
    #[error("--chunk-bytes must be at least 1024")]
    ChunkTooSmall,
    #[error("--chunk-bytes must be at most half of the proxy's backlog_bytes ({backlog}): the sync leaves the backlog's room to the clients")]
    ChunkTooBig { backlog: u64 },
    #[error("the proxy is shutting down")]
    ShuttingDown,
    #[error("a failover holds the writes: cancel it (DELETE /failover) to sync")]
    FailingOver,
    #[error("cannot read the primary's keyspace: {0}")]
    Keyspace(#[source] CopyError),
    #[error("cannot connect to the primary {addr}: {source}")]
    Primary {
        addr: String,
        source: redis::RedisError,
    },
}

/// A running proxy's syncs and repairs; cheap to share.
pub struct SyncControl {
    ctx: Arc<SessionContext>,
    primary: Primary,
    holders: AtomicU64,
    current: Mutex<Current>,
}

/// The running or last sync.
#[derive(Default)]
struct Current {
    counters: Option<Arc<SyncCounters>>,
    cancelled: Option<Arc<AtomicBool>>,
}

impl SyncControl {
    pub(crate) fn new(ctx: Arc<SessionContext>) -> Arc<SyncControl> {
        Arc::new(SyncControl {
            primary: ctx.primary.clone(),
            ctx,
            holders: AtomicU64::new(HOLDER_BASE),
            current: Mutex::new(Current::default()),
        })
    }

    /// Starts a sync in the background; its progress is
    /// [`progress`](SyncControl::progress).
    pub async fn start(&self, request: SyncRequest) -> Result<(), StartError> {
        if request.flush && request.resume.is_some() {
            return Err(StartError::FlushOnResume);
        }
        if self.is_running() {
            return Err(StartError::Running);
        }
        let mut copier = self.copier(request.method, request.chunk_bytes)?;
        copier.inflight_limit = request.inflight_bytes.max(request.chunk_bytes);
        let mut first = self.connect(0).await?;
        copier.expiry = Expiry::detect(&mut first).await;
        let dbs = job::databases(&mut first, &request)
            .await
            .map_err(StartError::Keyspace)?;
        let start = request.resume.unwrap_or_default();
        let counters = Arc::new(SyncCounters::running(request.is_full(), start));
        let total = dbs.iter().map(|(_, keys)| keys).sum();
        counters.keys_total.store(total, Ordering::Relaxed);
        copier.counters = counters.clone();
        {
            let mut current = self.current();
            if current
                .counters
                .as_ref()
                .is_some_and(|c| c.state() == progress::SyncState::Running)
            {
                return Err(StartError::Running);
            }
            current.counters = Some(counters);
            current.cancelled = Some(copier.cancelled.clone());
        }
        let job = job::Job {
            copier,
            primary: self.primary.clone(),
            request,
            dbs,
        };
        tokio::spawn(job.run());
        Ok(())
    }

    /// The running or last sync's progress (`Idle` if none ran).
    pub fn progress(&self) -> SyncProgress {
        match &self.current().counters {
            Some(counters) => counters.progress(),
            None => SyncProgress::default(),
        }
    }

    /// Asks the running sync to stop after the key in hand; `false` if none
    /// runs.
    pub fn cancel(&self) -> bool {
        let current = self.current();
        match (&current.counters, &current.cancelled) {
            (Some(c), Some(flag)) if c.state() == SyncState::Running => {
                flag.store(true, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Copies one key through the log, as a sync does, and waits until
    /// Kafka acknowledged its records; returns how many there were.
    pub async fn repair(&self, db: u32, key: Bytes, method: Method) -> Result<u64, RepairError> {
        let backlog = self.ctx.senders.backlog().limit();
        let chunk = DEFAULT_CHUNK_BYTES.min(backlog / 2).max(1024);
        let mut copier = self.copier(method, chunk)?;
        let mut conn = self.connect(db).await?;
        copier.expiry = Expiry::detect(&mut conn).await;
        let mut unacked = Unacked::new(SyncPosition::default());
        copier.room(&mut unacked, 0, false).await?;
        let held = copier.lock(db, key.clone()).await;
        copier
            .copy_one(&mut conn, db, key.clone(), &held, &mut unacked)
            .await?;
        drop(held);
        unacked.drain().await.map_err(CopyError::from)?;
        let records = copier.counters.records.load(Ordering::Relaxed);
        log::info!(
            "repair: key {} of db {db} copied through the log in {records} records",
            key.escape_ascii()
        );
        Ok(records)
    }

    fn is_running(&self) -> bool {
        self.progress().state == SyncState::Running
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn copier(&self, method: Method, chunk_bytes: u64) -> Result<Copier, StartError> {
        let Some(tables) = self.ctx.ordering.clone() else {
            return Err(StartError::RowFormat);
        };
        if self.ctx.senders.describe().is_empty() {
            return Err(StartError::NoSenders);
        }
        if chunk_bytes < 1024 {
            return Err(StartError::ChunkTooSmall);
        }
        let backlog = self.ctx.senders.backlog().limit();
        if chunk_bytes > backlog / 2 {
            return Err(StartError::ChunkTooBig { backlog });
        }
        if *self.ctx.drain.closing().borrow() {
            return Err(StartError::ShuttingDown);
        }
        if self.ctx.senders.backlog().writes_paused() {
            return Err(StartError::FailingOver);
        }
        Ok(Copier {
            routes: self.ctx.routes.clone(),
            senders: self.ctx.senders.clone(),
            tables,
            holder: self.holders.fetch_add(1, Ordering::Relaxed),
            method,
            chunk_bytes,
            inflight_limit: DEFAULT_INFLIGHT_BYTES.max(chunk_bytes),
            expiry: Expiry::Absolute,
            counters: Arc::new(SyncCounters::running(false, SyncPosition::default())),
            cancelled: Arc::new(AtomicBool::new(false)),
        })
    }

    async fn connect(&self, db: u32) -> Result<redis::aio::MultiplexedConnection, StartError> {
        open(&self.primary, db)
            .await
            .map_err(|source| StartError::Primary {
                addr: self.primary.addr(),
                source,
            })
    }
}

/// Why a repair failed.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Copy(#[from] CopyError),
}
