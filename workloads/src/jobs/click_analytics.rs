//! `click-analytics`: what each user spent in transactions, per 1-minute tumbling event-time
//! window, with the watermark trailing the largest event time seen by 10 minutes.
//!
//! ```text
//! clicks --> [source -> valid transactions by user] ==by user==>
//!     [1 min tumbling count/sum/min/max -> format] --> click-analytics
//! ```
//!
//! Only valid events (see [`crate::clicks::validate`]) whose `action` is `transaction` count.
//! Amounts are aggregated in whole cents, so that sums are exact; the output, keyed by user,
//! is `{"user_id", "window_end", "count", "sum", "avg", "min", "max"}` in dollars, where `avg`
//! is the sum over the count.

use super::{ExpectedRecords, Input, Keyed, Outputs, expect, valid_records, window_start};
use crate::clicks;
use crate::orders::to_cents;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use weir_engine::state::AggregateFunction;
use weir_engine::{DataStream, KafkaRecord, WindowAssigner, Windowed};

/// The job's name and output topic.
pub const NAME: &str = "click-analytics";
/// Window length: one minute.
pub const WINDOW_MS: i64 = 60_000;
/// How far the watermark trails the largest event time seen: ten minutes.
pub const OUT_OF_ORDERNESS_MS: i64 = 10 * 60_000;

/// One output record's value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserMinute {
    /// The user.
    pub user_id: String,
    /// The window's end, exclusive, in ms since the epoch.
    pub window_end: i64,
    /// Transactions in the window.
    pub count: u64,
    /// Their total amount.
    pub sum: f64,
    /// Their mean amount.
    pub avg: f64,
    /// The smallest amount.
    pub min: f64,
    /// The largest amount.
    pub max: f64,
}

impl UserMinute {
    /// The output for a window's count, sum, least and greatest amount in cents.
    fn of(user_id: String, window_end: i64, count: u64, cents: (i64, i64, i64)) -> Self {
        let (sum, min, max) = cents;
        Self {
            user_id,
            window_end,
            count,
            sum: sum as f64 / 100.0,
            avg: sum as f64 / count as f64 / 100.0,
            min: min as f64 / 100.0,
            max: max as f64 / 100.0,
        }
    }
}

/// The fields of a click the job reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Click {
    user_id: String,
    action: String,
    amount: f64,
}

/// Count, sum, least and greatest of a user's amounts in cents.
#[derive(Clone)]
struct CentsStats;

type Stats = (u64, i64, i64, i64);

impl AggregateFunction<(String, i64)> for CentsStats {
    type Acc = Stats;
    type Out = Stats;

    fn create_accumulator(&self) -> Stats {
        (0, 0, i64::MAX, i64::MIN)
    }

    fn add(&self, (_, cents): &(String, i64), a: &mut Stats) {
        *a = (a.0 + 1, a.1 + cents, a.2.min(*cents), a.3.max(*cents));
    }

    fn get_result(&self, a: &Stats) -> Stats {
        *a
    }

    fn merge(&self, a: &mut Stats, b: Stats) {
        *a = (a.0 + b.0, a.1 + b.1, a.2.min(b.2), a.3.max(b.3));
    }
}

/// The job's logic: each user's valid transactions, aggregated in cents per minute.
pub fn logic(input: &DataStream<KafkaRecord>) -> Outputs {
    let minutes = valid_records(input, clicks::validate)
        .flat_map(|r: KafkaRecord| serde_json::from_slice::<Click>(&r.value).ok())
        .filter(|c: &Click| c.action == "transaction")
        .map(|c: Click| (c.user_id, to_cents(c.amount)))
        .key_by(|(user, _): &(String, i64)| user.clone())
        .window(WindowAssigner::tumbling(Duration::from_millis(
            WINDOW_MS as u64,
        )))
        .aggregate(CentsStats)
        .uid("user-windows")
        .map(|w: Windowed<String, Stats>| {
            let (count, sum, min, max) = w.value;
            let minute = UserMinute::of(w.key.clone(), w.window.end, count, (sum, min, max));
            Keyed::json(w.key, &minute)
        });
    Outputs::one(NAME, minutes)
}

/// The exact output for `input`, computed without the engine.
pub fn oracle(input: &[Input<'_>]) -> ExpectedRecords {
    // (user, window end) -> (count, sum, min, max) in cents.
    let mut windows: BTreeMap<(String, i64), (u64, i64, i64, i64)> = BTreeMap::new();
    for i in input {
        if clicks::validate(i.value).is_err() {
            continue;
        }
        let Ok(event) = serde_json::from_slice::<serde_json::Value>(i.value) else {
            continue;
        };
        let (Some(user), Some(amount)) = (event["user_id"].as_str(), event["amount"].as_f64())
        else {
            continue;
        };
        if event["action"] != "transaction" {
            continue;
        }
        let cents = to_cents(amount);
        let end = window_start(i.ts, WINDOW_MS) + WINDOW_MS;
        let w = windows
            .entry((user.to_string(), end))
            .or_insert((0, 0, i64::MAX, i64::MIN));
        *w = (w.0 + 1, w.1 + cents, w.2.min(cents), w.3.max(cents));
    }
    let mut expected = ExpectedRecords::new();
    for ((user, end), (count, sum, min, max)) in windows {
        let value = UserMinute::of(user.clone(), end, count, (sum, min, max));
        let value = serde_json::to_value(value).expect("results serialize");
        expect(&mut expected, user.as_bytes(), &value);
    }
    expected
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::{GeneratorConfig, Workload};
    use crate::jobs::{Job, assert_matches_oracle};

    #[test]
    fn the_job_and_the_oracle_agree_on_generated_clicks() {
        let config = GeneratorConfig {
            rate_per_s: 5.0,
            keys: 10,
            invalid_fraction: 0.05,
            ..GeneratorConfig::default()
        };
        let events: Vec<_> = Workload::Clicks
            .events(7, &config, 5_000)
            .unwrap()
            .collect();
        let input: Vec<Input<'_>> = events.iter().map(Input::from).collect();
        assert!(oracle(&input).len() > 50);
        assert_matches_oracle(Job::ClickAnalytics, &events);
    }
}
