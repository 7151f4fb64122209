//! How far a sync is: counters the job updates and `/metrics`, the admin
//! API and the CLI read, without locking anything the job uses.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::position::SyncPosition;

/// What a sync is doing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncState {
    /// No sync has run since the proxy started.
    #[default]
    Idle,
    Running,
    /// Every key was copied and Kafka acknowledged every record.
    Done,
    Cancelled,
    Failed,
}

impl SyncState {
    pub fn name(self) -> &'static str {
        match self {
            SyncState::Idle => "idle",
            SyncState::Running => "running",
            SyncState::Done => "done",
            SyncState::Cancelled => "cancelled",
            SyncState::Failed => "failed",
        }
    }
}

/// A sync's progress at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyncProgress {
    pub state: SyncState,
    /// Keys copied (a record handed to the senders), including deleted ones.
    pub keys_done: u64,
    /// Keys in the databases walked when the sync started (`DBSIZE`).
    pub keys_total: u64,
    /// Keys `SCAN` returned that were gone when their turn came (`DEL`).
    pub keys_deleted: u64,
    /// Keys too big for one record, copied as typed commands in chunks.
    pub big_keys: u64,
    /// Keys copied a second time after the walk, because a write that
    /// named several keys ran during it (counted in `keys_done` too).
    pub keys_recopied: u64,
    /// Writes whose keys the proxy cannot name (`SWAPDB`, `MOVE`, `COPY`,
    /// scripts without declared keys) that ran during the sync: the keys
    /// they changed may differ on the backup.
    pub unordered_writes: u64,
    /// Records handed to the senders.
    pub records: u64,
    /// Bytes of those records.
    pub bytes: u64,
    /// Bytes of the sync's records Kafka has not acknowledged yet.
    pub inflight_bytes: u64,
    /// Times the sync paused because the clients' backlog was full.
    pub backlog_pauses: u64,
    /// Since the sync started (until it ended).
    pub elapsed: Duration,
    /// Where a resumed sync would start (`--resume`): everything before it
    /// is in Kafka.
    pub position: Option<SyncPosition>,
    /// Whether this sync covers every key (no database or pattern chosen).
    pub full: bool,
    /// Why it failed.
    pub error: Option<String>,
}

impl SyncProgress {
    /// Keys copied per second so far.
    pub fn keys_per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.keys_done as f64 / secs
        } else {
            0.0
        }
    }
}

/// The counters of the running (or last) sync.
#[derive(Default)]
pub(crate) struct SyncCounters {
    pub keys_done: AtomicU64,
    pub keys_total: AtomicU64,
    pub keys_deleted: AtomicU64,
    pub big_keys: AtomicU64,
    pub keys_recopied: AtomicU64,
    pub unordered_writes: AtomicU64,
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub inflight_bytes: AtomicU64,
    pub backlog_pauses: AtomicU64,
    /// The acknowledged position (two numbers, so behind a mutex; read once
    /// per scrape).
    position: Mutex<Option<SyncPosition>>,
    outcome: Mutex<Outcome>,
}

#[derive(Default)]
struct Outcome {
    state: SyncState,
    started: Option<Instant>,
    ended: Option<Instant>,
    full: bool,
    error: Option<String>,
}

impl SyncCounters {
    /// A new sync's counters, running from now.
    pub fn running(full: bool, start: SyncPosition) -> SyncCounters {
        let counters = SyncCounters::default();
        *counters.position.lock().unwrap_or_else(|e| e.into_inner()) = Some(start);
        *counters.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Outcome {
            state: SyncState::Running,
            started: Some(Instant::now()),
            ended: None,
            full,
            error: None,
        };
        counters
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set_position(&self, position: SyncPosition) {
        *self.position.lock().unwrap_or_else(|e| e.into_inner()) = Some(position);
    }

    /// The sync ended in `state` (with `error` if it failed).
    pub fn end(&self, state: SyncState, error: Option<String>) {
        let mut outcome = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        outcome.state = state;
        outcome.ended = Some(Instant::now());
        outcome.error = error;
    }

    pub fn state(&self) -> SyncState {
        self.outcome.lock().unwrap_or_else(|e| e.into_inner()).state
    }

    pub fn progress(&self) -> SyncProgress {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let outcome = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = match (outcome.started, outcome.ended) {
            (Some(start), Some(end)) => end - start,
            (Some(start), None) => start.elapsed(),
            _ => Duration::ZERO,
        };
        SyncProgress {
            state: outcome.state,
            keys_done: get(&self.keys_done),
            keys_total: get(&self.keys_total),
            keys_deleted: get(&self.keys_deleted),
            big_keys: get(&self.big_keys),
            keys_recopied: get(&self.keys_recopied),
            unordered_writes: get(&self.unordered_writes),
            records: get(&self.records),
            bytes: get(&self.bytes),
            inflight_bytes: get(&self.inflight_bytes),
            backlog_pauses: get(&self.backlog_pauses),
            elapsed,
            position: *self.position.lock().unwrap_or_else(|e| e.into_inner()),
            full: outcome.full,
            error: outcome.error.clone(),
        }
    }
}
