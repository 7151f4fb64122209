//! Keeping the primary's order of conflicting writes from different
//! clients (docs/architecture.md, "ordering").
//!
//! The mechanisms have a file each: [`plan`] says which key locks a command
//! needs, [`locks`] is the lock table all sessions share, [`blocked`] keeps
//! the blocking pops in flight, and [`probe`] asks the primary whether a
//! client is blocked. [`WriteOrder`], in this file, is one session's part:
//! it takes key locks before forwarding writes, tracks its blocking pops,
//! and before giving back a write's locks waits for any pop that write
//! served.

mod blocked;
mod locks;
mod plan;
mod probe;
mod sync_watch;

pub(crate) use blocked::{BlockingPop, PopState};
pub(crate) use locks::LockGuard;
pub(crate) use plan::LockPlan;
pub(crate) use sync_watch::{SyncWatch, MAX_NOTED};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;

use bytes::Bytes;
use remoteback_protocol::frame::{self, Frame};
use remoteback_protocol::Command;
use remoteback_transport::WriteHalf;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::capture::Verdict;
use crate::primary::Primary;
use blocked::BlockedPops;
use locks::{KeyLocks, Need};
use probe::Prober;

/// Longest a write keeps its locks waiting for a pop it served to be
/// captured; past it the write goes on and the order is logged as at risk.
const SERVED_POP_WAIT: Duration = Duration::from_secs(2);
/// Longest pause between two probes of a pop that is neither blocked nor
/// answered yet.
const MAX_PROBE_PAUSE: Duration = Duration::from_millis(50);

/// What the proxy's sessions share for ordering: the key locks and the
/// blocking pops in flight.
pub(crate) struct OrderTables {
    locks: Arc<KeyLocks>,
    pops: Arc<BlockedPops>,
    /// The running sync's notes of multi-key writes.
    pub sync: SyncWatch,
    /// How long writes waited for another session's key locks, in seconds
    /// (only writes that waited).
    pub lock_wait_seconds: Histogram,
}

impl OrderTables {
    pub fn new() -> Arc<OrderTables> {
        Arc::new(OrderTables {
            locks: KeyLocks::new(),
            pops: BlockedPops::new(),
            sync: SyncWatch::default(),
            lock_wait_seconds: Histogram::new(crate::status::latency_buckets()),
        })
    }

    /// Whether no write holds key locks now (see [`KeyLocks::is_idle`]).
    pub fn no_write_in_flight(&self) -> bool {
        self.locks.is_idle()
    }

    /// Stops giving key locks (a planned failover), or gives them again.
    pub fn pause_locks(&self, paused: bool) {
        self.locks.pause(paused);
    }

    /// Takes `key`'s lock in `db` for `holder` (the sync: it reads a key's
    /// state and hands its records to the senders while no client write
    /// to that key runs) if no one else holds it.
    pub fn try_lock_key(&self, holder: u64, db: u32, key: &Bytes) -> Option<LockGuard> {
        self.locks
            .try_acquire(holder, Need::Keys(vec![(db, key.clone())]))
            .ok()
    }

    /// Waits for `key`'s lock in `db`, then takes it for `holder`.
    pub async fn lock_key(&self, holder: u64, db: u32, key: Bytes) -> LockGuard {
        self.locks
            .acquire(holder, Need::Keys(vec![(db, key)]))
            .await
    }

    /// Waits until no other holder has any lock, then excludes every
    /// write of anyone else (a record that must sit at one point of the
    /// log, such as the sync's flush).
    pub async fn lock_everything(&self, holder: u64) -> LockGuard {
        self.locks.acquire(holder, Need::Barrier).await
    }
}

/// One session's ordering state (cheap to clone for the reply side).
#[derive(Clone)]
pub(crate) struct WriteOrder {
    conn: u64,
    shared: Arc<OrderTables>,
    /// The primary's id for this session's connection: `None` until the
    /// reply to `CLIENT ID` arrived, then `Some(None)` if it was refused (no
    /// probing possible: blocking pops take no locks).
    client_id: watch::Receiver<Option<Option<i64>>>,
    prober: Arc<tokio::sync::Mutex<Prober>>,
}

/// A sent blocking pop's locks and state, for its watcher.
pub(crate) struct PopWatch(Arc<Mutex<Option<LockGuard>>>, Arc<PopState>);

impl PopWatch {
    pub fn state(&self) -> Arc<PopState> {
        self.1.clone()
    }
}

/// What a forwarded command holds until its reply was captured.
#[derive(Debug)]
pub(crate) enum Hold {
    /// A write's key locks: given back by [`WriteOrder::release`] after its
    /// capture.
    Locks(LockGuard),
    /// A blocking pop's registration and locks: given back when the primary
    /// reports it blocked, or when it is dropped after its capture.
    Pop(BlockingPop),
}

/// Whether a command can be forwarded now.
pub(crate) enum Prepared {
    /// Yes, holding this (or nothing: it takes no locks).
    Ready(Option<Hold>),
    /// Another session holds some of these locks.
    Wait(Need),
}

impl WriteOrder {
    /// Asks the connection's client id (`CLIENT ID`) ahead of the client's
    /// first command; the reply side hands the answer to `ClientId::set`.
    pub async fn start(
        conn: u64,
        shared: Arc<OrderTables>,
        upstream: &mut WriteHalf,
        primary: &Primary,
    ) -> std::io::Result<(WriteOrder, ClientId)> {
        upstream
            .write_all(&Command::from_parts(["CLIENT", "ID"]).to_resp())
            .await?;
        upstream.flush().await?;
        let (tx, rx) = watch::channel(None);
        let ordering = WriteOrder {
            conn,
            shared,
            client_id: rx,
            prober: Arc::new(tokio::sync::Mutex::new(Prober::new(primary.clone()))),
        };
        Ok((ordering, ClientId(tx)))
    }

    /// The ordering handle of the connection sessions share
    /// (`session::shared`): its writes take their locks for `holder`, and
    /// it runs no blocking pop, so it needs no client id.
    pub fn for_shared(holder: u64, shared: Arc<OrderTables>, primary: &Primary) -> WriteOrder {
        let (_, rx) = watch::channel(Some(None));
        WriteOrder {
            conn: holder,
            shared,
            client_id: rx,
            prober: Arc::new(tokio::sync::Mutex::new(Prober::new(primary.clone()))),
        }
    }

    /// The client id once known (waits for the `CLIENT ID` reply).
    async fn resolved_client_id(&self) -> Option<i64> {
        let mut rx = self.client_id.clone();
        let resolved = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.flatten(),
            Err(_) => None,
        };
        resolved
    }

    /// Takes the locks `command` needs if they are free.
    pub fn prepare(&self, plan: &mut LockPlan, command: &Command, verdict: &Verdict) -> Prepared {
        let Some(need) = plan.need(command, verdict) else {
            return Prepared::Ready(None);
        };
        self.shared.sync.note(&need, command);
        let client_id = *self.client_id.borrow();
        if is_pop(verdict, &need) {
            match client_id {
                None => return Prepared::Wait(need),
                Some(None) => return Prepared::Ready(None),
                Some(Some(_)) => {}
            }
        }
        match self.shared.locks.try_acquire(self.conn, need) {
            Ok(locks) => Prepared::Ready(Some(self.hold(verdict, locks, client_id.flatten()))),
            Err(need) => Prepared::Wait(need),
        }
    }

    /// Waits for the locks `prepare` could not take.
    pub async fn wait(&self, verdict: &Verdict, need: Need) -> Option<Hold> {
        let client_id = if is_pop(verdict, &need) {
            Some(self.resolved_client_id().await?)
        } else {
            None
        };
        let waiting = Instant::now();
        let locks = self.shared.locks.acquire(self.conn, need).await;
        self.shared
            .lock_wait_seconds
            .observe(waiting.elapsed().as_secs_f64());
        Some(self.hold(verdict, locks, client_id))
    }

    fn hold(&self, verdict: &Verdict, locks: LockGuard, client_id: Option<i64>) -> Hold {
        match client_id {
            Some(client_id)
                if verdict.spec.is_some_and(|s| s.is_blocking()) && !locks.keys().is_empty() =>
            {
                let ticket = self
                    .shared
                    .pops
                    .register(locks.keys(), self.conn, client_id);
                Hold::Pop(BlockingPop {
                    ticket,
                    locks: Arc::new(Mutex::new(Some(locks))),
                })
            }
            _ => Hold::Locks(locks),
        }
    }

    /// What [`watch_pop`](Self::watch_pop) needs of a blocking pop, taken
    /// before the command goes to the reply side.
    pub fn pop_watch(hold: Option<&Hold>) -> Option<PopWatch> {
        match hold? {
            Hold::Pop(p) => Some(PopWatch(p.locks.clone(), p.ticket.state().clone())),
            Hold::Locks(_) => None,
        }
    }

    /// After a blocking pop was sent: gives its locks back once the primary
    /// reports it blocked (if it is answered first, capture gives them back).
    pub fn watch_pop(&self, watch: PopWatch) {
        let PopWatch(locks, state) = watch;
        let prober = self.prober.clone();
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(1);
            loop {
                let holding = locks.lock().unwrap_or_else(|e| e.into_inner()).is_some();
                if !holding || state.is_done() {
                    return;
                }
                match prober.lock().await.is_blocked(state.client_id).await {
                    Ok(false) => {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(MAX_PROBE_PAUSE);
                    }
                    Ok(true) => {
                        state.park();
                        if let Some(guard) =
                            locks.lock().unwrap_or_else(|e| e.into_inner()).as_mut()
                        {
                            guard.park();
                        }
                        return;
                    }
                    Err(e) => {
                        log::warn!("client id {}: cannot probe a blocking pop ({e}); its order with writes to its keys is not guaranteed", state.client_id);
                        break;
                    }
                }
            }
            locks.lock().unwrap_or_else(|e| e.into_inner()).take();
        });
    }

    /// Before a blocking pop's reply is captured: a pop that was parked and
    /// then served waits until the write that served it was captured.
    pub async fn before_capture(&self, hold: Option<&Hold>, reply: &[u8]) {
        let Some(Hold::Pop(pop)) = hold else {
            return;
        };
        let pop = pop.ticket.state();
        let timed_out = matches!(reply, b"*-1\r\n" | b"_\r\n" | b"$-1\r\n");
        if pop.is_parked() && !timed_out && !pop.fed(SERVED_POP_WAIT).await {
            log::warn!(
                "client {}: the write that served a blocking pop was not captured within {SERVED_POP_WAIT:?}; their order is not guaranteed",
                self.conn
            );
        }
    }

    /// The client hung up while its command blocks on the primary: ends the
    /// block as Redis would have at the disconnect, so the command takes
    /// nothing (a pop served meanwhile still answers, and is captured).
    /// Without it the connection would stay blocked and could take an
    /// element no client receives.
    pub async fn unblock_abandoned(&self) {
        let Some(id) = self.resolved_client_id().await else {
            return;
        };
        if let Err(e) = self.prober.lock().await.unblock(id).await {
            log::warn!(
                "client {}: cannot end the block of its abandoned command ({e}); the primary keeps it blocked until it is served",
                self.conn
            );
        }
    }

    /// Remembers credentials the client used successfully, for the probe
    /// connection.
    pub async fn observe(&self, command: &Command, reply: &[u8]) {
        if (command.is("AUTH") || command.is("HELLO")) && !frame::is_error(reply) {
            self.prober.lock().await.observe_auth(command);
        }
    }

    /// Whether giving back `locks` may wait for blocking pops of other
    /// sessions (see [`release`](Self::release)); one relaxed load when no
    /// pop is in flight.
    pub fn may_wait_for_pops(&self, locks: &LockGuard) -> bool {
        !self
            .shared
            .pops
            .pending_on(locks.keys(), self.conn)
            .is_empty()
    }

    /// Gives back a write's locks, after waiting for pops of other sessions
    /// that the write served (so their records follow the write's and come
    /// before any later write to the key).
    pub async fn release(&self, locks: LockGuard) {
        for pop in self.shared.pops.pending_on(locks.keys(), self.conn) {
            if pop.is_done() {
                continue;
            }
            let blocked = self.prober.lock().await.is_blocked(pop.client_id).await;
            if matches!(blocked, Ok(true)) {
                continue;
            }
            pop.feed();
            if !pop.finished(SERVED_POP_WAIT).await {
                log::warn!(
                    "client {}: a blocking pop (client id {}) was not captured within {SERVED_POP_WAIT:?}; its order with later writes is not guaranteed",
                    self.conn,
                    pop.client_id
                );
            }
        }
        drop(locks);
    }
}

/// Whether `need` is a blocking pop's: its locks are given back while it
/// blocks.
fn is_pop(verdict: &Verdict, need: &Need) -> bool {
    matches!(need, Need::Keys(_)) && verdict.spec.is_some_and(|s| s.is_blocking())
}

/// Where the reply side delivers the answer to the session's `CLIENT ID`.
pub(crate) struct ClientId(watch::Sender<Option<Option<i64>>>);

impl ClientId {
    /// Takes the first reply of the connection, the one to `CLIENT ID`.
    pub fn set(self, reply: &Bytes) {
        let id = match frame::decode(reply) {
            Ok(Some((Frame::Integer(id), _))) => Some(id),
            _ => None,
        };
        let _ = self.0.send(Some(id));
    }
}
