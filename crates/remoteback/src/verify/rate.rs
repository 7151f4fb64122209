//! `--qps N`: at most N commands a second to each server.
//!
//! Verify runs against production servers, so its load must have a ceiling
//! an operator can choose. Each server's connection paces itself: a
//! pipeline of `n` commands is sent no earlier than `n / N` seconds after
//! the previous one was allowed. Idle time is not saved up, so a pause
//! (a wait between rounds) is never followed by a burst above the rate.

use std::time::{Duration, Instant};

/// The pace of one connection.
#[derive(Debug)]
pub struct Pace {
    per_second: Option<u32>,
    /// When the next pipeline may be sent.
    next: Instant,
}

impl Pace {
    /// At most `per_second` commands a second; `None` for no limit.
    pub fn new(per_second: Option<u32>) -> Pace {
        Pace {
            per_second: per_second.filter(|&n| n > 0),
            next: Instant::now(),
        }
    }

    /// How long to wait before sending `commands` commands at `now`, and
    /// books them.
    pub fn delay(&mut self, commands: usize, now: Instant) -> Duration {
        let Some(per_second) = self.per_second else {
            return Duration::ZERO;
        };
        let start = self.next.max(now);
        let cost = Duration::from_secs_f64(commands as f64 / f64::from(per_second));
        self.next = start + cost;
        start - now
    }

    /// Waits until `commands` commands may be sent.
    pub fn wait(&mut self, commands: usize) {
        let delay = self.delay(commands, Instant::now());
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
    }

    /// How many keys one batch should hold: a batch costs a few commands a
    /// key, and at a low rate a smaller batch keeps the load even.
    pub fn batch(&self, largest: usize) -> usize {
        match self.per_second {
            None => largest,
            Some(n) => (n as usize / 20).clamp(1, largest),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_never_waits() {
        let mut pace = Pace::new(None);
        let now = Instant::now();
        assert_eq!(pace.delay(1_000_000, now), Duration::ZERO);
        assert_eq!(pace.batch(1000), 1000);
        assert_eq!(Pace::new(Some(0)).batch(1000), 1000);
    }

    #[test]
    fn commands_are_spread_at_the_rate() {
        let mut pace = Pace::new(Some(100));
        let now = Instant::now();
        // The first pipeline goes at once, the next after 50 commands' time.
        assert_eq!(pace.delay(50, now), Duration::ZERO);
        assert_eq!(pace.delay(10, now), Duration::from_millis(500));
        assert_eq!(pace.delay(1, now), Duration::from_millis(600));
        // 600 ms later only the remaining 10 ms are waited.
        let later = now + Duration::from_millis(600);
        assert_eq!(pace.delay(1, later), Duration::from_millis(10));
    }

    #[test]
    fn idle_time_is_not_saved_up() {
        let mut pace = Pace::new(Some(10));
        let now = Instant::now();
        assert_eq!(pace.delay(1, now), Duration::ZERO);
        let much_later = now + Duration::from_secs(60);
        assert_eq!(pace.delay(10, much_later), Duration::ZERO);
        assert_eq!(pace.delay(1, much_later), Duration::from_secs(1));
    }

    #[test]
    fn low_rates_take_small_batches() {
        assert_eq!(Pace::new(Some(100)).batch(1000), 5);
        assert_eq!(Pace::new(Some(10)).batch(1000), 1);
        assert_eq!(Pace::new(Some(1_000_000)).batch(1000), 1000);
    }
}
