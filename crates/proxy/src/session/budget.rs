//! How much of one client's requests the proxy holds while they wait for
//! their replies.
//!
//! Every forwarded command stays in memory until the primary answered it
//! (capture needs its arguments). A client that pipelines faster than the
//! primary answers, or whose replies cannot leave (Kafka slow with
//! `ack = "kafka"`), would otherwise make the proxy hold everything it
//! sends. The request side charges each command it forwards; the reply side
//! gives the charge back when it matched the reply; once a client holds
//! [`MAX_IN_FLIGHT_BYTES`], the request side reads nothing more from it until
//! replies came back. The client then waits in its own socket, as it would
//! behind a busy Redis.

use std::mem::size_of;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::Notify;

use super::inflight::InFlight;

/// What one client may have in flight: its requests' bytes plus what the
/// proxy keeps for each. About 700 small pipelined commands, more than a
/// client needs to keep the primary busy; a single command larger than this
/// is still taken, alone. Measured with 1,000 clients pipelining 10,000
/// `SET`s each: at 1 MiB the proxy reached 1.7 GB.
pub(crate) const MAX_IN_FLIGHT_BYTES: usize = 256 * 1024;

/// What a forwarded command costs besides its bytes, its arguments' handles
/// and its entry: its verdict's and capture's allocations, and allocator
/// rounding (measured: the entry alone undercounted it by about 60%).
const COMMAND_OVERHEAD: usize = 192;

/// One session's charge, shared by its two sides.
#[derive(Debug, Default)]
pub(crate) struct InFlightBudget {
    used: AtomicUsize,
    room: Notify,
    /// Subscribed or monitoring: the client waits for the primary by
    /// design, so sending nothing does not make it idle (as in Redis).
    listening: AtomicBool,
    /// When the client last had nothing in flight again (its last reply
    /// matched, or it stopped listening), in nanoseconds since [`epoch`];
    /// 0 for never. A client's idle time counts from then or from its last
    /// request, whichever is later, as Redis's counts from its last
    /// interaction: a client answered after a long `BLPOP` is not idle.
    settled_at: AtomicU64,
    /// Whether `settled_at` is kept: only with an idle `timeout`, as the
    /// clock read costs every request of an unpipelined client.
    track_settled: bool,
}

/// The instant [`InFlightBudget::settled_at`] counts from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl InFlightBudget {
    /// A budget that keeps when the client last settled if `track_settled`
    /// (an idle `timeout` is set).
    pub fn new(track_settled: bool) -> Self {
        InFlightBudget {
            track_settled,
            ..InFlightBudget::default()
        }
    }

    /// What the proxy holds for a forwarded command of `request_len` bytes
    /// and `args` arguments until its reply.
    pub fn cost(request_len: usize, args: usize) -> usize {
        request_len + args * size_of::<Bytes>() + size_of::<InFlight>() + COMMAND_OVERHEAD
    }

    /// Charges `bytes` (a read's commands together), before any of them is
    /// handed to the reply side (so a release can never come first).
    pub fn charge(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Gives back `bytes` once their replies were matched.
    pub fn release(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let before = self.used.fetch_sub(bytes, Ordering::AcqRel);
        if before >= MAX_IN_FLIGHT_BYTES && before - bytes < MAX_IN_FLIGHT_BYTES {
            self.room.notify_one();
        }
        if before == bytes {
            self.settled();
        }
    }

    fn settled(&self) {
        if !self.track_settled {
            return;
        }
        let nanos = epoch().elapsed().as_nanos().max(1) as u64;
        self.settled_at.store(nanos, Ordering::Relaxed);
    }

    /// When the client last had nothing in flight again, if ever.
    pub fn settled_since(&self) -> Option<Instant> {
        match self.settled_at.load(Ordering::Relaxed) {
            0 => None,
            n => Some(epoch() + std::time::Duration::from_nanos(n)),
        }
    }

    /// Waits until the client holds less than [`MAX_IN_FLIGHT_BYTES`].
    /// Everything charged must have been sent to the primary already, or
    /// its reply, and with it the room, would never come.
    pub async fn room(&self) {
        while self.used.load(Ordering::Acquire) >= MAX_IN_FLIGHT_BYTES {
            // A wake-up given while nobody waited is kept, so one sent
            // between the check and this wait is not missed.
            self.room.notified().await;
        }
    }

    /// Set by the reply side, which knows the connection's pub/sub state.
    pub fn set_listening(&self, listening: bool) {
        if self.listening.load(Ordering::Relaxed) != listening {
            self.listening.store(listening, Ordering::Relaxed);
            if !listening {
                self.settled();
            }
        }
    }

    /// Nothing in flight and not listening: what the idle `timeout` closes.
    pub fn is_idle(&self) -> bool {
        self.used.load(Ordering::Acquire) == 0 && !self.listening.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// Whether `room` would wait now (polled once, never slept on).
    async fn would_wait(budget: &InFlightBudget) -> bool {
        tokio::time::timeout(Duration::ZERO, budget.room())
            .await
            .is_err()
    }

    #[tokio::test]
    async fn a_full_budget_waits_until_replies_give_room_back() {
        let budget = Arc::new(InFlightBudget::default());
        budget.charge(MAX_IN_FLIGHT_BYTES - 1);
        assert!(!would_wait(&budget).await);
        budget.charge(10);
        assert!(
            would_wait(&budget).await,
            "over the budget, the reader waits"
        );
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.room().await }
        });
        budget.release(5);
        assert!(would_wait(&budget).await, "still over it");
        budget.release(10);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("room given back wakes the reader")
            .unwrap();
        assert_eq!(budget.used(), MAX_IN_FLIGHT_BYTES - 6);
    }
}
