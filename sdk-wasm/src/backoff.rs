//! Reconnect delays: exponential backoff with full jitter, as a pure function.
//!
//! The window for attempt `n` is `[min, min(max, min * 2^(n+1))]` and the delay is drawn uniformly
//! from it. The floor keeps a flapping network from being hammered; the random spread keeps many
//! browsers that lost the same relay from coming back in lockstep.

/// Reconnect delay bounds, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Shortest delay.
    pub min_ms: u32,
    /// Longest delay.
    pub max_ms: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            min_ms: 500,
            max_ms: 20_000,
        }
    }
}

impl Backoff {
    /// Bounds with `min <= max` enforced (a larger `min` wins).
    pub fn new(min_ms: u32, max_ms: u32) -> Self {
        Self {
            min_ms,
            max_ms: max_ms.max(min_ms),
        }
    }

    /// The largest delay attempt `attempt` (0-based) may wait.
    pub fn ceiling(self, attempt: u32) -> u32 {
        let doubled = u64::from(self.min_ms) << attempt.saturating_add(1).min(32);
        doubled.min(u64::from(self.max_ms)) as u32
    }

    /// The delay before attempt `attempt`, given `unit`, a uniform random number in `[0, 1)`.
    pub fn delay(self, attempt: u32, unit: f64) -> u32 {
        let ceiling = self.ceiling(attempt);
        let spread = f64::from(ceiling - self.min_ms) * unit.clamp(0.0, 1.0);
        (self.min_ms + spread as u32).min(ceiling)
    }
}

/// A small xorshift generator: enough to spread reconnects, seeded from `Math.random` in the
/// browser and from a constant in tests.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// A generator from any seed (0 is replaced, xorshift cannot leave it).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn ceiling_doubles_up_to_max() {
        let b = Backoff::new(500, 20_000);
        let ceilings: Vec<u32> = (0..8).map(|n| b.ceiling(n)).collect();
        assert_eq!(
            ceilings,
            [1000, 2000, 4000, 8000, 16_000, 20_000, 20_000, 20_000]
        );
        assert_eq!(b.ceiling(u32::MAX), 20_000);
    }

    #[test]
    fn delays_stay_within_bounds() {
        let b = Backoff::new(500, 20_000);
        for n in 0..40 {
            for unit in [0.0, 0.25, 0.5, 0.999_999, 1.0, -3.0, 7.0] {
                let d = b.delay(n, unit);
                assert!(
                    d >= 500 && d <= b.ceiling(n),
                    "attempt {n} unit {unit}: {d}"
                );
            }
        }
        assert_eq!(b.delay(0, 0.0), 500);
        assert_eq!(b.delay(3, 0.5), 500 + 3750);
        assert_eq!(b.delay(30, 1.0), 20_000);
    }

    #[test]
    fn min_above_max_is_clamped() {
        let b = Backoff::new(3000, 1000);
        assert_eq!(b.max_ms, 3000);
        assert_eq!(b.delay(5, 0.7), 3000);
    }

    #[test]
    fn jitter_spreads_delays_over_the_window() {
        let b = Backoff::new(500, 20_000);
        let mut j = Jitter::new(42);
        let delays: Vec<u32> = (0..2000).map(|_| b.delay(6, j.unit())).collect();
        let min = *delays.iter().min().unwrap();
        let max = *delays.iter().max().unwrap();
        assert!(min < 1500, "{min}");
        assert!(max > 19_000, "{max}");
        // Roughly uniform: each quarter of the window gets a fair share.
        let width = f64::from(20_000 - 500);
        let mut quarters = [0u32; 4];
        for d in &delays {
            let q = ((f64::from(d - 500) / width) * 4.0).min(3.0) as usize;
            quarters[q] += 1;
        }
        for q in quarters {
            assert!((350..650).contains(&q), "{quarters:?}");
        }
        let mut distinct = delays.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() > 1000);
    }

    #[test]
    fn jitter_units_are_in_range() {
        let mut j = Jitter::new(0);
        for _ in 0..10_000 {
            let u = j.unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
