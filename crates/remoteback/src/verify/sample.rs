//! `--sample RATE`: a deterministic subset of the keys.
//!
//! A key is chosen by a hash of its bytes alone, so the same keys are
//! chosen on the source and on the target, in every round and in every
//! run: a key sampled while walking the source is sampled again when the
//! target is walked for extra keys, and a difference can be checked again.

/// Which keys a verification looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Keys whose hash is below this are chosen; `None` chooses all.
    below: Option<u64>,
}

impl Sample {
    /// Every key.
    pub const ALL: Sample = Sample { below: None };

    /// A share `rate` of the keys, `0 < rate <= 1`.
    pub fn new(rate: f64) -> Result<Sample, String> {
        if !(rate > 0.0 && rate <= 1.0) {
            return Err(format!("the sample rate must be > 0 and <= 1, not {rate}"));
        }
        if rate == 1.0 {
            return Ok(Sample::ALL);
        }
        // 2^64 · rate, below 2^64 since rate < 1.
        let below = (rate * 18_446_744_073_709_551_616.0) as u64;
        Ok(Sample {
            below: Some(below.max(1)),
        })
    }

    /// The share of keys chosen, for estimates of the work.
    pub fn rate(&self) -> f64 {
        match self.below {
            None => 1.0,
            Some(b) => b as f64 / 18_446_744_073_709_551_616.0,
        }
    }

    pub fn chooses(&self, key: &[u8]) -> bool {
        match self.below {
            None => true,
            Some(below) => hash(key) < below,
        }
    }
}

/// FNV-1a over the key, then the splitmix64 finalizer so that keys that
/// differ in their last byte (`user:1`, `user:2`) spread over the range.
/// Fixed here rather than std's hasher, whose output may change between
/// Rust releases.
fn hash(key: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in key {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_outside_the_range_are_refused() {
        for bad in [0.0, -0.5, 1.5, f64::NAN] {
            assert!(Sample::new(bad).is_err(), "{bad}");
        }
        assert_eq!(Sample::new(1.0), Ok(Sample::ALL));
    }

    #[test]
    fn the_choice_is_by_the_key_alone() {
        let a = Sample::new(0.3).unwrap();
        let b = Sample::new(0.3).unwrap();
        for i in 0..1000 {
            let key = format!("user:{i}");
            assert_eq!(a.chooses(key.as_bytes()), b.chooses(key.as_bytes()));
        }
        // Fixed values: the same keys in every run and every build.
        assert_eq!(hash(b""), 0xf52a_15e9_a9b5_e89b);
        assert_eq!(hash(b"user:1"), 0x3290_bc1a_92ad_86c2);
    }

    #[test]
    fn about_the_asked_share_is_chosen() {
        let sample = Sample::new(0.1).unwrap();
        let chosen = (0..100_000)
            .filter(|i| sample.chooses(format!("key:{i}").as_bytes()))
            .count();
        assert!((9_000..11_000).contains(&chosen), "{chosen}");
        assert!((sample.rate() - 0.1).abs() < 1e-9);
        assert!((0..1000).all(|i| Sample::ALL.chooses(format!("{i}").as_bytes())));
    }

    #[test]
    fn a_smaller_rate_chooses_a_subset() {
        let small = Sample::new(0.05).unwrap();
        let large = Sample::new(0.5).unwrap();
        for i in 0..10_000 {
            let key = format!("k{i}");
            if small.chooses(key.as_bytes()) {
                assert!(large.chooses(key.as_bytes()));
            }
        }
    }
}
