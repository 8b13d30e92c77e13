//! The clicks workload: what users do on a shop's site (`click`, `purchase` or `transaction`),
//! keyed by `user_id`, with users drawn from the configured skew.
//!
//! An invalid event has exactly one defect, which [`validate`] finds again from the value
//! alone: no `user_id`, a negative `amount`, or an `action` outside the three known ones.

use crate::generator::{
    Event, EventTime, GeneratorConfig, Invalid, amount_field, count_field, money, one_of, parse,
    roll_invalid, str_field,
};
use crate::keys::KeyDist;
use rand::Rng;
use serde_json::json;
use weir_seams::rng::{self, WeirRng};

/// The values of `action`.
pub const ACTIONS: [&str; 3] = ["click", "purchase", "transaction"];
/// The defects of invalid events, one per event.
const DEFECTS: [Invalid; 3] = [
    Invalid::Missing("user_id"),
    Invalid::Negative("amount"),
    Invalid::Unknown("action"),
];

/// Generates click events: an iterator over exactly the number of events asked for.
pub struct Clicks {
    rng: WeirRng,
    time: EventTime,
    users: KeyDist,
    invalid_fraction: f64,
    left: u64,
}

impl Clicks {
    /// The first `count` click events for `seed` and `config`.
    pub fn new(seed: u64, config: &GeneratorConfig, count: u64) -> Result<Self, String> {
        config.validate()?;
        Ok(Self {
            rng: rng::derive(seed, "workloads/clicks"),
            time: EventTime::new(config),
            users: config.key_dist(),
            invalid_fraction: config.invalid_fraction,
            left: count,
        })
    }
}

impl Iterator for Clicks {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        self.left = self.left.checked_sub(1)?;
        let (timestamp_ms, late) = self.time.next(&mut self.rng);
        let user = format!("user-{}", self.users.sample(&mut self.rng));
        // Most visits only click; a few buy, fewer make a larger transaction.
        let (action, amount_cents) = match self.rng.random_range(0..100) {
            0..80 => ("click", 0),
            80..95 => ("purchase", self.rng.random_range(100..=50_000)),
            _ => ("transaction", self.rng.random_range(100..=200_000)),
        };
        let invalid = roll_invalid(&mut self.rng, self.invalid_fraction)
            .then(|| DEFECTS[self.rng.random_range(0..DEFECTS.len())]);
        let value = json!({
            "user_id": user,
            "action": action,
            "amount": money(amount_cents),
            "timestamp": timestamp_ms,
        });
        Some(Event::made(
            user.into_bytes(),
            value,
            (timestamp_ms, late),
            invalid,
        ))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.left).unwrap_or(usize::MAX);
        (n, Some(n))
    }
}

/// Checks a click event as a validating job would, naming the first defect found.
pub fn validate(value: &[u8]) -> Result<(), Invalid> {
    let o = parse(value)?;
    str_field(&o, "user_id")?;
    one_of(&o, "action", &ACTIONS)?;
    amount_field(&o, "amount")?;
    count_field(&o, "timestamp")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::testing::{self, N};
    use crate::generator::{Skew, Workload};

    #[test]
    fn same_seed_same_events_other_seed_other_events() {
        testing::assert_deterministic(Workload::Clicks);
    }

    #[test]
    fn fractions_disorder_and_defects_are_as_designed() {
        testing::assert_designed(Workload::Clicks);
    }

    #[test]
    fn clicks_are_free_and_keyed_by_user() {
        let mut actions = [0usize; 3];
        for e in Clicks::new(2, &GeneratorConfig::default(), N).unwrap() {
            let o = parse(&e.value).unwrap();
            assert_eq!(o["user_id"].as_str().unwrap().as_bytes(), e.key);
            let a = ACTIONS.iter().position(|a| *a == o["action"]).unwrap();
            actions[a] += 1;
            assert_eq!(a == 0, o["amount"].as_f64().unwrap() == 0.0, "{o:?}");
        }
        assert!(actions.iter().all(|n| *n > 0), "{actions:?}");
    }

    #[test]
    fn zipf_makes_a_hot_user() {
        let user = |o: &serde_json::Map<String, serde_json::Value>| {
            o.get("user_id").map(|u| u.to_string())
        };
        let uniform = testing::top_count(Workload::Clicks, Skew::Uniform, user);
        let zipf = testing::top_count(Workload::Clicks, Skew::Zipf { exponent: 1.1 }, user);
        assert!(zipf > 10 * uniform, "top user {zipf} vs {uniform}");
    }
}
