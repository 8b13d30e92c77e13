//! `order-pipeline`: validates orders, sends the invalid ones to a dead-letter topic with the
//! reason, enriches the valid ones from the customer table, upserts them into an orders table
//! exactly once, and aggregates each customer's orders over the last hour, every five minutes.
//!
//! ```text
//! orders --> [source -> dead letters: orders-dlq -> enrich -> upsert: table orders
//!             -> amounts by customer] ==by customer==>
//!     [1 h windows sliding by 5 min -> format] --> order-metrics
//! ```
//!
//! - `orders-dlq`: one record per rejected event, under the event's key, valued
//!   `{"reason", "order"}` with the event as text. An event is rejected when
//!   [`crate::orders::validate`] finds a defect, or when its customer is not in
//!   [`crate::customers`].
//! - Table [`TABLE`]: one row per order id, whose value is the order's latest accepted event
//!   with the customer's `customer_name`, `tier` and `region` added. Events of one order are
//!   in one input partition, so "latest" is the partition's order.
//! - `order-metrics`: per customer and window, `{"customer_id", "tier", "window_start",
//!   "window_end", "orders", "total", "largest", "largest_order_id"}` over the accepted
//!   `order_created` events, amounts summed in whole cents. Of equal largest amounts, the
//!   smaller order id (as text) is named.

use super::{
    ExpectedRecords, Input, OrderFields, Settings, creation_by_customer, expect, linear_to, map,
    to_cents, window_start,
};
use crate::{customers, orders};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::sync::Arc;
use weir_engine::runtime::element::Row;
use weir_engine::runtime::table::TableContent;
use weir_engine::runtime::window::WindowResult;
use weir_engine::runtime::{Edge, Functions, JobGraph, OperatorSpec, RowFunction};
use weir_engine::stream::window::WindowAssigner;

/// The job's name.
pub const NAME: &str = "order-pipeline";
/// The topic of its metrics.
pub const METRICS_TOPIC: &str = "order-metrics";
/// The topic of rejected events.
pub const DLQ_TOPIC: &str = "orders-dlq";
/// The table accepted orders are upserted into, by the name task managers register it under.
pub const TABLE: &str = "orders";
/// Window length: one hour.
pub const WINDOW_MS: i64 = 60 * 60_000;
/// Window slide: five minutes.
pub const SLIDE_MS: i64 = 5 * 60_000;

const DEAD_LETTERS: &str = "order-pipeline/dead-letters";
const ENRICH: &str = "order-pipeline/enrich";
const ORDER_ROW: &str = "order-pipeline/order-row";
const AMOUNTS: &str = "order-pipeline/amounts-by-customer";
const FORMAT: &str = "order-pipeline/format";

/// The table's content the oracle expects: order id to (value in [`super::canonical`] form,
/// upserts applied).
pub type ExpectedTable = BTreeMap<String, (Vec<u8>, u64)>;

/// One record of `order-metrics`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// The customer.
    pub customer_id: String,
    /// Their tier, from the customer table.
    pub tier: String,
    /// The window's start, inclusive, in ms since the epoch.
    pub window_start: i64,
    /// Its end, exclusive.
    pub window_end: i64,
    /// Orders the customer placed in the window.
    pub orders: u64,
    /// Their total amount.
    pub total: f64,
    /// The largest one's amount.
    pub largest: f64,
    /// The largest one's id.
    pub largest_order_id: u64,
}

/// The job's graph.
pub fn graph(settings: &Settings) -> JobGraph {
    let sliding = WindowAssigner::Sliding {
        size: WINDOW_MS,
        slide: SLIDE_MS,
        offset: 0,
    };
    linear_to(
        (NAME, METRICS_TOPIC),
        settings,
        vec![
            (
                "dead-letters",
                Edge::Forward,
                OperatorSpec::SideOutput {
                    function: DEAD_LETTERS.into(),
                    topic: DLQ_TOPIC.into(),
                    mode: settings.sink_mode,
                },
            ),
            map("enrich", Edge::Forward, ENRICH),
            (
                "orders-table",
                Edge::Forward,
                OperatorSpec::Upsert {
                    function: ORDER_ROW.into(),
                    table: TABLE.into(),
                },
            ),
            map("amounts", Edge::Forward, AMOUNTS),
            (
                "customer-windows",
                Edge::Hash,
                OperatorSpec::Window { assigner: sliding },
            ),
            map("format", Edge::Forward, FORMAT),
        ],
    )
}

/// Adds the job's functions to `functions`.
pub fn register(functions: Functions) -> Functions {
    functions
        .with(DEAD_LETTERS, Arc::new(DeadLetters))
        .with(ENRICH, Arc::new(Enrich))
        .with(ORDER_ROW, Arc::new(OrderRow))
        .with(AMOUNTS, Arc::new(Amounts))
        .with(FORMAT, Arc::new(Format))
}

/// The event, valid and enriched with its customer, or why it is rejected.
fn accept(value: &[u8]) -> Result<serde_json::Map<String, Value>, String> {
    orders::validate(value).map_err(|e| e.to_string())?;
    let Ok(Value::Object(mut order)) = serde_json::from_slice::<Value>(value) else {
        return Err("the event is not a JSON object".into());
    };
    let id = order["customer_id"].as_str().unwrap_or_default();
    let customer = customers::lookup(id)
        .ok_or_else(|| format!("customer_id {id} is not in the customer table"))?;
    order.insert("customer_name".into(), json!(customer.name));
    order.insert("tier".into(), json!(customer.tier));
    order.insert("region".into(), json!(customer.region));
    Ok(order)
}

/// The dead letter of a rejected event's value.
fn dead_letter(value: &[u8], reason: String) -> Value {
    json!({"reason": reason, "order": String::from_utf8_lossy(value)})
}

/// Rejected events, with their reasons.
struct DeadLetters;

impl RowFunction for DeadLetters {
    fn apply(&self, row: Row, out: &mut Vec<Row>) {
        if let Err(reason) = accept(&row.value) {
            let letter = dead_letter(&row.value, reason);
            out.push(Row {
                value: Bytes::from(letter.to_string()),
                ..row
            });
        }
    }
}

/// Accepted events, enriched, keyed by order id.
struct Enrich;

impl RowFunction for Enrich {
    fn apply(&self, row: Row, out: &mut Vec<Row>) {
        let Ok(order) = accept(&row.value) else {
            return;
        };
        let Some(id) = order["order_id"].as_u64() else {
            return;
        };
        out.push(Row {
            key: Bytes::from(id.to_string()),
            value: Bytes::from(Value::Object(order).to_string()),
            ts: row.ts,
        });
    }
}

/// An enriched order as its table row: the same key and value.
struct OrderRow;

impl RowFunction for OrderRow {
    fn apply(&self, row: Row, out: &mut Vec<Row>) {
        out.push(row);
    }
}

/// Creations, keyed by customer, valued `<cents> <order id>`.
struct Amounts;

impl RowFunction for Amounts {
    fn apply(&self, row: Row, out: &mut Vec<Row>) {
        let order = serde_json::from_slice::<OrderFields>(&row.value).ok();
        out.extend(order.and_then(|o| creation_by_customer(o, row.ts)));
    }
}

/// A fired window, as its record.
struct Format;

impl RowFunction for Format {
    fn apply(&self, row: Row, out: &mut Vec<Row>) {
        let Ok(w) = serde_json::from_slice::<WindowResult>(&row.value) else {
            return;
        };
        let customer_id = String::from_utf8_lossy(&row.key).into_owned();
        let (Some(customer), Some(max)) = (customers::lookup(&customer_id), w.max) else {
            return;
        };
        let Ok(largest_order_id) = max.of.parse() else {
            return;
        };
        let metrics = Metrics {
            customer_id,
            tier: customer.tier.to_string(),
            window_start: w.start,
            window_end: w.end,
            orders: w.count,
            total: w.sum as f64 / 100.0,
            largest: max.value as f64 / 100.0,
            largest_order_id,
        };
        out.push(Row {
            value: Bytes::from(serde_json::to_vec(&metrics).expect("metrics serialize")),
            ..row
        });
    }
}

/// The exact records for `input`, computed without the engine: the dead letters, then the
/// metrics.
pub fn oracle(input: &[Input<'_>]) -> (ExpectedRecords, ExpectedRecords) {
    let mut dead = ExpectedRecords::new();
    // (customer, window start) -> (orders, cents, the largest as (Reverse(cents), id)).
    type Window = (u64, i64, (Reverse<i64>, String));
    let mut windows: BTreeMap<(String, i64), Window> = BTreeMap::new();
    for i in input {
        let order = match accept(i.value) {
            Ok(order) => order,
            Err(reason) => {
                expect(&mut dead, i.key, &dead_letter(i.value, reason));
                continue;
            }
        };
        let Ok(order) = serde_json::from_value::<OrderFields>(Value::Object(order)) else {
            continue;
        };
        if order.event_type != "order_created" {
            continue;
        }
        let cents = to_cents(order.total_amount);
        let candidate = (Reverse(cents), order.order_id.to_string());
        let mut start = window_start(i.ts, SLIDE_MS);
        while start > i.ts - WINDOW_MS {
            let w = windows
                .entry((order.customer_id.clone(), start))
                .or_insert((0, 0, candidate.clone()));
            w.0 += 1;
            w.1 += cents;
            w.2 = w.2.clone().min(candidate.clone());
            start -= SLIDE_MS;
        }
    }
    let mut metrics = ExpectedRecords::new();
    for ((customer_id, start), (orders, cents, (Reverse(largest), id))) in windows {
        let tier = customers::lookup(&customer_id).map_or("", |c| c.tier);
        let value = json!({
            "customer_id": customer_id, "tier": tier,
            "window_start": start, "window_end": start + WINDOW_MS,
            "orders": orders, "total": cents as f64 / 100.0,
            "largest": largest as f64 / 100.0,
            "largest_order_id": id.parse::<u64>().unwrap_or_default(),
        });
        expect(&mut metrics, customer_id.as_bytes(), &value);
    }
    (dead, metrics)
}

/// The table's content after `input`, computed without the engine: each order's latest
/// accepted event, and how many accepted events it had.
pub fn table_oracle(input: &[Input<'_>]) -> ExpectedTable {
    let mut table = ExpectedTable::new();
    for i in input {
        let Ok(order) = accept(i.value) else {
            continue;
        };
        let Some(id) = order["order_id"].as_u64() else {
            continue;
        };
        let entry = table.entry(id.to_string()).or_default();
        entry.0 = super::canonical(&Value::Object(order));
        entry.1 += 1;
    }
    table
}

/// A table's content in the oracle's shape, for comparing the two.
pub fn found_table(content: &TableContent) -> ExpectedTable {
    content
        .iter()
        .map(|(key, entry)| {
            let value = serde_json::from_str::<Value>(&entry.value).map_or_else(
                |_| entry.value.clone().into_bytes(),
                |v| super::canonical(&v),
            );
            (key.clone(), (value, entry.writes))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::row_of;
    use crate::jobs::test_orders;

    #[test]
    fn functions_and_oracle_agree_on_a_generated_run() {
        let events = test_orders(0.5, 2_000);
        let input: Vec<Input<'_>> = events.iter().map(Input::from).collect();
        let (dead, metrics) = oracle(&input);
        let invalid = events.iter().filter(|e| e.invalid.is_some()).count() as u64;
        assert_eq!(dead.values().sum::<u64>(), invalid);
        assert!(invalid > 50, "{invalid} invalid events");
        let table = table_oracle(&input);
        let writes: u64 = table.values().map(|(_, w)| w).sum();
        assert_eq!(writes, events.len() as u64 - invalid);
        assert!(table.values().any(|(_, w)| *w > 1), "some order changes");
        assert!(!metrics.is_empty());
        // The dead-letter and enrich functions split the input the way the oracle does.
        let (mut letters, mut accepted) = (Vec::new(), Vec::new());
        for e in &events {
            DeadLetters.apply(row_of(e), &mut letters);
            Enrich.apply(row_of(e), &mut accepted);
        }
        assert_eq!(letters.len() as u64, invalid);
        assert_eq!(accepted.len() as u64, writes);
        let last = accepted.iter().rev().find(|r| &r.key[..] == b"1").unwrap();
        let value: Value = serde_json::from_slice(&last.value).unwrap();
        assert_eq!(table["1"].0, super::super::canonical(&value));
    }

    #[test]
    fn an_unknown_customer_is_a_dead_letter() {
        let value = br#"{"event_type":"order_created","order_id":7,"customer_id":"customer-123456","total_amount":5.0,"items":[],"status":"created","timestamp":1}"#;
        let reason = accept(value).unwrap_err();
        assert_eq!(
            reason,
            "customer_id customer-123456 is not in the customer table"
        );
    }
}
