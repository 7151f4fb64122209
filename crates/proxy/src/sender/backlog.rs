//! The bounded backlog between capture and Kafka.
//!
//! Every record handed to a Kafka producer counts here, by size, until the
//! broker acknowledged it or the producer gave up on it. The bound is what
//! keeps a slow or absent broker from growing the proxy's memory without
//! limit; `on_backlog_full` says what happens at the bound:
//!
//! - `block`: sessions stop forwarding writes (reads keep flowing) until
//!   deliveries make room again. Writes already on their way to the primary
//!   still add their records, so the backlog can exceed the bound by what
//!   was in flight when it filled.
//! - `drop`: writes keep flowing and records that do not fit are dropped; the
//!   sender counts them, and the proxy reports that the backup needs a resync.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Notify;

/// What a full backlog does (`on_backlog_full`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnFull {
    /// Hold new writes of every client until there is room.
    #[default]
    Block,
    /// Drop the records that do not fit, count them, ask for a resync.
    Drop,
}

impl OnFull {
    pub fn name(self) -> &'static str {
        match self {
            OnFull::Block => "block",
            OnFull::Drop => "drop",
        }
    }
}

/// Bytes of records not yet acknowledged by Kafka, against a bound.
#[derive(Debug)]
pub struct Backlog {
    limit: u64,
    on_full: OnFull,
    bytes: AtomicU64,
    /// Woken when the backlog falls below the bound.
    room: Notify,
    /// How many times a session held a write because the backlog was full.
    waits: AtomicU64,
    /// Writes are paused for a planned failover: every write waits before
    /// it is forwarded, whatever the backlog holds.
    paused: AtomicBool,
}

impl Backlog {
    pub fn new(limit: u64, on_full: OnFull) -> Self {
        Backlog {
            limit: limit.max(1),
            on_full,
            bytes: AtomicU64::new(0),
            room: Notify::new(),
            waits: AtomicU64::new(0),
            paused: AtomicBool::new(false),
        }
    }

    /// Whether a write must wait before it is forwarded: the backlog is full
    /// (`block`), or writes are paused.
    pub fn holds_writes(&self) -> bool {
        self.paused.load(Ordering::Relaxed) || (self.on_full == OnFull::Block && self.is_full())
    }

    /// Pauses writes (they wait before reaching the primary, reads go on),
    /// or lets them go again.
    pub fn pause_writes(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
        if !paused {
            self.room.notify_waiters();
        }
    }

    pub fn writes_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes of records handed to a producer and not yet settled.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Writes held because the backlog was full (`block`), since start.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    pub fn is_full(&self) -> bool {
        self.bytes() >= self.limit
    }

    /// Takes a record of `size` bytes into the backlog, or says it does not
    /// fit. In `block` mode everything is taken (the writes were held before
    /// they reached the primary, if they had to be). In `drop` mode a record
    /// fits if it keeps the backlog within the bound, or if the backlog is
    /// empty (so a record larger than the bound is not dropped for its size
    /// alone).
    pub fn admit(&self, size: u64) -> bool {
        match self.on_full {
            OnFull::Block => {
                self.bytes.fetch_add(size, Ordering::Relaxed);
                true
            }
            OnFull::Drop => self
                .bytes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    (b == 0 || b + size <= self.limit).then_some(b + size)
                })
                .is_ok(),
        }
    }

    /// A record of `size` bytes left the backlog: acknowledged, failed, or
    /// never queued after all.
    pub fn settle(&self, size: u64) {
        let before = self.bytes.fetch_sub(size, Ordering::Relaxed);
        if before >= self.limit && before - size < self.limit {
            self.room.notify_waiters();
        }
    }

    /// Waits until writes may go: the backlog is below its bound (or in
    /// `drop` mode) and writes are not paused.
    pub async fn wait_for_room(&self) {
        if !self.holds_writes() {
            return;
        }
        self.waits.fetch_add(1, Ordering::Relaxed);
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.holds_writes() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn drop_mode_admits_what_fits_and_one_oversized_record_when_empty() {
        let b = Backlog::new(100, OnFull::Drop);
        assert!(b.admit(60));
        assert!(b.admit(40));
        assert!(!b.admit(1), "full at exactly the bound");
        b.settle(60);
        assert!(!b.admit(61));
        assert!(b.admit(60));
        b.settle(100);
        assert_eq!(b.bytes(), 0);
        assert!(
            b.admit(500),
            "an empty backlog takes a record larger than the bound"
        );
        assert!(!b.admit(1));
    }

    #[test]
    fn block_mode_admits_everything_and_reports_full() {
        let b = Backlog::new(100, OnFull::Block);
        assert!(b.admit(150));
        assert!(b.is_full());
        b.settle(51);
        assert!(!b.is_full());
    }

    #[tokio::test]
    async fn a_held_write_resumes_when_a_delivery_makes_room() {
        let b = Arc::new(Backlog::new(100, OnFull::Block));
        b.admit(100);
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.wait_for_room().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "must wait while the backlog is full");
        let settler = std::thread::spawn({
            let b = b.clone();
            move || b.settle(10)
        });
        settler.join().unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken by the settle")
            .unwrap();
        assert_eq!(b.waits(), 1);
    }
}
