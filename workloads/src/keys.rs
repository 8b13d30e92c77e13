//! Key distributions: uniform, or Zipf-skewed so that a few keys are hot.

use rand::Rng;
use rand_distr::{Distribution, Zipf};

/// How keys are drawn from `0..n`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum KeyDist {
    /// Every key equally likely.
    Uniform {
        /// Number of keys.
        n: u64,
    },
    /// Key `k` has weight proportional to `1 / (k + 1)^s`.
    Zipf {
        /// Number of keys.
        n: u64,
        /// Skew exponent; 0 is uniform, about 1 is typical of real traffic.
        s: f64,
    },
}

impl KeyDist {
    /// Number of distinct keys.
    pub fn keys(&self) -> u64 {
        match *self {
            KeyDist::Uniform { n } | KeyDist::Zipf { n, .. } => n,
        }
    }

    /// Draws a key in `0..n`.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        match *self {
            KeyDist::Uniform { n } => rng.random_range(0..n.max(1)),
            KeyDist::Zipf { n, s } => {
                let z = Zipf::new(n.max(1) as f64, s).expect("zipf parameters are valid");
                (z.sample(rng) as u64)
                    .saturating_sub(1)
                    .min(n.saturating_sub(1))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn zipf_is_skewed_and_in_range() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let d = KeyDist::Zipf { n: 100, s: 1.1 };
        let mut counts = [0u32; 100];
        for _ in 0..20_000 {
            counts[d.sample(&mut rng) as usize] += 1;
        }
        assert!(
            counts[0] > 5 * counts[50],
            "key 0 is hot: {} vs {}",
            counts[0],
            counts[50]
        );
        let u = KeyDist::Uniform { n: 10 };
        for _ in 0..1000 {
            assert!(u.sample(&mut rng) < 10);
        }
    }
}
