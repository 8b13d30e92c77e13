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

use super::{
    ExpectedRecords, Input, Settings, expect, keyed_windows, parse_valid, to_cents, tumbling,
    window_start, with_json,
};
use crate::clicks;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use weir_engine::runtime::element::Row;
use weir_engine::runtime::window::WindowResult;
use weir_engine::runtime::{Functions, JobGraph, RowFunction};

/// The job's name and output topic.
pub const NAME: &str = "click-analytics";
/// Window length: one minute.
pub const WINDOW_MS: i64 = 60_000;
/// How far the watermark trails the largest event time seen: ten minutes.
pub const OUT_OF_ORDERNESS_MS: i64 = 10 * 60_000;

const TRANSACTIONS: &str = "click-analytics/transactions-by-user";
const FORMAT: &str = "click-analytics/format";

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

/// The job's graph.
pub fn graph(settings: &Settings) -> JobGraph {
    let windows = ("user-windows", tumbling(WINDOW_MS));
    keyed_windows(NAME, settings, TRANSACTIONS, windows, FORMAT)
}

/// Adds the job's functions to `functions`.
pub fn register(functions: Functions) -> Functions {
    functions
        .with(TRANSACTIONS, Arc::new(TransactionsByUser))
        .with(FORMAT, Arc::new(Format))
}

/// The fields of a click the job reads.
#[derive(Deserialize)]
struct Click {
    user_id: String,
    action: String,
    amount: f64,
}

/// Keeps valid transactions, keyed by user, valued in cents.
struct TransactionsByUser;

impl RowFunction for TransactionsByUser {
    fn apply(&self, row: Row, out: &mut Vec<Row>) {
        let Some(click) = parse_valid::<Click, _>(clicks::validate, &row.value) else {
            return;
        };
        if click.action == "transaction" {
            out.push(Row {
                key: Bytes::from(click.user_id),
                value: Bytes::from(to_cents(click.amount).to_string()),
                ts: row.ts,
            });
        }
    }
}

/// Turns a window's aggregate of cents into the output record.
struct Format;

impl RowFunction for Format {
    fn apply(&self, row: Row, out: &mut Vec<Row>) {
        let Ok(w) = serde_json::from_slice::<WindowResult>(&row.value) else {
            return;
        };
        // Every row the window saw had an amount, so a fired window has both extremes.
        let (Some(min), Some(max)) = (w.min, w.max) else {
            return;
        };
        let user = String::from_utf8_lossy(&row.key).into_owned();
        let value = UserMinute::of(user, w.end, w.count, (w.sum, min.value, max.value));
        out.push(with_json(row, &value));
    }
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
    use crate::jobs::row_of;
    use weir_engine::runtime::window::KeyedWindows;

    #[test]
    fn the_functions_through_a_window_match_the_oracle() {
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
        let expected = oracle(&input);
        assert!(expected.len() > 50, "{} windows", expected.len());
        let mut window = KeyedWindows::new(tumbling(WINDOW_MS));
        let mut rows = Vec::new();
        for e in &events {
            let row = row_of(e);
            TransactionsByUser.apply(row, &mut rows);
        }
        rows.iter().for_each(|r| window.add(r));
        let mut got = ExpectedRecords::new();
        for fired in window.advance(i64::MAX) {
            let mut out = Vec::new();
            Format.apply(fired, &mut out);
            let value: serde_json::Value = serde_json::from_slice(&out[0].value).unwrap();
            expect(&mut got, &out[0].key, &value);
        }
        let show = |m: &ExpectedRecords, n: &ExpectedRecords| -> Vec<String> {
            m.keys()
                .filter(|k| !n.contains_key(k))
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .collect()
        };
        assert_eq!(show(&got, &expected), show(&expected, &got));
    }
}
