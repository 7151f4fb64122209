//! A session's part in keeping the primary's order: it takes key locks
//! before forwarding writes, tracks its blocking pops, and before giving back
//! a write's locks waits for any pop that write served.
//!
//! The mechanisms live in [`locks`](crate::locks), [`pops`](crate::pops) and
//! [`probe`](crate::probe); this module applies them to one connection.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use remoteback_protocol::frame::{self, Frame};
use remoteback_protocol::Command;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::watch;

use crate::locks::{Held, KeyLocks, Need};
use crate::order::Order;
use crate::pending::InFlight;
use crate::pops::{BlockingPop, PopState, Pops};
use crate::probe::Prober;
use crate::sender::Senders;

/// Longest a write keeps its locks waiting for a pop it served to be
/// captured; past it the write goes on and the order is logged as at risk.
const SERVED_POP_WAIT: Duration = Duration::from_secs(2);
/// Longest pause between two probes of a pop that is neither blocked nor
/// answered yet.
const MAX_PROBE_PAUSE: Duration = Duration::from_millis(50);

/// What the proxy's sessions share for ordering.
pub struct OrderingShared {
    pub locks: Arc<KeyLocks>,
    pub pops: Arc<Pops>,
}

/// One session's ordering state (cheap to clone for the reply side).
#[derive(Clone)]
pub struct Ordering {
    conn: u64,
    shared: Arc<OrderingShared>,
    /// The primary's id for this session's connection: `None` until the
    /// reply to `CLIENT ID` arrived, then `Some(None)` if it was refused (no
    /// probing possible: blocking pops take no locks).
    client_id: watch::Receiver<Option<Option<i64>>>,
    prober: Arc<tokio::sync::Mutex<Prober>>,
}

/// A sent blocking pop's locks and state, for its watcher.
pub struct PopWatch(Arc<Mutex<Option<Held>>>, Arc<PopState>);

impl PopWatch {
    pub fn state(&self) -> Arc<PopState> {
        self.1.clone()
    }
}

/// Whether a command can be forwarded now.
pub enum Prepared {
    Ready,
    /// Another session holds some of these locks.
    Wait(Need),
}

impl Ordering {
    /// Asks the connection's client id (`CLIENT ID`) ahead of the client's
    /// first command; the reply side hands the answer to `ClientId::set`.
    pub async fn start(
        conn: u64,
        shared: Arc<OrderingShared>,
        upstream: &mut OwnedWriteHalf,
        addr: &str,
    ) -> std::io::Result<(Ordering, ClientId)> {
        upstream
            .write_all(&Command::from_parts(["CLIENT", "ID"]).to_resp())
            .await?;
        let (tx, rx) = watch::channel(None);
        let ordering = Ordering {
            conn,
            shared,
            client_id: rx,
            prober: Arc::new(tokio::sync::Mutex::new(Prober::new(addr))),
        };
        Ok((ordering, ClientId(tx)))
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

    /// Takes the locks `entry` needs if they are free.
    pub fn prepare(&self, order: &mut Order, entry: &mut InFlight, senders: &Senders) -> Prepared {
        let Some(need) = order.need(&entry.command, entry.spec, senders) else {
            return Prepared::Ready;
        };
        let client_id = *self.client_id.borrow();
        if self.is_pop(entry, &need) {
            match client_id {
                None => return Prepared::Wait(need),
                Some(None) => return Prepared::Ready,
                Some(Some(_)) => {}
            }
        }
        match self.shared.locks.try_acquire(self.conn, &need) {
            Some(held) => {
                self.attach(entry, held, client_id.flatten());
                Prepared::Ready
            }
            None => Prepared::Wait(need),
        }
    }

    /// Waits for the locks `prepare` could not take.
    pub async fn wait(&self, entry: &mut InFlight, need: Need) {
        let client_id = if self.is_pop(entry, &need) {
            match self.resolved_client_id().await {
                Some(id) => Some(id),
                None => return,
            }
        } else {
            None
        };
        let held = self.shared.locks.acquire(self.conn, need).await;
        self.attach(entry, held, client_id);
    }

    fn is_pop(&self, entry: &InFlight, need: &Need) -> bool {
        matches!(need, Need::Keys(_)) && entry.spec.is_some_and(|s| s.is_blocking())
    }

    fn attach(&self, entry: &mut InFlight, held: Held, client_id: Option<i64>) {
        match client_id {
            Some(client_id)
                if entry.spec.is_some_and(|s| s.is_blocking()) && !held.keys().is_empty() =>
            {
                let ticket = self.shared.pops.register(held.keys(), self.conn, client_id);
                entry.blocking = Some(BlockingPop {
                    ticket,
                    held: Arc::new(Mutex::new(Some(held))),
                });
            }
            _ => entry.held = Some(held),
        }
    }

    /// What [`watch_pop`](Self::watch_pop) needs of a blocking pop, taken
    /// before the entry goes to the reply side.
    pub fn pop_watch(entry: &InFlight) -> Option<PopWatch> {
        entry
            .blocking
            .as_ref()
            .map(|p| PopWatch(p.held.clone(), p.ticket.state().clone()))
    }

    /// After a blocking pop was sent: gives its locks back once the primary
    /// reports it blocked (if it is answered first, capture gives them back).
    pub fn watch_pop(&self, watch: PopWatch) {
        let PopWatch(held, state) = watch;
        let prober = self.prober.clone();
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(1);
            loop {
                let holding = held.lock().unwrap_or_else(|e| e.into_inner()).is_some();
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
                        break;
                    }
                    Err(e) => {
                        log::warn!("client id {}: cannot probe a blocking pop ({e}); its order with writes to its keys is not guaranteed", state.client_id);
                        break;
                    }
                }
            }
            held.lock().unwrap_or_else(|e| e.into_inner()).take();
        });
    }

    /// Before a blocking pop's reply is captured: a pop that was parked and
    /// then served waits until the write that served it was captured.
    pub async fn before_capture(&self, entry: &InFlight, reply: &[u8]) {
        let Some(pop) = entry.blocking.as_ref().map(|b| b.ticket.state()) else {
            return;
        };
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

    /// Gives back a write's locks, after waiting for pops of other sessions
    /// that the write served (so their records follow the write's and come
    /// before any later write to the key).
    pub async fn release(&self, held: Held) {
        for pop in self.shared.pops.pending_on(held.keys(), self.conn) {
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
        drop(held);
    }
}

/// Where the reply side delivers the answer to the session's `CLIENT ID`.
pub struct ClientId(watch::Sender<Option<Option<i64>>>);

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
