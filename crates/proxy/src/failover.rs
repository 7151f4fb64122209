//! A planned failover's first half, in the proxy: writes stop at the proxy
//! (they wait before reaching the primary, or are refused with `-READONLY`;
//! reads go on), and the proxy says when every write the primary took
//! through it is in Kafka. The replay then applies the topic to its end
//! (`remoteback failover`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::session::SessionContext;
use crate::status::Status;
use crate::sync::SyncState;

/// The proxy's side of a planned failover; cheap to share.
pub struct Failover {
    ctx: Arc<SessionContext>,
    status: Status,
    /// Where the reverse pipeline's parts point: the primary and each
    /// Kafka sender's topic and brokers.
    primary: String,
    kafka: Vec<(String, String)>,
}

/// What clients' writes meet while a failover holds them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WritesDuring {
    /// They wait at the proxy until the failover ends (the proxy stops, or
    /// the failover is cancelled): a client sees a slow write, no error.
    #[default]
    Wait,
    /// They are refused with `-READONLY remoteback: failover in progress`,
    /// as a Redis replica refuses them; a transaction with writes is
    /// aborted (`-EXECABORT`). Writes already waiting for a key lock when
    /// the failover began still wait. With `message = "ROW"` writes wait.
    Readonly,
}

impl std::str::FromStr for WritesDuring {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "wait" => Ok(WritesDuring::Wait),
            "readonly" => Ok(WritesDuring::Readonly),
            _ => Err(format!("{s:?}: expected wait or readonly")),
        }
    }
}

impl WritesDuring {
    pub fn name(self) -> &'static str {
        match self {
            WritesDuring::Wait => "wait",
            WritesDuring::Readonly => "readonly",
        }
    }
}

/// Where a planned failover stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailoverState {
    /// Writes wait at the proxy (or are refused: `refusing`).
    pub paused: bool,
    /// Writes are refused with `-READONLY` rather than held.
    pub refusing: bool,
    /// No write is between being forwarded and having its record handed
    /// to the senders.
    pub none_in_flight: bool,
    /// Bytes of records not yet acknowledged by Kafka.
    pub backlog_bytes: u64,
    /// Paused, nothing in flight, the backlog empty: every write the
    /// primary took through the proxy is in Kafka (or counted lost below).
    /// Sound because the pause holds at the lock table too: a write
    /// forwarded holds its locks until its record was handed to the
    /// senders, and none can take a lock once paused.
    pub drained: bool,
    /// Records lost since start (the backup misses them).
    pub records_lost: u64,
    /// Writes whose outcome is unknown (their reply never came).
    pub writes_uncaptured: u64,
    pub resync_needed: bool,
    /// The primary, `HOST:PORT`.
    pub primary: String,
    /// Each Kafka sender's topic and `bootstrap.servers`.
    pub kafka: Vec<(String, String)>,
}

impl Failover {
    pub(crate) fn new(
        ctx: Arc<SessionContext>,
        status: Status,
        primary: String,
        kafka: Vec<(String, String)>,
    ) -> Arc<Failover> {
        Arc::new(Failover {
            ctx,
            status,
            primary,
            kafka,
        })
    }

    /// Writes wait at the proxy from now on: before the backlog (every
    /// captured command) and at the key locks (everything that takes them,
    /// a transaction's `EXEC` included), so that none reaches the primary;
    /// with [`WritesDuring::Readonly`], the ones that reach the proxy from
    /// now on are refused instead. Asked again, the failover goes on with
    /// the mode asked last. Refused while a sync runs: the backup would be
    /// half seeded.
    pub fn pause(&self, during: WritesDuring) -> Result<(), &'static str> {
        if self.status.sync().state == SyncState::Running {
            return Err("a sync is running: wait for it or cancel it first");
        }
        let refusing = during == WritesDuring::Readonly;
        let was = self.ctx.refusing.swap(refusing, Ordering::Relaxed);
        if !self.ctx.senders.backlog().writes_paused() || was != refusing {
            let what = match during {
                WritesDuring::Wait => "wait at the proxy",
                WritesDuring::Readonly => "are refused with -READONLY",
            };
            log::warn!(
                "failover: writes {what} from now on (reads go on) until the proxy stops or \
                 the failover is cancelled"
            );
        }
        self.ctx.senders.backlog().pause_writes(true);
        if let Some(ordering) = &self.ctx.ordering {
            ordering.pause_locks(true);
        }
        Ok(())
    }

    /// Writes go again (a failover given up).
    pub fn resume(&self) {
        if self.ctx.senders.backlog().writes_paused() {
            log::warn!("failover cancelled: writes go to the primary again");
        }
        // Refusals end first: a write arriving meanwhile waits for the
        // pause's end an instant rather than being refused.
        self.ctx.refusing.store(false, Ordering::Relaxed);
        if let Some(ordering) = &self.ctx.ordering {
            ordering.pause_locks(false);
        }
        self.ctx.senders.backlog().pause_writes(false);
    }

    pub fn state(&self) -> FailoverState {
        let backlog = self.ctx.senders.backlog();
        let paused = backlog.writes_paused();
        let none_in_flight = self
            .ctx
            .ordering
            .as_ref()
            .is_none_or(|o| o.no_write_in_flight());
        let backlog_bytes = backlog.bytes();
        FailoverState {
            paused,
            refusing: paused && self.ctx.refusing.load(Ordering::Relaxed),
            none_in_flight,
            backlog_bytes,
            drained: paused && none_in_flight && backlog_bytes == 0,
            records_lost: self.status.records_lost(),
            writes_uncaptured: self.status.writes_uncaptured(),
            resync_needed: self.status.resync_needed(),
            primary: self.primary.clone(),
            kafka: self.kafka.clone(),
        }
    }
}
