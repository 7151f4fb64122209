//! What sessions measure for `/metrics`: the commands clients sent, by
//! name; how long the proxy holds a client's bytes on their way; how often
//! the primary failed a session; and clients whose TLS handshake failed.
//!
//! Every session updates these, so they are kept off the per-command path:
//! a session tallies a read's commands itself ([`CommandTally`]) and adds
//! them to the shared counters once per read, one atomic per distinct name,
//! and each latency histogram is observed once per read, not per command
//! (an observation takes the histogram's lock for a few nanoseconds).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use super::shared::Failure;
use super::upstream::SessionEnd;

/// Label of commands no command table knows: their names are the
/// clients' to choose, so they are not labels.
pub const UNKNOWN_COMMAND: &str = "unknown";
/// Label of the names past [`MAX_NAMES`] (a primary with an unusually large
/// command table, modules).
pub const OTHER_COMMANDS: &str = "other";
/// Distinct command names counted on their own, at most: Redis 7.4 has
/// about 240 commands and 150 subcommands.
const MAX_NAMES: usize = 1024;

type NameMap = HashMap<&'static str, Arc<AtomicU64>, foldhash::fast::RandomState>;

/// How a session with the primary ended badly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamError {
    /// The primary could not be reached (connection refused, TLS).
    Connect,
    /// The primary closed the connection with replies owed.
    Closed,
    /// No reply within `rsptimeout`.
    Timeout,
    /// A reply that is not RESP.
    BadReply,
    /// A read or write failed.
    Io,
}

impl UpstreamError {
    pub const ALL: [UpstreamError; 5] = [
        UpstreamError::Connect,
        UpstreamError::Closed,
        UpstreamError::Timeout,
        UpstreamError::BadReply,
        UpstreamError::Io,
    ];

    /// Its `kind` label.
    pub fn label(self) -> &'static str {
        match self {
            UpstreamError::Connect => "connect",
            UpstreamError::Closed => "closed",
            UpstreamError::Timeout => "timeout",
            UpstreamError::BadReply => "bad_reply",
            UpstreamError::Io => "io",
        }
    }

    /// The error a session that ended with `end` counts, if any: a primary
    /// that closes after answering everything (`QUIT`, `CLIENT KILL` of an
    /// idle connection) is no error.
    pub(super) fn of(end: &SessionEnd) -> Option<UpstreamError> {
        match end {
            SessionEnd::Io(_) => Some(UpstreamError::Io),
            SessionEnd::UpstreamClosed { owed: true } => Some(UpstreamError::Closed),
            SessionEnd::UpstreamClosed { owed: false } => None,
            SessionEnd::BadReply(_) => Some(UpstreamError::BadReply),
            SessionEnd::Timeout(_) => Some(UpstreamError::Timeout),
            SessionEnd::Shared(failure) => Some(match failure {
                Failure::Closed => UpstreamError::Closed,
                Failure::Timeout(_) => UpstreamError::Timeout,
                Failure::BadReply => UpstreamError::BadReply,
            }),
        }
    }
}

/// Buckets of the proxy's own latency, in seconds: 10 µs doubling to about
/// 5 s (the Kafka histograms start at 0.5 ms, far above what the proxy
/// itself takes).
fn fine_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_01, 2.0, 20)
}

/// The measures all sessions of a proxy share.
pub struct SessionMetrics {
    commands: CommandCounts,
    /// From reading a client's bytes to having written them to the primary:
    /// parsing, and the waits for key locks, a full backlog or a blocking
    /// pop before them.
    pub request_seconds: Histogram,
    /// From reading the primary's replies to having handed them to the
    /// client's socket (or, with `ack = "kafka"`, to the writer that holds
    /// them until Kafka acknowledged: that wait is the delivery histogram).
    pub reply_seconds: Histogram,
    upstream_errors: [AtomicU64; UpstreamError::ALL.len()],
    /// Clients whose TLS handshake failed (`bindtls`).
    handshakes_failed: AtomicU64,
    /// Commands sent on the connection sessions share, and the shared
    /// connections opened.
    shared_commands: AtomicU64,
    shared_connections: AtomicU64,
}

impl Default for SessionMetrics {
    fn default() -> Self {
        SessionMetrics {
            commands: CommandCounts::default(),
            request_seconds: Histogram::new(fine_buckets()),
            reply_seconds: Histogram::new(fine_buckets()),
            upstream_errors: Default::default(),
            handshakes_failed: AtomicU64::new(0),
            shared_commands: AtomicU64::new(0),
            shared_connections: AtomicU64::new(0),
        }
    }
}

impl SessionMetrics {
    /// `n` more commands went on the shared connection.
    pub(crate) fn add_shared_commands(&self, n: usize) {
        self.shared_commands.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A shared connection was opened.
    pub(crate) fn shared_connection_opened(&self) {
        self.shared_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Commands sent on the shared connection, and shared connections
    /// opened, since start.
    pub fn shared(&self) -> (u64, u64) {
        (
            self.shared_commands.load(Ordering::Relaxed),
            self.shared_connections.load(Ordering::Relaxed),
        )
    }

    /// Adds what `tally` counted and empties it.
    pub fn add_commands(&self, tally: &mut CommandTally) {
        for (name, n) in tally.counts.drain(..) {
            self.commands.add(name, n);
        }
    }

    /// Commands by name since start, sorted by name.
    pub fn commands(&self) -> Vec<(&'static str, u64)> {
        let mut all: Vec<_> = self
            .commands
            .names
            .load()
            .iter()
            .map(|(name, n)| (*name, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        all.sort_unstable();
        all
    }

    pub fn upstream_error(&self, kind: UpstreamError) {
        self.upstream_errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Sessions the primary failed, by kind, since start.
    pub fn upstream_errors(&self) -> Vec<(UpstreamError, u64)> {
        UpstreamError::ALL
            .iter()
            .map(|k| {
                (
                    *k,
                    self.upstream_errors[*k as usize].load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    pub fn client_handshake_failed(&self) {
        self.handshakes_failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Clients whose TLS handshake failed, since start.
    pub fn client_handshakes_failed(&self) -> u64 {
        self.handshakes_failed.load(Ordering::Relaxed)
    }

    pub fn observe_request(&self, took: Duration) {
        self.request_seconds.observe(took.as_secs_f64());
    }

    pub fn observe_reply(&self, took: Duration) {
        self.reply_seconds.observe(took.as_secs_f64());
    }
}

/// A counter per command name. Reading takes no lock: the map is swapped
/// whole when a name is first seen, which happens a few hundred times in a
/// proxy's life at most.
struct CommandCounts {
    names: ArcSwap<NameMap>,
    /// Serialises the swaps.
    adding: Mutex<()>,
}

impl Default for CommandCounts {
    fn default() -> Self {
        let mut names = NameMap::default();
        for name in [UNKNOWN_COMMAND, OTHER_COMMANDS] {
            names.insert(name, Arc::default());
        }
        CommandCounts {
            names: ArcSwap::from_pointee(names),
            adding: Mutex::new(()),
        }
    }
}

impl CommandCounts {
    fn add(&self, name: &'static str, n: u64) {
        if let Some(count) = self.names.load().get(name) {
            count.fetch_add(n, Ordering::Relaxed);
            return;
        }
        let _adding = self.adding.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.names.load_full();
        let count = match current.get(name) {
            Some(count) => count.clone(),
            None if current.len() >= MAX_NAMES => current[OTHER_COMMANDS].clone(),
            None => {
                let count = Arc::new(AtomicU64::new(0));
                let mut grown = NameMap::clone(&current);
                grown.insert(name, count.clone());
                self.names.store(Arc::new(grown));
                count
            }
        };
        count.fetch_add(n, Ordering::Relaxed);
    }
}

/// One read's commands by name, before they go to the shared counters: a
/// pipelined read is mostly one or a few names, so a short list beats a
/// map.
#[derive(Default)]
pub struct CommandTally {
    counts: Vec<(&'static str, u64)>,
}

impl CommandTally {
    /// Counts one command named `name` (a command table's name, or
    /// [`UNKNOWN_COMMAND`]).
    pub fn count(&mut self, name: &'static str) {
        // Table names are 'static and unique per table: comparing the
        // pointers first spares the bytes in the common case.
        match self
            .counts
            .iter_mut()
            .find(|(n, _)| std::ptr::eq(*n, name) || *n == name)
        {
            Some((_, count)) => *count += 1,
            None => self.counts.push((name, 1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_counted_by_name() {
        let metrics = SessionMetrics::default();
        let mut tally = CommandTally::default();
        for name in ["set", "get", "set", UNKNOWN_COMMAND] {
            tally.count(name);
        }
        metrics.add_commands(&mut tally);
        assert!(tally.counts.is_empty());
        tally.count("set");
        metrics.add_commands(&mut tally);
        assert_eq!(
            metrics.commands(),
            vec![("get", 1), ("set", 3), (UNKNOWN_COMMAND, 1)]
        );
    }

    #[test]
    fn names_past_the_bound_count_as_other() {
        let metrics = SessionMetrics::default();
        let mut tally = CommandTally::default();
        // Leaked like a server table's names.
        for i in 0..MAX_NAMES + 10 {
            tally.count(Box::leak(format!("cmd{i}").into_boxed_str()));
        }
        metrics.add_commands(&mut tally);
        let counted = metrics.commands();
        // `unknown`, never counted, is left out.
        assert_eq!(counted.len(), MAX_NAMES - 1);
        assert_eq!(
            counted.iter().map(|(_, n)| n).sum::<u64>(),
            MAX_NAMES as u64 + 10
        );
        let other = counted
            .iter()
            .find(|(n, _)| *n == OTHER_COMMANDS)
            .unwrap()
            .1;
        // The bound counts the two built-in labels.
        assert_eq!(other, 12);
    }

    #[test]
    fn a_primary_closing_after_its_last_reply_is_no_error() {
        assert_eq!(
            UpstreamError::of(&SessionEnd::UpstreamClosed { owed: false }),
            None
        );
        assert_eq!(
            UpstreamError::of(&SessionEnd::UpstreamClosed { owed: true }),
            Some(UpstreamError::Closed)
        );
        let metrics = SessionMetrics::default();
        metrics.upstream_error(UpstreamError::Timeout);
        let errors = metrics.upstream_errors();
        assert_eq!(errors.len(), 5);
        assert!(errors.contains(&(UpstreamError::Timeout, 1)));
        assert!(errors.contains(&(UpstreamError::Io, 0)));
    }
}
