//! `order-aggregates`: the high-value orders each customer placed, per 5-minute tumbling
//! event-time window.
//!
//! ```text
//! orders --> [source -> high-value orders by customer] ==by customer==>
//!     [5 min tumbling count/sum -> format] --> order-aggregates
//! ```
//!
//! An order counts once, at its `order_created` event, when the event is valid (see
//! [`crate::orders::validate`]) and its `total_amount` is above 100.00. Amounts are summed in
//! whole cents, so that the totals are exact. Each output record is keyed by customer, with the
//! value `{"customer_id", "window_end", "count", "total"}`.
//!
//! Rows behind the watermark are dropped by the window, as in any event-time job; the oracle
//! models no lateness, so a run checked against it must keep its input's disorder below the
//! job's out-of-orderness.

use super::{ExpectedRecords, Input, Keyed, Outputs, expect, order_events, window_start};
use crate::orders::{self, OrderEvent};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use weir_engine::state::CountSum;
use weir_engine::{DataStream, KafkaRecord, WindowAssigner, Windowed};

/// The job's name, and the topic it writes.
pub const NAME: &str = "order-aggregates";
/// Window length: five minutes.
pub const WINDOW_MS: i64 = 5 * 60 * 1_000;
/// Orders count when their total is above this, in cents.
pub const THRESHOLD_CENTS: i64 = 10_000;

/// One output record's value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    /// The customer.
    pub customer_id: String,
    /// The window's end, exclusive, in ms since the epoch.
    pub window_end: i64,
    /// High-value orders the customer placed in the window.
    pub count: u64,
    /// Their total amount.
    pub total: f64,
}

/// The job's logic: valid creations above the threshold, counted and summed per customer in
/// 5-minute tumbling windows.
pub fn logic(input: &DataStream<KafkaRecord>) -> Outputs {
    let aggregates = order_events(input)
        .filter(|o: &OrderEvent| o.is_creation() && o.total_cents > THRESHOLD_CENTS)
        .key_by(|o: &OrderEvent| o.customer_id.clone())
        .window(WindowAssigner::tumbling(Duration::from_millis(
            WINDOW_MS as u64,
        )))
        .aggregate(CountSum::new(|o: &OrderEvent| o.total_cents))
        .uid("customer-windows")
        .map(|w: Windowed<String, (u64, i64)>| {
            let aggregate = Aggregate {
                customer_id: w.key.clone(),
                window_end: w.window.end,
                count: w.value.0,
                total: w.value.1 as f64 / 100.0,
            };
            Keyed::json(w.key, &aggregate)
        });
    Outputs::one(NAME, aggregates)
}

/// What the oracle expects of one (customer, window end): count and total in cents.
pub type Expected = BTreeMap<(String, i64), (u64, i64)>;

/// The exact output for `input`, given as (value, event time) pairs, computed without the
/// engine.
pub fn oracle<'a>(input: impl IntoIterator<Item = (&'a [u8], i64)>) -> Expected {
    let mut expected = Expected::new();
    for (value, ts) in input {
        let Ok(order) = orders::parse_event(value) else {
            continue;
        };
        if !order.is_creation() || order.total_cents <= THRESHOLD_CENTS {
            continue;
        }
        let end = window_start(ts, WINDOW_MS) + WINDOW_MS;
        let entry = expected.entry((order.customer_id, end)).or_default();
        entry.0 += 1;
        entry.1 += order.total_cents;
    }
    expected
}

/// The oracle's output as the records the job must commit.
pub fn expected_records(input: &[Input<'_>]) -> ExpectedRecords {
    let mut expected = ExpectedRecords::new();
    for ((customer, end), (count, cents)) in oracle(input.iter().map(|i| (i.value, i.ts))) {
        let value = serde_json::json!({
            "customer_id": customer,
            "window_end": end,
            "count": count,
            "total": cents as f64 / 100.0,
        });
        expect(&mut expected, customer.as_bytes(), &value);
    }
    expected
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::{Job, assert_matches_oracle, test_orders};

    #[test]
    fn the_job_and_the_oracle_agree_on_generated_orders() {
        let events = test_orders(2.0, 2_000);
        let expected = oracle(events.iter().map(|e| (e.value.as_slice(), e.timestamp_ms)));
        assert!(expected.len() > 20, "{} windows", expected.len());
        assert_matches_oracle(Job::OrderAggregates, &events);
    }

    #[test]
    fn invalid_and_small_orders_do_not_count() {
        let event = |kind: &str, total: f64| {
            serde_json::to_vec(&serde_json::json!({
                "event_type": kind, "order_id": 1, "customer_id": "c", "total_amount": total,
                "items": [], "status": "created", "timestamp": 5,
            }))
            .unwrap()
        };
        let big = event("order_created", 100.01);
        let small = event("order_created", 100.0);
        let update = event("order_updated", 500.0);
        let negative = event("order_created", -500.0);
        let seed = br#"{"order_id": "ORD-1", "customer_id": "c", "total_amount": 150.0, "timestamp": 1.5}"#;
        let expected = oracle([
            (big.as_slice(), 5),
            (small.as_slice(), 5),
            (update.as_slice(), 5),
            (negative.as_slice(), 5),
            (b"not json".as_slice(), 5),
            (seed.as_slice(), 6),
        ]);
        assert_eq!(
            expected,
            Expected::from([(("c".to_string(), WINDOW_MS), (2, 25_001))])
        );
    }
}
