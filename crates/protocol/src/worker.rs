//! How the proxy and the replay schedule their units of work.

use std::fmt;

/// The scheduling model for proxy client sessions and replay partitions.
///
/// Both run the same async code; only where it runs differs. `Coroutine`
/// multiplexes every unit on a shared tokio pool (the default, cheapest per
/// connection). `Thread` gives each unit an OS thread of its own with a
/// single-threaded runtime, for operators who want isolation between clients
/// (one client's heavy reply parsing never delays another's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Worker {
    #[default]
    Coroutine,
    Thread,
}

impl fmt::Display for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Worker::Coroutine => "coroutine",
            Worker::Thread => "thread",
        })
    }
}
