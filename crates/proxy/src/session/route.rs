//! Which connection a session sends a command on: its own, or the one it
//! shares with the other sessions ([`super::shared`]).
//!
//! On the shared connection the primary reads many clients' commands in
//! one read and answers them in one write, as behind twemproxy; on a
//! session's own connection each unpipelined command costs the primary and
//! the proxy a read and a write of their own. A command may go on the
//! shared connection only where it runs exactly as it would on the
//! session's own:
//!
//! - the session never changed its connection's state: no `SELECT`,
//!   `AUTH`, `HELLO`, `RESET`, `READONLY`, `CLIENT` beyond naming itself,
//!   subscription or `MONITOR` (after one of these, every later command of
//!   the session goes on its own connection), and no transaction is open;
//! - the command names keys, does not block, is not a script (which could
//!   do what the session's connection would remember) and is not `WATCH`.
//!
//! Everything else (`PING`, `INFO`, `SCAN`, `FLUSHALL`, `MULTI`...) goes on
//! the session's own connection. A session's commands keep their order
//! across the two: it sends on the other connection only once every
//! command it sent on the first was answered and its reply handed to the
//! client ([`Owed`]), so the primary runs them, and the client reads their
//! replies, in the order the client sent them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use remoteback_protocol::commands::CMD_PUBSUB;
use remoteback_protocol::Command;
use tokio::sync::Notify;

use crate::capture::Verdict;

/// One of a session's two connections to the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Own,
    Shared,
}

/// A session's request-side view of whether its connection's state is
/// still the shared connection's.
#[derive(Debug)]
pub(crate) struct Router {
    /// Whether the session may still share: [`Owed::pin`] ends it, here
    /// or where sharing is off (the reply side reads it too).
    owed: Arc<Owed>,
    /// Between `MULTI` and `EXEC` or `DISCARD`.
    transaction: bool,
}

impl Router {
    /// A router for a fresh session; an `owed` pinned already keeps every
    /// command on the session's own connection.
    pub fn new(owed: Arc<Owed>) -> Router {
        Router {
            owed,
            transaction: false,
        }
    }

    /// Where `command` goes, updating what the session's connection
    /// remembers. A command whose effect on the connection is unknown (it
    /// failed, say) counts as taking effect: the session then stays on its
    /// own connection, which is always right, only slower.
    pub fn route(&mut self, command: &Command, verdict: &Verdict) -> Route {
        if !self.owed.shares() {
            return Route::Own;
        }
        // First, the usual case, without comparing names: no command that
        // changes the connection names keys (SSUBSCRIBE's are pub/sub).
        let shareable = verdict.spec.is_some_and(|spec| {
            !spec.key_specs().is_empty()
                && !spec.is_blocking()
                && !spec.has_flag(CMD_PUBSUB)
                && !matches!(
                    spec.name(),
                    "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro" | "watch"
                )
        });
        if shareable && !self.transaction {
            return Route::Shared;
        }
        // Queued in a transaction, SELECT, AUTH, HELLO... take effect at
        // EXEC: the connection counts as changed all the same.
        if changes_connection(command) {
            self.owed.pin();
        } else if self.transaction {
            if command.is("EXEC") || command.is("DISCARD") {
                self.transaction = false;
            }
        } else if command.is("MULTI") {
            self.transaction = true;
        }
        Route::Own
    }
}

/// Whether `command` changes what its connection remembers in a way that
/// changes how later commands run or are answered.
fn changes_connection(command: &Command) -> bool {
    // WAIT and WAITAOF count the writes of the connection they run on: a
    // client that uses them sends its later writes on its own.
    const CHANGING: [&str; 18] = [
        "WAIT",
        "WAITAOF",
        "SELECT",
        "AUTH",
        "HELLO",
        "RESET",
        "READONLY",
        "READWRITE",
        "ASKING",
        "MONITOR",
        "SUBSCRIBE",
        "PSUBSCRIBE",
        "SSUBSCRIBE",
        "SYNC",
        "PSYNC",
        "REPLCONF",
        "UNSUBSCRIBE",
        "PUNSUBSCRIBE",
    ];
    if CHANGING.iter().any(|name| command.is(name)) {
        return true;
    }
    // CLIENT REPLY, TRACKING, NO-EVICT, NO-TOUCH... change the connection;
    // naming it and asking about it do not.
    command.is("CLIENT")
        && !command.arg(1).is_some_and(|sub| {
            ["SETNAME", "GETNAME", "SETINFO", "ID", "INFO", "LIST"]
                .iter()
                .any(|keep| sub.eq_ignore_ascii_case(keep.as_bytes()))
        })
}

/// How many of a session's commands on each connection have not had their
/// reply handed to the client yet: counted up by the request side before a
/// command leaves, down by whoever hands its reply over.
#[derive(Debug, Default)]
pub(crate) struct Owed {
    own: AtomicUsize,
    shared: AtomicUsize,
    /// Woken when a count reaches zero.
    settled: Notify,
    /// The session's connection changed: it shares no more.
    pinned: AtomicBool,
    /// The primary closed the session's own connection while it owed
    /// nothing; the session ends when it needs it.
    own_closed: AtomicBool,
}

impl Owed {
    /// The session stops sharing for good (its router saw its connection
    /// change, or sharing is off).
    pub fn pin(&self) {
        self.pinned.store(true, Ordering::Relaxed);
    }

    /// Whether the session may still send on the shared connection.
    pub fn shares(&self) -> bool {
        !self.pinned.load(Ordering::Relaxed)
    }

    pub fn close_own(&self) {
        self.own_closed.store(true, Ordering::Release);
    }

    pub fn own_closed(&self) -> bool {
        self.own_closed.load(Ordering::Acquire)
    }

    fn count(&self, route: Route) -> &AtomicUsize {
        match route {
            Route::Own => &self.own,
            Route::Shared => &self.shared,
        }
    }

    /// `n` more commands leave on `route`.
    pub fn add(&self, route: Route, n: usize) {
        self.count(route).fetch_add(n, Ordering::AcqRel);
    }

    /// The replies of `n` commands on `route` were handed to the client.
    pub fn answered(&self, route: Route, n: usize) {
        if n == 0 {
            return;
        }
        if self.count(route).fetch_sub(n, Ordering::AcqRel) == n {
            self.settled.notify_waiters();
        }
    }

    /// How many commands on `route` are owed their reply.
    pub fn on(&self, route: Route) -> usize {
        self.count(route).load(Ordering::Acquire)
    }

    /// Waits until nothing on `route` is owed its reply.
    pub async fn settled(&self, route: Route) {
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            // Registered before the check, so a count reaching zero between
            // the two is not missed.
            settled.as_mut().enable();
            if self.on(route) == 0 {
                return;
            }
            settled.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Verdict;
    use remoteback_protocol::commands::lookup;

    fn routed(router: &mut Router, parts: &[&str]) -> Route {
        let command = Command::from_parts(parts.iter().copied());
        let verdict = Verdict {
            spec: lookup(command.args()),
            ..Verdict::default()
        };
        router.route(&command, &verdict)
    }

    #[test]
    fn keyed_commands_share_and_the_rest_stay_own() {
        let mut r = Router::new(Arc::default());
        assert_eq!(routed(&mut r, &["SET", "k", "v"]), Route::Shared);
        assert_eq!(routed(&mut r, &["get", "k"]), Route::Shared);
        assert_eq!(routed(&mut r, &["MGET", "a", "b"]), Route::Shared);
        assert_eq!(routed(&mut r, &["PING"]), Route::Own);
        assert_eq!(routed(&mut r, &["FLUSHALL"]), Route::Own);
        assert_eq!(routed(&mut r, &["BLPOP", "k", "0"]), Route::Own);
        assert_eq!(routed(&mut r, &["EVAL", "return 1", "1", "k"]), Route::Own);
        assert_eq!(routed(&mut r, &["WATCH", "k"]), Route::Own);
        assert_eq!(routed(&mut r, &["NOSUCHCOMMAND", "k"]), Route::Own);
        assert_eq!(routed(&mut r, &["CLIENT", "SETNAME", "app"]), Route::Own);
        // Naming itself changes nothing the shared connection must know.
        assert_eq!(routed(&mut r, &["SET", "k", "v"]), Route::Shared);
    }

    #[test]
    fn a_transaction_stays_own_until_it_ends() {
        let mut r = Router::new(Arc::default());
        assert_eq!(routed(&mut r, &["MULTI"]), Route::Own);
        assert_eq!(routed(&mut r, &["SET", "k", "v"]), Route::Own);
        assert_eq!(routed(&mut r, &["EXEC"]), Route::Own);
        assert_eq!(routed(&mut r, &["SET", "k", "v"]), Route::Shared);
        assert_eq!(routed(&mut r, &["multi"]), Route::Own);
        assert_eq!(routed(&mut r, &["INCR", "k"]), Route::Own);
        assert_eq!(routed(&mut r, &["discard"]), Route::Own);
        assert_eq!(routed(&mut r, &["INCR", "k"]), Route::Shared);
    }

    #[test]
    fn a_changed_connection_never_shares_again() {
        for change in [
            &["SELECT", "1"][..],
            &["AUTH", "pw"],
            &["HELLO", "3"],
            &["CLIENT", "REPLY", "OFF"],
            &["CLIENT", "TRACKING", "ON"],
            &["SUBSCRIBE", "ch"],
            &["RESET"],
            &["WAIT", "1", "0"],
        ] {
            let mut r = Router::new(Arc::default());
            assert_eq!(routed(&mut r, &["SET", "k", "v"]), Route::Shared);
            assert_eq!(routed(&mut r, change), Route::Own, "{change:?}");
            assert_eq!(routed(&mut r, &["SET", "k", "v"]), Route::Own, "{change:?}");
            assert_eq!(routed(&mut r, &["SELECT", "0"]), Route::Own);
            assert_eq!(routed(&mut r, &["GET", "k"]), Route::Own, "{change:?}");
        }
    }

    #[test]
    fn a_change_queued_in_a_transaction_counts() {
        for change in [&["SELECT", "1"][..], &["AUTH", "pw"], &["HELLO", "3"]] {
            let mut r = Router::new(Arc::default());
            assert_eq!(routed(&mut r, &["MULTI"]), Route::Own);
            assert_eq!(routed(&mut r, change), Route::Own);
            assert_eq!(routed(&mut r, &["EXEC"]), Route::Own);
            assert_eq!(routed(&mut r, &["SET", "k", "v"]), Route::Own, "{change:?}");
        }
    }

    #[test]
    fn sharing_off_keeps_everything_own() {
        let owed = Arc::new(Owed::default());
        owed.pin();
        let mut r = Router::new(owed);
        assert_eq!(routed(&mut r, &["SET", "k", "v"]), Route::Own);
    }

    #[tokio::test]
    async fn settled_waits_for_the_last_answer() {
        let owed = std::sync::Arc::new(Owed::default());
        owed.add(Route::Shared, 2);
        owed.settled(Route::Own).await;
        let waiting = tokio::spawn({
            let owed = owed.clone();
            async move { owed.settled(Route::Shared).await }
        });
        owed.answered(Route::Shared, 1);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        owed.answered(Route::Shared, 1);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("settled")
            .unwrap();
    }
}
