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

use super::{
    ExpectedRecords, Input, Settings, expect, keyed_windows, parse_valid, to_cents, tumbling,
    window_start, with_json,
};
use crate::orders;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use weir_engine::runtime::element::Row;
use weir_engine::runtime::window::WindowResult;
use weir_engine::runtime::{Functions, JobGraph, RowFunction};

/// The job's name, and the topic it writes.
pub const NAME: &str = "order-aggregates";
/// Window length: five minutes.
pub const WINDOW_MS: i64 = 5 * 60 * 1_000;
/// Orders count when their total is above this, in cents.
pub const THRESHOLD_CENTS: i64 = 10_000;

const HIGH_VALUE: &str = "order-aggregates/high-value-by-customer";
const FORMAT: &str = "order-aggregates/format";

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

/// The job's graph.
pub fn graph(settings: &Settings) -> JobGraph {
    let windows = ("customer-windows", tumbling(WINDOW_MS));
    keyed_windows(NAME, settings, HIGH_VALUE, windows, FORMAT)
}

/// Adds the job's functions to `functions`.
pub fn register(functions: Functions) -> Functions {
    functions
        .with(HIGH_VALUE, Arc::new(HighValueByCustomer))
        .with(FORMAT, Arc::new(Format))
}

/// The fields of an order event the job reads.
#[derive(Deserialize)]
struct OrderEvent {
    event_type: String,
    customer_id: String,
    total_amount: f64,
}

/// Keeps valid creations above the threshold, keyed by customer, valued in cents.
struct HighValueByCustomer;

impl RowFunction for HighValueByCustomer {
    fn apply(&self, row: Row, out: &mut Vec<Row>) {
        let Some(order) = parse_valid::<OrderEvent, _>(orders::validate, &row.value) else {
            return;
        };
        let cents = to_cents(order.total_amount);
        if order.event_type == "order_created" && cents > THRESHOLD_CENTS {
            out.push(Row {
                key: Bytes::from(order.customer_id),
                value: Bytes::from(cents.to_string()),
                ts: row.ts,
            });
        }
    }
}

/// Turns a window's count and sum of cents into the output record.
struct Format;

impl RowFunction for Format {
    fn apply(&self, row: Row, out: &mut Vec<Row>) {
        let Ok(w) = serde_json::from_slice::<WindowResult>(&row.value) else {
            return;
        };
        let aggregate = Aggregate {
            customer_id: String::from_utf8_lossy(&row.key).into_owned(),
            window_end: w.end,
            count: w.count,
            total: w.sum as f64 / 100.0,
        };
        out.push(with_json(row, &aggregate));
    }
}

/// What the oracle expects of one (customer, window end): count and total in cents.
pub type Expected = BTreeMap<(String, i64), (u64, i64)>;

/// The exact output for `input`, given as (value, event time) pairs, computed without the
/// engine.
pub fn oracle<'a>(input: impl IntoIterator<Item = (&'a [u8], i64)>) -> Expected {
    let mut expected = Expected::new();
    for (value, ts) in input {
        if orders::validate(value).is_err() {
            continue;
        }
        let Ok(event) = serde_json::from_slice::<serde_json::Value>(value) else {
            continue;
        };
        let created = event["event_type"] == "order_created";
        let cents = event["total_amount"].as_f64().map(to_cents).unwrap_or(0);
        let (Some(customer), true, true) = (
            event["customer_id"].as_str(),
            created,
            cents > THRESHOLD_CENTS,
        ) else {
            continue;
        };
        let end = window_start(ts, WINDOW_MS) + WINDOW_MS;
        let entry = expected.entry((customer.to_string(), end)).or_default();
        entry.0 += 1;
        entry.1 += cents;
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
    use crate::jobs::row_of;
    use crate::jobs::test_orders;

    /// Reads one output value back: the customer, window end, count and total in cents.
    fn decode(value: &[u8]) -> Option<(String, i64, u64, i64)> {
        let a: Aggregate = serde_json::from_slice(value).ok()?;
        Some((a.customer_id, a.window_end, a.count, to_cents(a.total)))
    }

    #[test]
    fn the_functions_and_the_oracle_agree_on_generated_orders() {
        let events = test_orders(2.0, 2_000);
        let expected = oracle(events.iter().map(|e| (e.value.as_slice(), e.timestamp_ms)));
        assert!(expected.len() > 20, "{} windows", expected.len());
        // The engine's path: filter, sum cents per window, format, read back.
        let mut sums: BTreeMap<(Bytes, i64), (u64, i64)> = BTreeMap::new();
        let mut rows = Vec::new();
        for e in &events {
            HighValueByCustomer.apply(row_of(e), &mut rows);
        }
        for r in rows {
            let end = r.ts - r.ts.rem_euclid(WINDOW_MS) + WINDOW_MS;
            let s = sums.entry((r.key, end)).or_default();
            s.0 += 1;
            s.1 += std::str::from_utf8(&r.value)
                .unwrap()
                .parse::<i64>()
                .unwrap();
        }
        let mut got = Expected::new();
        for ((key, end), (count, sum)) in sums {
            let window = WindowResult {
                start: end - WINDOW_MS,
                end,
                count,
                sum,
                min: None,
                max: None,
            };
            let mut out = Vec::new();
            let row = Row {
                key,
                value: Bytes::from(serde_json::to_vec(&window).unwrap()),
                ts: end - 1,
            };
            Format.apply(row, &mut out);
            let (customer, end, count, cents) = decode(&out[0].value).unwrap();
            got.insert((customer, end), (count, cents));
        }
        assert_eq!(got, expected);
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
        let expected = oracle([
            (big.as_slice(), 5),
            (small.as_slice(), 5),
            (update.as_slice(), 5),
            (negative.as_slice(), 5),
            (b"not json".as_slice(), 5),
        ]);
        assert_eq!(
            expected,
            Expected::from([(("c".to_string(), WINDOW_MS), (1, 10_001))])
        );
    }
}
