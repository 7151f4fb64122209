//! Waiting for the backup: capped exponential backoff that gives way to a
//! shutdown.
//!
//! While the backup is unreachable, restarting or refusing writes for its
//! own reasons (`LOADING`, `OOM`, ...), the replay does not skip or fail: it
//! waits, first 100 ms, doubling up to 5 s, and tries again. Every pause is
//! counted in [`Stats::reconnects`](crate::stats::Stats::reconnects). A
//! shutdown request ends the pause at once: what was not applied yet is
//! applied after the next start, from the offset stored in the backup.

use std::time::Duration;

use tokio::sync::watch;

use crate::stats::Stats;

/// First pause after a failure.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A shutdown was requested while waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// The backoff of one partition.
#[derive(Debug)]
pub struct Backoff {
    delay: Duration,
    stop: watch::Receiver<bool>,
    stats: Stats,
    /// Whether this partition counts in [`Stats::waiting`] now.
    waiting: bool,
}

impl Backoff {
    /// `stop` turns `true` when the replay shuts down.
    pub fn new(stop: watch::Receiver<bool>, stats: Stats) -> Self {
        Backoff {
            delay: FIRST_BACKOFF,
            stop,
            stats,
            waiting: false,
        }
    }

    /// The next pause.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// Whether a shutdown was requested.
    pub fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Counts a failed attempt and waits before the next one; `Err` when a
    /// shutdown is requested meanwhile.
    pub async fn pause(&mut self) -> Result<(), Stopped> {
        self.stats.add_reconnect();
        if !self.waiting {
            self.waiting = true;
            self.stats.add_waiting(1);
        }
        if self.stopping() {
            return Err(Stopped);
        }
        let delay = self.delay;
        self.delay = (self.delay * 2).min(MAX_BACKOFF);
        tokio::select! {
            _ = tokio::time::sleep(delay) => Ok(()),
            _ = self.stop.wait_for(|stop| *stop) => Err(Stopped),
        }
    }

    /// Progress was made: the next failure waits the shortest pause again.
    pub fn reset(&mut self) {
        self.delay = FIRST_BACKOFF;
        self.answered();
    }

    /// The backup answered (a connection and a read), so the partition no
    /// longer counts as waiting. The pause is not shortened: a backup that
    /// answers reads but refuses writes (`OOM`, `READONLY`) must still be
    /// retried at a growing interval.
    pub fn answered(&mut self) {
        if self.waiting {
            self.waiting = false;
            self.stats.add_waiting(-1);
        }
    }
}

impl Drop for Backoff {
    fn drop(&mut self) {
        self.answered();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn doubles_up_to_the_cap_and_resets() {
        let (_tx, rx) = watch::channel(false);
        let stats = Stats::default();
        let mut b = Backoff::new(rx, stats.clone());
        let mut seen = Vec::new();
        for _ in 0..9 {
            seen.push(b.delay());
            b.pause().await.unwrap();
        }
        assert_eq!(
            seen,
            [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000].map(Duration::from_millis)
        );
        assert_eq!(stats.reconnects(), 9);
        assert_eq!(
            stats.waiting(),
            1,
            "a partition in backoff counts as waiting"
        );
        b.reset();
        assert_eq!(stats.waiting(), 0);
        assert_eq!(b.delay(), FIRST_BACKOFF);
    }

    #[tokio::test(start_paused = true)]
    async fn a_shutdown_ends_the_pause() {
        let (tx, rx) = watch::channel(false);
        let mut b = Backoff::new(rx, Stats::default());
        for _ in 0..6 {
            b.pause().await.unwrap();
        }
        let waiting = tokio::spawn(async move { b.pause().await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        tx.send(true).unwrap();
        assert_eq!(waiting.await.unwrap(), Err(Stopped));
    }
}
