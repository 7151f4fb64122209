//! What a client may cost the proxy before it is closed, and how many were.
//!
//! Three of Redis's own client limits, applied by the proxy to its clients
//! so that a client that never reads, never finishes its request or never
//! speaks holds bounded memory and no connection for ever: the output
//! buffer limit (Redis's `client-output-buffer-limit`), the query buffer
//! limit (`client-query-buffer-limit`) and the idle `timeout`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The bound on replies a client has not read yet, as Redis's
/// `client-output-buffer-limit <class> <hard> <soft> <seconds>`: the client
/// is closed when its unread replies reach `hard`, or stay at `soft` or
/// above for `soft_for`. A limit of 0 is off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputLimit {
    pub hard: u64,
    pub soft: u64,
    pub soft_for: Duration,
}

impl Default for OutputLimit {
    /// `256mb 64mb 60`: Redis's limit for replicas. Its limit for normal
    /// clients is none at all, which would let one client that pipelines
    /// without reading take the proxy's memory.
    fn default() -> Self {
        OutputLimit {
            hard: 256 * 1024 * 1024,
            soft: 64 * 1024 * 1024,
            soft_for: Duration::from_secs(60),
        }
    }
}

impl OutputLimit {
    /// No limit: what Redis applies to normal clients by default.
    pub const NONE: OutputLimit = OutputLimit {
        hard: 0,
        soft: 0,
        soft_for: Duration::ZERO,
    };

    /// Whether `unread` bytes break the limit now; `above_soft_since` keeps
    /// when the soft limit was first passed (cleared once back under it).
    pub(crate) fn exceeded(
        &self,
        unread: u64,
        above_soft_since: &mut Option<Instant>,
        now: Instant,
    ) -> bool {
        // Reached, not only passed, as Redis counts it.
        if self.hard > 0 && unread >= self.hard {
            return true;
        }
        if self.soft == 0 || unread < self.soft {
            *above_soft_since = None;
            return false;
        }
        let since = *above_soft_since.get_or_insert(now);
        now.duration_since(since) >= self.soft_for
    }
}

/// The limits every session applies, and the clients they closed.
#[derive(Debug, Default)]
pub(crate) struct ClientLimits {
    pub output: OutputLimit,
    /// `timeout`: `None` never closes an idle client.
    pub idle_timeout: Option<Duration>,
    /// `client_query_buffer_limit`: the bytes of an unfinished request a
    /// client may make the proxy hold.
    pub query_buffer: u64,
    /// Clients closed, by [`Closed`] reason.
    closed: [AtomicU64; 3],
}

/// Why a limit closed a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Closed {
    /// Its unread replies passed `client_output_buffer_limit`.
    OutputBuffer = 0,
    /// An unfinished request passed `client_query_buffer_limit`.
    QueryBuffer = 1,
    /// It sent nothing for `timeout`.
    Idle = 2,
}

/// Redis's default `client-query-buffer-limit`: 1 GiB.
pub const DEFAULT_QUERY_BUFFER_LIMIT: u64 = 1024 * 1024 * 1024;

impl ClientLimits {
    pub fn new(
        output: OutputLimit,
        idle_timeout: Option<Duration>,
        query_buffer: u64,
    ) -> ClientLimits {
        ClientLimits {
            output,
            idle_timeout,
            query_buffer,
            ..ClientLimits::default()
        }
    }

    /// A client was closed for `why`; returns how many were so far.
    pub fn close(&self, why: Closed) -> u64 {
        self.closed[why as usize].fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Clients closed for `why` since start.
    pub fn closed(&self, why: Closed) -> u64 {
        self.closed[why as usize].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_limit_closes_at_once_soft_limit_after_its_time() {
        let limit = OutputLimit {
            hard: 1000,
            soft: 100,
            soft_for: Duration::from_secs(10),
        };
        let t0 = Instant::now();
        let mut since = None;
        assert!(!limit.exceeded(99, &mut since, t0));
        assert!(limit.exceeded(1000, &mut since, t0), "at hard");
        assert!(!limit.exceeded(500, &mut since, t0), "soft just passed");
        assert!(!limit.exceeded(500, &mut since, t0 + Duration::from_secs(9)));
        assert!(limit.exceeded(500, &mut since, t0 + Duration::from_secs(10)));
        // Back under the soft limit, the clock starts again.
        assert!(!limit.exceeded(99, &mut since, t0 + Duration::from_secs(11)));
        assert_eq!(since, None);
        assert!(!limit.exceeded(500, &mut since, t0 + Duration::from_secs(20)));
    }

    #[test]
    fn zero_is_no_limit() {
        let mut since = None;
        assert!(!OutputLimit::NONE.exceeded(u64::MAX, &mut since, Instant::now()));
    }
}
