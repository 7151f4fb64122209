//! Blocking pops in flight, so that writes can keep their order with them.
//!
//! A blocking pop (BLPOP, BLMOVE, BZPOPMIN, ...) goes to Redis unchanged, so
//! Redis keeps its own semantics (FIFO fairness, timeouts, blocked clients in
//! INFO and CLIENT LIST). It cannot hold its key locks while blocked: the
//! write that would serve it needs them. Instead it is registered here while
//! in flight. Redis serves a blocked client right after the command that fed
//! its key, before any other command runs, so a write to a key with a pending
//! pop asks Redis whether that pop is still blocked ([`probe`](super::probe))
//! and, if it was served, lets the pop's record follow its own (`feed`) and
//! keeps its locks until the pop's record was captured. A served pop that had
//! been parked (blocked, locks given back) waits for that `feed` before its
//! record is captured, since its reply may reach the proxy before the
//! feeding write's. The extra round trip is paid only by writes to keys on
//! which a client is blocked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use super::locks::LockGuard;

/// One blocking pop in flight.
#[derive(Debug)]
pub(crate) struct PopState {
    pub session: u64,
    /// The Redis client id of the popping connection (`CLIENT ID`).
    pub client_id: i64,
    /// Its locks were given back because the primary reported it blocked.
    parked: AtomicBool,
    /// The write that served it was captured (set by that write).
    fed: AtomicBool,
    done: AtomicBool,
    notify: Notify,
}

impl PopState {
    /// Waits until the pop's reply was captured, at most `limit`; whether
    /// it was.
    pub async fn finished(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.done()).await.is_ok()
    }

    /// Waits until the pop's reply was captured.
    pub async fn done(&self) {
        self.until(&self.done).await
    }

    async fn until(&self, flag: &AtomicBool) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if flag.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// Marks the pop as blocked on the primary (its locks given back).
    pub fn park(&self) {
        self.parked.store(true, Ordering::Release);
    }

    pub fn is_parked(&self) -> bool {
        self.parked.load(Ordering::Acquire)
    }

    /// Called by the write that served the pop, once that write's record
    /// was captured: the pop's record may follow now.
    pub fn feed(&self) {
        self.fed.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Waits, at most `limit`, until the write that served this parked pop
    /// was captured; whether it was.
    pub async fn fed(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.until(&self.fed))
            .await
            .is_ok()
    }

    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }
}

/// A (database, key) pair.
type DbKey = (u32, Bytes);

/// Every pending blocking pop of the proxy, by (database, key).
#[derive(Debug, Default)]
pub(crate) struct BlockedPops {
    by_key: Mutex<HashMap<DbKey, Vec<Arc<PopState>>>>,
    /// How many pops are registered: lets writes skip the table when none.
    count: AtomicUsize,
}

/// A registered pop; dropping it (after its reply was captured) marks it
/// finished and wakes the writes waiting for it.
#[derive(Debug)]
pub(crate) struct PopTicket {
    pops: Arc<BlockedPops>,
    keys: Vec<(u32, Bytes)>,
    state: Arc<PopState>,
}

impl PopTicket {
    pub fn state(&self) -> &Arc<PopState> {
        &self.state
    }
}

impl Drop for PopTicket {
    fn drop(&mut self) {
        self.state.done.store(true, Ordering::Release);
        self.state.notify.notify_waiters();
        let mut map = self.pops.by_key.lock().unwrap_or_else(|e| e.into_inner());
        for key in &self.keys {
            if let Some(list) = map.get_mut(key) {
                list.retain(|s| !Arc::ptr_eq(s, &self.state));
                if list.is_empty() {
                    map.remove(key);
                }
            }
        }
        self.pops.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A blocking pop sent to the primary: its registration, and the key locks
/// it holds until the primary either answered it or reported it blocked
/// (whichever comes first releases them).
#[derive(Debug)]
pub(crate) struct BlockingPop {
    pub ticket: PopTicket,
    pub locks: Arc<Mutex<Option<LockGuard>>>,
}

impl Drop for BlockingPop {
    /// Runs after the pop's reply was captured: the locks go first, then
    /// the ticket (field drop) tells waiting writes the pop is recorded.
    fn drop(&mut self) {
        self.locks.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

impl BlockedPops {
    pub fn new() -> Arc<BlockedPops> {
        Arc::new(BlockedPops::default())
    }

    /// Registers a pop of `session` (Redis client `client_id`) on `keys`.
    pub fn register(
        self: &Arc<Self>,
        keys: &[(u32, Bytes)],
        session: u64,
        client_id: i64,
    ) -> PopTicket {
        let state = Arc::new(PopState {
            session,
            client_id,
            parked: AtomicBool::new(false),
            fed: AtomicBool::new(false),
            done: AtomicBool::new(false),
            notify: Notify::new(),
        });
        let mut map = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        for key in keys {
            map.entry(key.clone()).or_default().push(state.clone());
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        PopTicket {
            pops: self.clone(),
            keys: keys.to_vec(),
            state,
        }
    }

    /// The pops of other sessions pending on any of `keys`.
    pub fn pending_on(&self, keys: &[(u32, Bytes)], session: u64) -> Vec<Arc<PopState>> {
        if self.count.load(Ordering::Relaxed) == 0 {
            return Vec::new();
        }
        let map = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        let mut found: Vec<Arc<PopState>> = Vec::new();
        for key in keys {
            for s in map.get(key).into_iter().flatten() {
                if s.session != session && !found.iter().any(|f| Arc::ptr_eq(f, s)) {
                    found.push(s.clone());
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> (u32, Bytes) {
        (0, Bytes::copy_from_slice(k.as_bytes()))
    }

    #[test]
    fn pending_pops_of_other_sessions_only_until_captured() {
        let pops = BlockedPops::new();
        let ticket = pops.register(&[key("q"), key("r")], 1, 41);
        assert!(
            pops.pending_on(&[key("q")], 1).is_empty(),
            "own pops do not count"
        );
        assert_eq!(pops.pending_on(&[key("q"), key("r")], 2).len(), 1);
        assert!(pops.pending_on(&[key("other")], 2).is_empty());
        let state = ticket.state().clone();
        drop(ticket);
        assert!(state.is_done());
        assert!(pops.pending_on(&[key("q")], 2).is_empty());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn writers_wait_for_the_served_pop() {
        let pops = BlockedPops::new();
        let ticket = pops.register(&[key("q")], 1, 41);
        let state = pops.pending_on(&[key("q")], 2).remove(0);
        assert!(!state.finished(Duration::from_millis(10)).await);
        let waiter = tokio::spawn(async move { state.finished(Duration::from_secs(5)).await });
        tokio::task::yield_now().await;
        drop(ticket);
        assert!(waiter.await.expect("join"));
    }
}
