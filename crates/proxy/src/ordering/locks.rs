//! Key locks: making the primary's order of conflicting writes observable.
//!
//! Redis executes commands from different connections in an order the proxy
//! cannot see from the order replies arrive. Locks make it visible: a write
//! takes the locks of the (database, key) pairs it touches before it is
//! forwarded and gives them back after its reply was captured and handed to
//! the senders. Two writes to one key from different clients therefore never
//! run concurrently, and their records leave in the order the primary ran
//! them.
//!
//! - Locks are re-entrant per session: a client pipelining writes to one key
//!   never waits for itself.
//! - A command takes all its locks at once or none (no hold-and-wait), and a
//!   lock is only ever held by a command already sent to the primary, whose
//!   reply needs no other lock: no deadlock is possible.
//! - Writes whose keys are unknown (FLUSHALL, SWAPDB, scripts without
//!   declared keys, ...) take the barrier, which excludes every other
//!   session's writes. A barrier that waits goes first: no new key lock is
//!   given to another session meanwhile, so a steady stream of writes cannot
//!   starve it (the locks it waits for belong to commands already sent,
//!   whose replies need no lock).
//!
//! One mutex guards the table, and one `Notify` wakes waiters on a
//! release that freed a lock while any wait; waiters re-check. Contention costs a wake-up per
//! release per waiter, which only matters when many clients write the same
//! keys. Every write takes and gives back its keys here, so the table hashes
//! with foldhash (randomly seeded, as keys come from clients) rather than
//! SipHash: in a profile of SET -P 16 the table's SipHash lookups were about
//! 4 % of the proxy's CPU.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use foldhash::fast::RandomState;

use bytes::Bytes;
use tokio::sync::Notify;

/// What a command needs to hold while it runs on the primary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Need {
    /// These (database, key) pairs; sorted and without duplicates.
    Keys(Vec<(u32, Bytes)>),
    /// Every key of every database.
    Barrier,
}

#[derive(Debug)]
struct Holder {
    session: u64,
    count: usize,
}

#[derive(Debug, Default)]
struct Table {
    keys: HashMap<(u32, Bytes), Holder, RandomState>,
    barrier: Option<Holder>,
    /// How many key locks each session holds (for the barrier's check).
    per_session: HashMap<u64, usize, RandomState>,
    /// Sessions waiting for the barrier, and how many times each.
    barriers_waiting: HashMap<u64, usize, RandomState>,
    /// A planned failover: no lock is given to anyone, so no write reaches
    /// the primary, however far it got (a queued transaction's `EXEC`, a
    /// write behind its session's blocked pop, one waiting here already).
    paused: bool,
}

impl Table {
    fn free_for(&self, session: u64, need: &Need) -> bool {
        if self.paused {
            return false;
        }
        if self.barrier.as_ref().is_some_and(|b| b.session != session) {
            return false;
        }
        match need {
            Need::Keys(keys) => {
                self.barriers_waiting.keys().all(|s| *s == session)
                    && keys
                        .iter()
                        .all(|k| self.keys.get(k).is_none_or(|h| h.session == session))
            }
            Need::Barrier => self
                .per_session
                .iter()
                .all(|(s, n)| *s == session || *n == 0),
        }
    }

    fn take(&mut self, session: u64, need: &Need) {
        match need {
            Need::Keys(keys) => {
                for k in keys {
                    self.keys
                        .entry(k.clone())
                        .or_insert(Holder { session, count: 0 })
                        .count += 1;
                }
                *self.per_session.entry(session).or_default() += keys.len();
            }
            Need::Barrier => {
                self.barrier
                    .get_or_insert(Holder { session, count: 0 })
                    .count += 1
            }
        }
    }

    /// Gives `need` back; `true` when a lock became free (a session's
    /// re-entrant hold only counted down frees nothing another could take).
    fn give_back(&mut self, session: u64, need: &Need) -> bool {
        let mut freed = false;
        match need {
            Need::Keys(keys) => {
                for k in keys {
                    if let Some(h) = self.keys.get_mut(k) {
                        h.count -= 1;
                        if h.count == 0 {
                            self.keys.remove(k);
                            freed = true;
                        }
                    }
                }
                if let Some(n) = self.per_session.get_mut(&session) {
                    *n -= keys.len();
                    if *n == 0 {
                        self.per_session.remove(&session);
                    }
                }
            }
            Need::Barrier => {
                if let Some(b) = self.barrier.as_mut() {
                    b.count -= 1;
                    if b.count == 0 {
                        self.barrier = None;
                        freed = true;
                    }
                }
            }
        }
        freed
    }
}

/// The lock table shared by every session of a proxy.
#[derive(Debug, Default)]
pub(crate) struct KeyLocks {
    table: Mutex<Table>,
    released: Notify,
    /// Sessions in [`acquire`](KeyLocks::acquire)'s wait: a release wakes
    /// them only when there are some.
    waiting: AtomicUsize,
}

/// Locks held by one command; released when dropped.
#[derive(Debug)]
pub(crate) struct LockGuard {
    locks: Arc<KeyLocks>,
    session: u64,
    need: Need,
}

impl LockGuard {
    /// The keys held (empty for the barrier).
    pub fn keys(&self) -> &[(u32, Bytes)] {
        match &self.need {
            Need::Keys(keys) => keys,
            Need::Barrier => &[],
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let freed = self.locks.table().give_back(self.session, &self.need);
        // A waiter counts itself before it looks at the table, so one that
        // found this lock taken is counted by now (the table's mutex
        // orders the two). Only a lock that became free can let one go: a
        // session pipelining sixteen writes to a hot key wakes the others
        // once, not sixteen times.
        if freed && self.locks.waiting.load(Ordering::SeqCst) > 0 {
            self.locks.released.notify_waiters();
        }
    }
}

impl KeyLocks {
    pub fn new() -> Arc<KeyLocks> {
        Arc::new(KeyLocks::default())
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether no write holds a lock: none is between being forwarded and
    /// having its record handed to the senders.
    pub fn is_idle(&self) -> bool {
        let table = self.table();
        table.keys.is_empty() && table.barrier.is_none()
    }

    /// Gives no lock to anyone from now on (`true`), or again (`false`).
    /// Under the table's mutex: once it returns, no write takes a lock
    /// before the pause ends, so "paused and idle" stays true.
    pub fn pause(&self, paused: bool) {
        self.table().paused = paused;
        if !paused {
            self.released.notify_waiters();
        }
    }

    /// Takes `need` for `session` if no other session holds any of it;
    /// gives it back otherwise.
    pub fn try_acquire(self: &Arc<Self>, session: u64, need: Need) -> Result<LockGuard, Need> {
        let mut table = self.table();
        if !table.free_for(session, &need) {
            return Err(need);
        }
        table.take(session, &need);
        Ok(LockGuard {
            locks: self.clone(),
            session,
            need,
        })
    }

    /// Waits until `need` can be taken for `session`, then takes it.
    pub async fn acquire(self: &Arc<Self>, session: u64, need: Need) -> LockGuard {
        let mut need = match self.try_acquire(session, need) {
            Ok(held) => return held,
            Err(need) => need,
        };
        let _counted = Waiting::enter(self);
        let _waiting = (need == Need::Barrier).then(|| BarrierWait::enter(self, session));
        loop {
            let notified = self.released.notified();
            tokio::pin!(notified);
            // Registered before the check, so a release between the check
            // and the wait is not missed.
            notified.as_mut().enable();
            need = match self.try_acquire(session, need) {
                Ok(held) => return held,
                Err(need) => need,
            };
            notified.await;
        }
    }
}

/// A session counted in [`KeyLocks::waiting`] while it waits.
struct Waiting<'a>(&'a KeyLocks);

impl<'a> Waiting<'a> {
    fn enter(locks: &'a KeyLocks) -> Waiting<'a> {
        locks.waiting.fetch_add(1, Ordering::SeqCst);
        Waiting(locks)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A session waiting for the barrier, registered until the wait ends (or
/// is dropped).
struct BarrierWait<'a> {
    locks: &'a KeyLocks,
    session: u64,
}

impl<'a> BarrierWait<'a> {
    fn enter(locks: &'a KeyLocks, session: u64) -> BarrierWait<'a> {
        *locks.table().barriers_waiting.entry(session).or_default() += 1;
        BarrierWait { locks, session }
    }
}

impl Drop for BarrierWait<'_> {
    fn drop(&mut self) {
        let mut table = self.locks.table();
        if let Some(n) = table.barriers_waiting.get_mut(&self.session) {
            *n -= 1;
            if *n == 0 {
                table.barriers_waiting.remove(&self.session);
            }
        }
        drop(table);
        // Key locks refused while it waited may be free now.
        self.locks.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(ks: &[&str]) -> Need {
        Need::Keys(
            ks.iter()
                .map(|k| (0, Bytes::copy_from_slice(k.as_bytes())))
                .collect(),
        )
    }

    #[test]
    fn same_session_reenters_other_session_waits() {
        let locks = KeyLocks::new();
        let a1 = locks.try_acquire(1, keys(&["k"])).expect("free");
        let a2 = locks.try_acquire(1, keys(&["k"])).expect("re-entrant");
        assert!(locks.try_acquire(2, keys(&["k"])).is_err());
        assert!(locks.try_acquire(2, keys(&["other"])).is_ok());
        drop(a1);
        assert!(
            locks.try_acquire(2, keys(&["k"])).is_err(),
            "still held once"
        );
        drop(a2);
        assert!(locks.try_acquire(2, keys(&["k"])).is_ok());
    }

    #[test]
    fn all_or_nothing() {
        let locks = KeyLocks::new();
        let _b = locks.try_acquire(2, keys(&["b"])).expect("free");
        assert!(locks.try_acquire(1, keys(&["a", "b"])).is_err());
        assert!(
            locks.try_acquire(3, keys(&["a"])).is_ok(),
            "a was not taken by the failed attempt"
        );
    }

    #[test]
    fn barrier_excludes_other_sessions() {
        let locks = KeyLocks::new();
        let k = locks.try_acquire(1, keys(&["k"])).expect("free");
        assert!(locks.try_acquire(2, Need::Barrier).is_err());
        let own = locks
            .try_acquire(1, Need::Barrier)
            .expect("own keys do not block");
        assert!(
            locks.try_acquire(3, keys(&["x"])).is_err(),
            "barrier blocks others"
        );
        drop(own);
        drop(k);
        let _b = locks.try_acquire(2, Need::Barrier).expect("free again");
    }

    #[test]
    fn databases_are_separate() {
        let locks = KeyLocks::new();
        let k = Bytes::from_static(b"k");
        let _a = locks
            .try_acquire(1, Need::Keys(vec![(0, k.clone())]))
            .expect("free");
        assert!(locks.try_acquire(2, Need::Keys(vec![(1, k)])).is_ok());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_waiting_barrier_goes_before_new_key_locks() {
        let locks = KeyLocks::new();
        let held = locks.try_acquire(1, keys(&["a"])).expect("free");
        let l2 = locks.clone();
        let barrier = tokio::spawn(async move { l2.acquire(2, Need::Barrier).await.session });
        tokio::task::yield_now().await;
        assert!(
            locks.try_acquire(3, keys(&["b"])).is_err(),
            "no new key lock while a barrier waits"
        );
        assert!(
            locks.try_acquire(2, keys(&["b"])).is_ok(),
            "the waiting session's own keys are not held back"
        );
        drop(held);
        assert_eq!(barrier.await.expect("join"), 2);
        assert!(locks.try_acquire(3, keys(&["b"])).is_ok(), "free again");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn waiter_wakes_on_release() {
        let locks = KeyLocks::new();
        let held = locks.try_acquire(1, keys(&["k"])).expect("free");
        let l2 = locks.clone();
        let waiter = tokio::spawn(async move { l2.acquire(2, keys(&["k"])).await.session });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(held);
        assert_eq!(waiter.await.expect("join"), 2);
    }

    #[test]
    fn only_the_last_of_a_sessions_holds_frees_a_key() {
        let mut table = Table::default();
        table.take(1, &keys(&["a"]));
        table.take(1, &keys(&["a"]));
        assert!(!table.free_for(2, &keys(&["a"])));
        assert!(!table.give_back(1, &keys(&["a"])), "still held once");
        assert!(!table.free_for(2, &keys(&["a"])));
        assert!(table.give_back(1, &keys(&["a"])), "free now");
        assert!(table.free_for(2, &keys(&["a"])));
        table.take(1, &Need::Barrier);
        assert!(table.give_back(1, &Need::Barrier));
    }
}
