//! Expiries as `PTTL` gives them, and when two of them count as the same.
//!
//! The backup applies an expiry some time after the primary did and the
//! two sides are read a moment apart, so the remaining times differ a
//! little even on a perfect copy: `--ttl-tolerance` says how much is fine.
//! A key with an expiry on one side only is a difference whatever the
//! tolerance: one of the two copies will outlive the other forever.

use std::time::Duration;

/// A key's expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ttl {
    /// The key does not exist (`PTTL` -2).
    Absent,
    /// The key never expires (`PTTL` -1).
    Persistent,
    /// Milliseconds left.
    Ms(i64),
}

impl Ttl {
    /// From a `PTTL` reply.
    pub fn from_pttl(pttl: i64) -> Ttl {
        match pttl {
            -2 => Ttl::Absent,
            t if t < 0 => Ttl::Persistent,
            t => Ttl::Ms(t),
        }
    }

    pub fn exists(self) -> bool {
        self != Ttl::Absent
    }

    /// Whether the key's expiry on both sides is the same within `tolerance`.
    pub fn close(self, other: Ttl, tolerance: Duration) -> bool {
        match (self, other) {
            (Ttl::Ms(a), Ttl::Ms(b)) => u128::from(a.abs_diff(b)) <= tolerance.as_millis(),
            (a, b) => a == b,
        }
    }

    /// `no ttl`, `ttl 1500 ms`.
    pub fn describe(self) -> String {
        match self {
            Ttl::Absent => "none".to_string(),
            Ttl::Persistent => "no ttl".to_string(),
            Ttl::Ms(ms) => format!("ttl {ms} ms"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn pttl_replies() {
        assert_eq!(Ttl::from_pttl(-2), Ttl::Absent);
        assert_eq!(Ttl::from_pttl(-1), Ttl::Persistent);
        assert_eq!(Ttl::from_pttl(0), Ttl::Ms(0));
        assert_eq!(Ttl::from_pttl(1500), Ttl::Ms(1500));
        assert!(!Ttl::Absent.exists());
        assert!(Ttl::Persistent.exists());
    }

    #[test]
    fn expiries_within_the_tolerance_are_the_same() {
        assert!(Ttl::Ms(10_000).close(Ttl::Ms(9_000), SECOND));
        assert!(Ttl::Ms(9_000).close(Ttl::Ms(10_000), SECOND));
        assert!(!Ttl::Ms(10_000).close(Ttl::Ms(8_999), SECOND));
        assert!(Ttl::Ms(10_000).close(Ttl::Ms(10_000), Duration::ZERO));
        assert!(!Ttl::Ms(10_000).close(Ttl::Ms(10_001), Duration::ZERO));
        assert!(Ttl::Ms(10_000).close(Ttl::Ms(10_400), Duration::from_millis(500)));
    }

    #[test]
    fn an_expiry_on_one_side_only_always_differs() {
        let forever = Duration::from_secs(u64::MAX / 2);
        assert!(!Ttl::Persistent.close(Ttl::Ms(5), forever));
        assert!(!Ttl::Ms(5).close(Ttl::Persistent, forever));
        assert!(Ttl::Persistent.close(Ttl::Persistent, Duration::ZERO));
    }

    #[test]
    fn descriptions() {
        assert_eq!(Ttl::Persistent.describe(), "no ttl");
        assert_eq!(Ttl::Ms(1500).describe(), "ttl 1500 ms");
    }
}
