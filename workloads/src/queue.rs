//! The queue workload: producers append unique values under keys; consumers read them back.
//!
//! Every value names its producer and its sequence number, so a value seen twice, or seen at
//! two offsets, is a duplicate by construction.

use crate::keys::KeyDist;
use rand::Rng;

/// Shape of a queue workload.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QueueWorkload {
    /// Keys of the records.
    pub keys: KeyDist,
    /// Shortest pause between two sends of one producer, in milliseconds.
    pub send_gap_ms_min: u64,
    /// Longest pause between two sends of one producer, in milliseconds.
    pub send_gap_ms_max: u64,
}

/// One record to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueSend {
    /// Key.
    pub key: String,
    /// Value, unique across the run.
    pub value: String,
}

impl QueueWorkload {
    /// The `n`th record of producer `process`.
    pub fn send<R: Rng + ?Sized>(&self, process: usize, n: u64, rng: &mut R) -> QueueSend {
        QueueSend {
            key: format!("k{}", self.keys.sample(rng)),
            value: format!("p{process}-{n}"),
        }
    }

    /// The pause before the next send, in milliseconds.
    pub fn gap_ms<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        rng.random_range(self.send_gap_ms_min..=self.send_gap_ms_max.max(self.send_gap_ms_min))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn values_are_unique_and_generation_is_reproducible() {
        let w = QueueWorkload {
            keys: KeyDist::Uniform { n: 5 },
            send_gap_ms_min: 1,
            send_gap_ms_max: 3,
        };
        let run = |seed| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            (0..50)
                .map(|n| w.send(n as usize % 2, n, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        let mut values: Vec<_> = run(9).into_iter().map(|s| s.value).collect();
        values.sort();
        values.dedup();
        assert_eq!(values.len(), 50);
    }
}
