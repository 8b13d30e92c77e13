//! `order-sessions`: each customer's ordering sessions (orders no more than 10 minutes apart),
//! and each customer's running totals in event-time order.
//!
//! ```text
//! orders --> [source -> orders by customer] ==by customer==>
//!     [running totals -> side output: order-running-totals -> amounts] ==by customer==>
//!     [10 min session windows -> format] --> order-sessions
//! ```
//!
//! An order counts once, at its valid `order_created` event (see [`crate::orders::validate`]),
//! with its `total_amount` in whole cents. Two topics come out, both keyed by customer:
//!
//! - `order-running-totals`: one record per order, released once the watermark passes it, with
//!   the customer's order count and total so far, `{"customer_id", "order_id", "timestamp",
//!   "amount", "count", "total"}`. Orders with equal event times count in the order of their
//!   amounts in cents as text, then of their ids;
//! - `order-sessions`: one record per session, `{"customer_id", "session_start",
//!   "session_end", "count", "total"}`, where the session ends 10 minutes after its last order.
//!
//! The second exchange re-keys by customer after the amounts step, because the runtime keys a
//! window only on a hash edge.

use super::{
    ExpectedRecords, Input, OrderFields, Settings, creation_by_customer, expect, linear, map,
    parse_valid, to_cents, windows, with_json,
};
use crate::orders;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use weir_engine::runtime::element::Row;
use weir_engine::runtime::running::RunningTotal;
use weir_engine::runtime::window::WindowResult;
use weir_engine::runtime::{Edge, Functions, JobGraph, OperatorSpec, RowFunction};
use weir_engine::stream::window::WindowAssigner;

/// The job's name, and the topic of its sessions.
pub const NAME: &str = "order-sessions";
/// The topic of its running totals.
pub const RUNNING_TOPIC: &str = "order-running-totals";
/// A session ends after this long without an order: ten minutes.
pub const GAP_MS: i64 = 10 * 60_000;

const ORDERS: &str = "order-sessions/orders-by-customer";
const RUNNING_FORMAT: &str = "order-sessions/running-format";
const AMOUNTS: &str = "order-sessions/amounts";
const FORMAT: &str = "order-sessions/format";

/// One record of `order-running-totals`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Running {
    /// The customer.
    pub customer_id: String,
    /// The order.
    pub order_id: u64,
    /// Its event time.
    pub timestamp: i64,
    /// Its amount.
    pub amount: f64,
    /// The customer's orders so far, this one included.
    pub count: u64,
    /// Their total amount.
    pub total: f64,
}

/// One record of `order-sessions`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The customer.
    pub customer_id: String,
    /// The first order's event time.
    pub session_start: i64,
    /// The last order's event time plus the gap.
    pub session_end: i64,
    /// Orders in the session.
    pub count: u64,
    /// Their total amount.
    pub total: f64,
}

/// The job's graph.
pub fn graph(settings: &Settings) -> JobGraph {
    linear(
        NAME,
        settings,
        vec![
            map("orders", Edge::Forward, ORDERS),
            ("running-totals", Edge::Hash, OperatorSpec::RunningTotals),
            (
                "running-totals-out",
                Edge::Forward,
                OperatorSpec::SideOutput {
                    function: RUNNING_FORMAT.into(),
                    topic: RUNNING_TOPIC.into(),
                    mode: settings.sink_mode,
                },
            ),
            map("amounts", Edge::Forward, AMOUNTS),
            windows("sessions", WindowAssigner::Session { gap: GAP_MS }),
            map("format", Edge::Forward, FORMAT),
        ],
    )
}

/// Adds the job's functions to `functions`.
pub fn register(functions: Functions) -> Functions {
    functions
        .with(ORDERS, Arc::new(OrdersByCustomer))
        .with(RUNNING_FORMAT, Arc::new(RunningFormat))
        .with(AMOUNTS, Arc::new(Amounts))
        .with(FORMAT, Arc::new(Format))
}

/// Keeps valid creations, keyed by customer, valued `<cents> <order id>`.
struct OrdersByCustomer;

impl RowFunction for OrdersByCustomer {
    fn apply(&self, row: Row, out: &mut Vec<Row>) {
        let order = parse_valid::<OrderFields, _>(orders::validate, &row.value);
        out.extend(order.and_then(|o| creation_by_customer(o, row.ts)));
    }
}

/// A released running total, as its record.
struct RunningFormat;

impl RowFunction for RunningFormat {
    fn apply(&self, row: Row, out: &mut Vec<Row>) {
        let Ok(t) = serde_json::from_slice::<RunningTotal>(&row.value) else {
            return;
        };
        let Ok(order_id) = t.of.parse::<u64>() else {
            return;
        };
        let running = Running {
            customer_id: String::from_utf8_lossy(&row.key).into_owned(),
            order_id,
            timestamp: row.ts,
            amount: t.value as f64 / 100.0,
            count: t.count,
            total: t.sum as f64 / 100.0,
        };
        out.push(with_json(row, &running));
    }
}

/// A released running total back to the order's amount, for the session windows.
struct Amounts;

impl RowFunction for Amounts {
    fn apply(&self, row: Row, out: &mut Vec<Row>) {
        if let Ok(t) = serde_json::from_slice::<RunningTotal>(&row.value) {
            out.push(Row {
                value: Bytes::from(t.value.to_string()),
                ..row
            });
        }
    }
}

/// A fired session, as its record.
struct Format;

impl RowFunction for Format {
    fn apply(&self, row: Row, out: &mut Vec<Row>) {
        let Ok(w) = serde_json::from_slice::<WindowResult>(&row.value) else {
            return;
        };
        let session = Session {
            customer_id: String::from_utf8_lossy(&row.key).into_owned(),
            session_start: w.start,
            session_end: w.end,
            count: w.count,
            total: w.sum as f64 / 100.0,
        };
        out.push(with_json(row, &session));
    }
}

/// The exact output for `input`, computed without the engine: the sessions, then the running
/// totals.
pub fn oracle(input: &[Input<'_>]) -> (ExpectedRecords, ExpectedRecords) {
    // Customer -> (event time, amount in cents as text then order id, cents, order id).
    let mut by_customer: BTreeMap<String, Vec<(i64, String, i64, u64)>> = BTreeMap::new();
    for i in input {
        if orders::validate(i.value).is_err() {
            continue;
        }
        let Ok(e) = serde_json::from_slice::<serde_json::Value>(i.value) else {
            continue;
        };
        let (Some(customer), Some(order_id), Some(amount)) = (
            e["customer_id"].as_str(),
            e["order_id"].as_u64(),
            e["total_amount"].as_f64(),
        ) else {
            continue;
        };
        if e["event_type"] != "order_created" {
            continue;
        }
        let cents = to_cents(amount);
        let tie = format!("{cents} {order_id}");
        by_customer
            .entry(customer.to_string())
            .or_default()
            .push((i.ts, tie, cents, order_id));
    }
    let (mut sessions, mut running) = (ExpectedRecords::new(), ExpectedRecords::new());
    for (customer, mut orders) in by_customer {
        orders.sort();
        let key = customer.as_bytes();
        let (mut count, mut total) = (0u64, 0i64);
        // The open session: start, last order's time, orders, cents.
        let mut session: Option<(i64, i64, u64, i64)> = None;
        let close = |s: (i64, i64, u64, i64), out: &mut ExpectedRecords| {
            let value = json!({
                "customer_id": customer, "session_start": s.0, "session_end": s.1 + GAP_MS,
                "count": s.2, "total": s.3 as f64 / 100.0,
            });
            expect(out, key, &value);
        };
        for (ts, _, cents, order_id) in orders {
            count += 1;
            total += cents;
            let value = json!({
                "customer_id": customer, "order_id": order_id, "timestamp": ts,
                "amount": cents as f64 / 100.0, "count": count, "total": total as f64 / 100.0,
            });
            expect(&mut running, key, &value);
            session = match session {
                Some(s) if ts - s.1 <= GAP_MS => Some((s.0, ts, s.2 + 1, s.3 + cents)),
                Some(s) => {
                    close(s, &mut sessions);
                    Some((ts, ts, 1, cents))
                }
                None => Some((ts, ts, 1, cents)),
            };
        }
        if let Some(s) = session {
            close(s, &mut sessions);
        }
    }
    (sessions, running)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::{GeneratorConfig, Skew, Workload};
    use crate::jobs::row_of;
    use weir_engine::runtime::running::KeyedRunning;
    use weir_engine::runtime::window::KeyedWindows;

    #[test]
    fn the_functions_through_the_operators_match_the_oracle() {
        let config = GeneratorConfig {
            rate_per_s: 0.5,
            keys: 200,
            skew: Skew::Zipf { exponent: 1.0 },
            invalid_fraction: 0.05,
            ..GeneratorConfig::default()
        };
        let events: Vec<_> = Workload::Orders
            .events(9, &config, 3_000)
            .unwrap()
            .collect();
        let input: Vec<Input<'_>> = events.iter().map(Input::from).collect();
        let (sessions, running) = oracle(&input);
        let run = |f: &dyn RowFunction, rows: Vec<Row>| {
            let mut out = Vec::new();
            rows.into_iter().for_each(|r| f.apply(r, &mut out));
            out
        };
        let rows = events.iter().map(row_of).collect();
        let mut totals = KeyedRunning::new();
        run(&OrdersByCustomer, rows)
            .iter()
            .for_each(|r| totals.add(r));
        let released = totals.advance(i64::MAX);
        let mut windows = KeyedWindows::new(WindowAssigner::Session { gap: GAP_MS });
        run(&Amounts, released.clone())
            .iter()
            .for_each(|r| windows.add(r));
        let collect = |rows: Vec<Row>| {
            let mut got = ExpectedRecords::new();
            for r in rows {
                let value: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
                expect(&mut got, &r.key, &value);
            }
            got
        };
        assert_eq!(collect(run(&RunningFormat, released)), running);
        let got_sessions = collect(run(&Format, windows.advance(i64::MAX)));
        assert_eq!(got_sessions, sessions);
        let orders: u64 = running.values().sum();
        assert!(
            (sessions.len() as u64) > 100 && (sessions.len() as u64) < orders,
            "{} sessions of {orders} orders",
            sessions.len()
        );
    }
}
