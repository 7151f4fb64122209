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
//!   never waits for itself, unless another session waits for that key (a
//!   holder that takes a key again and again, such as the connection
//!   sessions share, would otherwise keep it from everyone else).
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
//! One mutex guards the table. A command that cannot take its locks joins
//! a queue, and a release that frees a lock grants them, under that mutex,
//! to the queued commands that can now go, in the order they queued; each
//! granted waiter is woken alone, already holding its locks. (Not strictly
//! first come first served: a command whose locks are all free takes them
//! though an earlier one, waiting for more keys, shares some; but a holder
//! never takes a key again past another session's wait for it.) Waking every
//! waiter to look again, as an earlier version did, cost fifty wake-ups
//! and fifty turns of the mutex per release when fifty clients wrote one
//! hot key. Every write takes and gives back its keys here, so the table
//! hashes with foldhash (randomly seeded, as keys come from clients) rather
//! than SipHash: in a profile of SET -P 16 the table's SipHash lookups were
//! about 4 % of the proxy's CPU.

use std::collections::{HashMap, VecDeque};
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

/// A command waiting in [`KeyLocks::acquire`] for what it needs.
#[derive(Debug)]
struct Queued {
    ticket: u64,
    session: u64,
    need: Need,
    /// Woken once, when the locks were taken for it.
    granted: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Table {
    keys: HashMap<(u32, Bytes), Holder, RandomState>,
    barrier: Option<Holder>,
    /// Sessions waiting for the barrier, and how many times each (the
    /// barrier entries of `queue`, counted for `free_for`).
    barriers_waiting: HashMap<u64, usize, RandomState>,
    /// Commands waiting, in the order they asked.
    queue: VecDeque<Queued>,
    next_ticket: u64,
    /// Keys with a blocking pop parked on them (blocked on the primary,
    /// its locks given back), and how many. A holder does not take such a
    /// key again while it holds it: each write that may serve the pop is
    /// answered, and its pop captured, before the next goes, since the
    /// primary's word on the pop ("still blocked?") is only true of the
    /// writes that ran so far.
    parked: HashMap<(u32, Bytes), usize, RandomState>,
    /// A planned failover: no lock is given to anyone, so no write reaches
    /// the primary, however far it got (a queued transaction's `EXEC`, a
    /// write behind its session's blocked pop, one waiting here already).
    paused: bool,
}

impl Table {
    fn free_for(&self, session: u64, need: &Need) -> bool {
        self.free_behind(session, need, &self.queue)
    }

    /// Whether `need` is free for `session` with `ahead` queued before it.
    fn free_behind(&self, session: u64, need: &Need, ahead: &VecDeque<Queued>) -> bool {
        if self.paused {
            return false;
        }
        if self.barrier.as_ref().is_some_and(|b| b.session != session) {
            return false;
        }
        match need {
            Need::Keys(keys) => {
                self.barriers_waiting.keys().all(|s| *s == session)
                    && keys.iter().all(|k| match self.keys.get(k) {
                        None => true,
                        // A re-entrant take does not pass another
                        // session's wait for the key: the shared connection
                        // would keep a hot key for ever, taking it again
                        // and again.
                        Some(h) => {
                            h.session == session
                                && !awaited_by_other(ahead, k, session)
                                && !self.parked.contains_key(k)
                        }
                    })
            }
            // Rare next to key locks: looking at the keys held (a cost that
            // grows with them) beats counting each session's at every write.
            // Nor does a barrier pass another session's queued barrier: the
            // shared connection, taking it again and again, would keep
            // every other session's writes and the sync's waiting.
            Need::Barrier => {
                self.keys.values().all(|h| h.session == session)
                    && !ahead
                        .iter()
                        .any(|q| q.session != session && q.need == Need::Barrier)
            }
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
            }
            Need::Barrier => {
                self.barrier
                    .get_or_insert(Holder { session, count: 0 })
                    .count += 1
            }
        }
    }

    /// Takes `need` for `session` if no other session holds any of it.
    fn take_if_free(&mut self, session: u64, need: &Need) -> bool {
        let free = self.free_for(session, need);
        if free {
            self.take(session, need);
        }
        free
    }

    /// Gives `need` back; `true` when a lock became free (a session's
    /// re-entrant hold only counted down frees nothing another could take).
    fn give_back(&mut self, need: &Need) -> bool {
        let mut freed = false;
        match need {
            Need::Keys(keys) => {
                // One lookup for the usual single hold; a re-entrant one
                // goes back in with its count down.
                for k in keys {
                    if let Some((key, mut h)) = self.keys.remove_entry(k) {
                        h.count -= 1;
                        if h.count == 0 {
                            freed = true;
                        } else {
                            self.keys.insert(key, h);
                        }
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

    fn enqueue(&mut self, session: u64, need: Need, granted: Arc<Notify>) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        if need == Need::Barrier {
            *self.barriers_waiting.entry(session).or_default() += 1;
        }
        self.queue.push_back(Queued {
            ticket,
            session,
            need,
            granted,
        });
        ticket
    }

    /// Takes `ticket` out of the queue; `false` if it is not there (it was
    /// granted).
    fn dequeue(&mut self, ticket: u64) -> bool {
        let Some(at) = self.queue.iter().position(|q| q.ticket == ticket) else {
            return false;
        };
        let queued = self.queue.remove(at).expect("found");
        self.forget_barrier_wait(&queued);
        true
    }

    fn forget_barrier_wait(&mut self, queued: &Queued) {
        if queued.need != Need::Barrier {
            return;
        }
        if let Some(n) = self.barriers_waiting.get_mut(&queued.session) {
            *n -= 1;
            if *n == 0 {
                self.barriers_waiting.remove(&queued.session);
            }
        }
    }

    /// Takes the locks of every queued command that can now go, in queue
    /// order, and collects the waiters to wake (once the mutex is let go).
    /// One pass suffices: a grant takes locks, which lets no one go, and
    /// the barrier wait it may end is a barrier now held, which excludes
    /// at least what its wait did. The pass looks at every waiter, not
    /// only those of the keys freed: a hot key's fifty waiters cost fifty
    /// lookups here, against fifty wake-ups before.
    fn grant(&mut self, wake: &mut Vec<Arc<Notify>>) {
        if self.paused || self.queue.is_empty() {
            return;
        }
        let queue = std::mem::take(&mut self.queue);
        let mut kept = VecDeque::with_capacity(queue.len());
        for q in queue {
            if !self.free_behind(q.session, &q.need, &kept) {
                kept.push_back(q);
                continue;
            }
            self.take(q.session, &q.need);
            self.forget_barrier_wait(&q);
            wake.push(q.granted.clone());
        }
        self.queue = kept;
    }
}

/// Whether a command of another session in `queue` waits for `key`.
/// Looked at only when some command waits: the queue is empty most of the
/// time.
fn awaited_by_other(queue: &VecDeque<Queued>, key: &(u32, Bytes), session: u64) -> bool {
    queue.iter().any(|q| {
        q.session != session
            && match &q.need {
                Need::Keys(keys) => keys.contains(key),
                Need::Barrier => false,
            }
    })
}

/// The lock table shared by every session of a proxy.
#[derive(Debug, Default)]
pub(crate) struct KeyLocks {
    table: Mutex<Table>,
}

/// Locks held by one command; released when dropped.
#[derive(Debug)]
pub(crate) struct LockGuard {
    locks: Arc<KeyLocks>,
    need: Need,
    /// Given back as a parked blocking pop's ([`park`](Self::park)).
    parked: bool,
}

impl LockGuard {
    /// The keys held (empty for the barrier).
    pub fn keys(&self) -> &[(u32, Bytes)] {
        match &self.need {
            Need::Keys(keys) => keys,
            Need::Barrier => &[],
        }
    }

    /// A blocking pop's locks once the primary reported it blocked: given
    /// back (the write that serves it needs them), its keys marked parked
    /// until the guard is dropped, after the pop's capture.
    pub fn park(&mut self) {
        if self.parked {
            return;
        }
        self.parked = true;
        let need = &self.need;
        self.locks.change(|table| {
            let freed = table.give_back(need);
            if let Need::Keys(keys) = need {
                for k in keys {
                    *table.parked.entry(k.clone()).or_default() += 1;
                }
            }
            freed
        });
    }
}

impl Drop for LockGuard {
    /// Only a lock that became free can let a waiter go: a session
    /// pipelining sixteen writes to a hot key looks at the queue once, not
    /// sixteen times.
    fn drop(&mut self) {
        if matches!(&self.need, Need::Keys(keys) if keys.is_empty()) {
            return;
        }
        if !self.parked {
            self.locks.change(|table| table.give_back(&self.need));
            return;
        }
        // A take of its keys again may have waited for this.
        self.locks.change(|table| {
            for k in self.keys() {
                if let Some(n) = table.parked.get_mut(k) {
                    *n -= 1;
                    if *n == 0 {
                        table.parked.remove(k);
                    }
                }
            }
            true
        });
    }
}

impl LockGuard {
    /// Gives back all of `guards` (of one table) in one turn of its mutex
    /// and one grant pass: the shared connection's reader frees a read's
    /// worth of writes at once, where a mutex turn each showed in its
    /// profile.
    pub fn release_all(guards: &mut Vec<LockGuard>) {
        let Some(first) = guards.first() else {
            return;
        };
        let locks = first.locks.clone();
        locks.change(|table| {
            let mut freed = false;
            for guard in guards.iter_mut() {
                debug_assert!(Arc::ptr_eq(&guard.locks, &locks) && !guard.parked);
                freed |= table.give_back(&guard.need);
                // Given back: its drop has nothing left to do.
                guard.need = Need::Keys(Vec::new());
            }
            freed
        });
        guards.clear();
    }
}

impl KeyLocks {
    pub fn new() -> Arc<KeyLocks> {
        Arc::new(KeyLocks::default())
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn guard(self: &Arc<Self>, need: Need) -> LockGuard {
        LockGuard {
            locks: self.clone(),
            need,
            parked: false,
        }
    }

    /// Changes the table under its mutex; when `change` says it may have
    /// let queued commands go, grants them their locks, and wakes them once
    /// the mutex is let go.
    fn change(&self, change: impl FnOnce(&mut Table) -> bool) {
        let mut wake = Vec::new();
        {
            let mut table = self.table();
            if change(&mut table) {
                table.grant(&mut wake);
            }
        }
        for granted in wake {
            granted.notify_one();
        }
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
        self.change(|table| {
            table.paused = paused;
            !paused
        });
    }

    /// Takes `need` for `session` if no other session holds any of it;
    /// gives it back otherwise.
    pub fn try_acquire(self: &Arc<Self>, session: u64, need: Need) -> Result<LockGuard, Need> {
        if !self.table().take_if_free(session, &need) {
            return Err(need);
        }
        Ok(self.guard(need))
    }

    /// Waits until `need` can be taken for `session`, then takes it. A
    /// waiter queues behind those that asked before it; dropping the
    /// future leaves the queue (or gives back what was granted meanwhile).
    /// The locks are the future's from the moment they are granted, before
    /// it runs again: poll it until it is ready or drop it, never park it.
    pub async fn acquire(self: &Arc<Self>, session: u64, need: Need) -> LockGuard {
        let granted = Arc::new(Notify::new());
        let ticket = {
            let mut table = self.table();
            if table.take_if_free(session, &need) {
                drop(table);
                return self.guard(need);
            }
            table.enqueue(session, need.clone(), granted.clone())
        };
        let mut queued = InQueue {
            locks: self,
            ticket,
            need: Some(need),
        };
        // `notify_one` keeps its permit for a waiter not yet polling, so
        // a grant before this line is not missed; nothing else wakes it.
        granted.notified().await;
        let need = queued.need.take().expect("still queued");
        self.guard(need)
    }
}

/// A command in the queue, until it has its locks: dropped early (the
/// session ended while waiting) it leaves the queue, or gives back locks
/// granted after its last look.
struct InQueue<'a> {
    locks: &'a Arc<KeyLocks>,
    ticket: u64,
    /// `None` once the locks are in a [`LockGuard`].
    need: Option<Need>,
}

impl Drop for InQueue<'_> {
    fn drop(&mut self) {
        let Some(need) = self.need.take() else {
            return;
        };
        self.locks.change(|table| {
            if table.dequeue(self.ticket) {
                // A barrier that waited held back other sessions' keys.
                need == Need::Barrier
            } else {
                table.give_back(&need)
            }
        });
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

    #[tokio::test(flavor = "current_thread")]
    async fn a_holder_does_not_reenter_past_a_waiter() {
        let locks = reentry_waits_behind_session_2(keys(&["k"])).await;
        assert!(locks.try_acquire(2, keys(&["k"])).is_ok(), "free again");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_barrier_holder_does_not_take_it_again_past_another_barrier() {
        let locks = reentry_waits_behind_session_2(Need::Barrier).await;
        assert!(locks.is_idle());
    }

    /// Session 1 holds `need`, session 2 waits for it: session 1's next
    /// take of it queues behind session 2 and is granted after it.
    async fn reentry_waits_behind_session_2(need: Need) -> Arc<KeyLocks> {
        let locks = KeyLocks::new();
        let held = locks.try_acquire(1, need.clone()).expect("free");
        let waiter = spawn_acquire(&locks, 2, need.clone());
        tokio::task::yield_now().await;
        assert!(
            locks.try_acquire(1, need.clone()).is_err(),
            "session 2 waits for {need:?}: session 1 queues behind it"
        );
        let again = spawn_acquire(&locks, 1, need);
        tokio::task::yield_now().await;
        drop(held);
        let second = within(waiter).await.expect("join");
        assert!(!again.is_finished(), "granted in queue order");
        drop(second);
        drop(within(again).await.expect("join"));
        locks
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_grant_does_not_pass_an_earlier_waiter_for_the_key() {
        let locks = KeyLocks::new();
        let k = locks.try_acquire(1, keys(&["k"])).expect("free");
        let j = locks.try_acquire(1, keys(&["j"])).expect("free");
        let other = spawn_acquire(&locks, 2, keys(&["k"]));
        tokio::task::yield_now().await;
        let again = spawn_acquire(&locks, 1, keys(&["k"]));
        tokio::task::yield_now().await;
        // Freeing j runs a grant pass: session 1 must not re-enter k past
        // session 2.
        drop(j);
        tokio::task::yield_now().await;
        assert!(!again.is_finished(), "behind session 2");
        drop(k);
        drop(within(other).await.expect("join"));
        drop(within(again).await.expect("join"));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn guards_given_back_together_free_their_keys_and_wake_waiters() {
        let locks = KeyLocks::new();
        let mut held = vec![
            locks.try_acquire(1, keys(&["a"])).expect("free"),
            locks.try_acquire(1, keys(&["a"])).expect("re-entrant"),
            locks.try_acquire(1, keys(&["b"])).expect("free"),
        ];
        let waiter = spawn_acquire_release(&locks, 2, keys(&["a", "b"]));
        tokio::task::yield_now().await;
        LockGuard::release_all(&mut held);
        assert!(held.is_empty());
        assert_eq!(within(waiter).await.expect("join"), 2);
        assert!(locks.is_idle(), "nothing held twice or left behind");
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
    fn a_barrier_counts_every_hold_of_a_key() {
        let locks = KeyLocks::new();
        // Its own key, held twice, does not stop a session's barrier.
        let own = [
            locks.try_acquire(1, keys(&["k"])).expect("free"),
            locks.try_acquire(1, keys(&["k"])).expect("re-entrant"),
        ];
        drop(locks.try_acquire(1, Need::Barrier).expect("own keys only"));
        // Another session's barrier waits for both holds.
        let [first, second] = own;
        assert!(locks.try_acquire(2, Need::Barrier).is_err());
        drop(first);
        assert!(
            locks.try_acquire(2, Need::Barrier).is_err(),
            "still held once"
        );
        drop(second);
        assert!(locks.try_acquire(2, Need::Barrier).is_ok());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_key_with_a_parked_pop_is_not_taken_again_by_its_holder() {
        let locks = KeyLocks::new();
        let mut pop = locks.try_acquire(2, keys(&["k"])).expect("free");
        pop.park();
        let first = locks.try_acquire(1, keys(&["k"])).expect("given back");
        assert!(
            locks.try_acquire(1, keys(&["k"])).is_err(),
            "one write at a time to a key with a parked pop"
        );
        let second = spawn_acquire(&locks, 1, keys(&["k"]));
        tokio::task::yield_now().await;
        drop(first);
        drop(within(second).await.expect("join"));
        let again = locks.try_acquire(1, keys(&["k"])).expect("free");
        drop(pop);
        let _reentered = locks
            .try_acquire(1, keys(&["k"]))
            .expect("pop captured: re-entrant again");
        drop(again);
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
        let barrier = spawn_acquire_release(&locks, 2, Need::Barrier);
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
        assert_eq!(within(barrier).await.expect("join"), 2);
        assert!(locks.try_acquire(3, keys(&["b"])).is_ok(), "free again");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn waiter_wakes_on_release() {
        let locks = KeyLocks::new();
        let held = locks.try_acquire(1, keys(&["k"])).expect("free");
        let waiter = spawn_acquire_release(&locks, 2, keys(&["k"]));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(held);
        assert_eq!(within(waiter).await.expect("join"), 2);
    }

    /// A task waiting for `need` for `session`, with the guard it gets.
    fn spawn_acquire(
        locks: &Arc<KeyLocks>,
        session: u64,
        need: Need,
    ) -> tokio::task::JoinHandle<LockGuard> {
        let locks = locks.clone();
        tokio::spawn(async move { locks.acquire(session, need).await })
    }

    /// A task waiting for `need` for `session`, which gives it back at
    /// once and ends with `session`.
    fn spawn_acquire_release(
        locks: &Arc<KeyLocks>,
        session: u64,
        need: Need,
    ) -> tokio::task::JoinHandle<u64> {
        let locks = locks.clone();
        tokio::spawn(async move {
            drop(locks.acquire(session, need).await);
            session
        })
    }

    /// `f`, or a failure instead of a hang when a wake-up was lost.
    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(std::time::Duration::from_secs(10), f)
            .await
            .expect("the wait never ended: a lost wake-up")
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_late_grant_given_back_goes_to_the_next_waiter() {
        let locks = KeyLocks::new();
        let held = locks.try_acquire(1, keys(&["k"])).expect("free");
        let first = spawn_acquire(&locks, 2, keys(&["k"]));
        tokio::task::yield_now().await;
        let second = spawn_acquire_release(&locks, 3, keys(&["k"]));
        tokio::task::yield_now().await;
        drop(held);
        // Granted to session 2, which goes away before it runs.
        first.abort();
        let _ = first.await;
        assert_eq!(within(second).await.expect("join"), 3);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_release_during_a_pause_grants_nothing() {
        let locks = KeyLocks::new();
        let held = locks.try_acquire(1, keys(&["k"])).expect("free");
        let waiter = spawn_acquire_release(&locks, 2, keys(&["k"]));
        tokio::task::yield_now().await;
        locks.pause(true);
        drop(held);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert!(locks.is_idle(), "nothing granted while paused");
        locks.pause(false);
        assert_eq!(within(waiter).await.expect("join"), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn waiters_get_a_freed_key_in_the_order_they_asked() {
        let locks = KeyLocks::new();
        let held = locks.try_acquire(1, keys(&["k"])).expect("free");
        let (order_tx, mut order) = tokio::sync::mpsc::unbounded_channel();
        for session in [2, 3, 4] {
            let (l, tx) = (locks.clone(), order_tx.clone());
            tokio::spawn(async move {
                let guard = l.acquire(session, keys(&["k"])).await;
                tx.send(session).expect("open");
                // Holds the key across a turn of the scheduler, so the next
                // waiter can only have it from this release.
                tokio::task::yield_now().await;
                drop(guard);
            });
            tokio::task::yield_now().await;
        }
        drop(held);
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(within(order.recv()).await.expect("granted"));
        }
        assert_eq!(got, [2, 3, 4]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_grant_holds_the_locks_before_the_waiter_runs() {
        let locks = KeyLocks::new();
        let held = locks.try_acquire(1, keys(&["k"])).expect("free");
        let waiter = spawn_acquire(&locks, 2, keys(&["k"]));
        tokio::task::yield_now().await;
        drop(held);
        // The waiter has not run since the release, and still nobody else
        // can take the key: it was handed over, not left for a race.
        assert!(locks.try_acquire(3, keys(&["k"])).is_err());
        let guard = within(waiter).await.expect("join");
        let again = locks.try_acquire(2, keys(&["k"]));
        assert!(again.is_ok(), "session 2 holds it: it re-enters");
        drop(again);
        drop(guard);
        assert!(locks.try_acquire(3, keys(&["k"])).is_ok());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_waiter_blocked_on_another_key_does_not_hold_up_the_queue() {
        let locks = KeyLocks::new();
        let a = locks.try_acquire(1, keys(&["a"])).expect("free");
        let b = locks.try_acquire(1, keys(&["b"])).expect("free");
        let both = spawn_acquire_release(&locks, 2, keys(&["a", "b"]));
        tokio::task::yield_now().await;
        let only_a = spawn_acquire(&locks, 3, keys(&["a"]));
        tokio::task::yield_now().await;
        drop(a);
        // Session 2 still waits for b; session 3, behind it, needs only a.
        let guard = within(only_a).await.expect("join");
        assert!(!both.is_finished());
        drop(guard);
        drop(b);
        assert_eq!(within(both).await.expect("join"), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dropped_wait_leaves_the_queue_and_gives_back_a_late_grant() {
        let locks = KeyLocks::new();
        let held = locks.try_acquire(1, keys(&["k"])).expect("free");
        // A wait dropped while queued.
        let gone = spawn_acquire(&locks, 2, keys(&["k"]));
        tokio::task::yield_now().await;
        gone.abort();
        let _ = gone.await;
        // A wait granted, then dropped before it ran again.
        let late = spawn_acquire(&locks, 3, keys(&["k"]));
        tokio::task::yield_now().await;
        drop(held);
        late.abort();
        let _ = late.await;
        assert!(locks.table().queue.is_empty());
        assert!(locks.is_idle(), "the late grant was given back");
        assert!(locks.try_acquire(4, keys(&["k"])).is_ok());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_paused_table_grants_when_the_pause_ends() {
        let locks = KeyLocks::new();
        locks.pause(true);
        let waiter = spawn_acquire_release(&locks, 2, keys(&["k"]));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        locks.pause(false);
        assert_eq!(within(waiter).await.expect("join"), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dropped_barrier_wait_lets_held_back_keys_go() {
        let locks = KeyLocks::new();
        let held = locks.try_acquire(1, keys(&["a"])).expect("free");
        let barrier = spawn_acquire(&locks, 2, Need::Barrier);
        tokio::task::yield_now().await;
        let key = spawn_acquire_release(&locks, 3, keys(&["b"]));
        tokio::task::yield_now().await;
        assert!(!key.is_finished(), "held back by the waiting barrier");
        barrier.abort();
        let _ = barrier.await;
        assert_eq!(within(key).await.expect("join"), 3);
        drop(held);
    }

    #[test]
    fn only_the_last_of_a_sessions_holds_frees_a_key() {
        let mut table = Table::default();
        table.take(1, &keys(&["a"]));
        table.take(1, &keys(&["a"]));
        assert!(!table.free_for(2, &keys(&["a"])));
        assert!(!table.give_back(&keys(&["a"])), "still held once");
        assert!(!table.free_for(2, &keys(&["a"])));
        assert!(table.give_back(&keys(&["a"])), "free now");
        assert!(table.free_for(2, &keys(&["a"])));
        table.take(1, &Need::Barrier);
        assert!(table.give_back(&Need::Barrier));
    }
}
