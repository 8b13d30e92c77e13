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

use super::{ExpectedRecords, Input, Keyed, Outputs, expect, window_start};
use crate::customers;
use crate::orders::{self, OrderEvent};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::time::Duration;
use weir_engine::runtime::table::TableContent;
use weir_engine::state::AggregateFunction;
use weir_engine::{DataStream, DropReason, KafkaRecord, OutputTag, WindowAssigner, Windowed};

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

/// Rejected events, with their reasons.
const DEAD_LETTERS: OutputTag<Keyed> = OutputTag::new("dead-letters");

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
    /// The largest one's id: a number for Weir's integer ids, else the id's text.
    pub largest_order_id: Value,
}

/// An accepted event: the event, and its JSON object with the customer's fields added.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Accepted {
    order: OrderEvent,
    enriched: String,
}

/// The event, valid and enriched with its customer, or why it is rejected.
fn accept(value: &[u8]) -> Result<(OrderEvent, serde_json::Map<String, Value>), String> {
    let event = orders::parse_event(value).map_err(|e| e.to_string())?;
    let Ok(Value::Object(mut order)) = serde_json::from_slice::<Value>(value) else {
        return Err("the event is not a JSON object".into());
    };
    let id = &event.customer_id;
    let customer = customers::lookup(id)
        .ok_or_else(|| format!("customer_id {id} is not in the customer table"))?;
    order.insert("customer_name".into(), json!(customer.name));
    order.insert("tier".into(), json!(customer.tier));
    order.insert("region".into(), json!(customer.region));
    Ok((event, order))
}

/// The dead letter of a rejected event's value.
fn dead_letter(value: &[u8], reason: String) -> Value {
    json!({"reason": reason, "order": String::from_utf8_lossy(value)})
}

/// An order id as the metrics name it.
fn id_value(id: &str) -> Value {
    id.parse::<u64>().map_or_else(|_| json!(id), |n| json!(n))
}

/// Per window: orders, cents, and the largest order as (cents, id); of equal amounts the
/// smaller id (as text) is the largest, so that a result never depends on arrival order.
#[derive(Clone)]
struct OrderStats;

type Stats = (u64, i64, Option<(i64, String)>);

fn larger(a: Option<(i64, String)>, b: Option<(i64, String)>) -> Option<(i64, String)> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if (Reverse(x.0), &x.1) <= (Reverse(y.0), &y.1) {
            x
        } else {
            y
        }),
        (x, None) => x,
        (None, y) => y,
    }
}

impl AggregateFunction<OrderEvent> for OrderStats {
    type Acc = Stats;
    type Out = Stats;

    fn create_accumulator(&self) -> Stats {
        (0, 0, None)
    }

    fn add(&self, o: &OrderEvent, acc: &mut Stats) {
        acc.0 += 1;
        acc.1 += o.total_cents;
        acc.2 = larger(acc.2.take(), Some((o.total_cents, o.order_id.clone())));
    }

    fn get_result(&self, acc: &Stats) -> Stats {
        acc.clone()
    }

    fn merge(&self, into: &mut Stats, other: Stats) {
        into.0 += other.0;
        into.1 += other.1;
        into.2 = larger(into.2.take(), other.2);
    }
}

/// The job's logic: dead letters for rejected events, the accepted ones enriched into the
/// orders table, and each customer's creations over the last hour, every five minutes.
pub fn logic(input: &DataStream<KafkaRecord>) -> Outputs {
    let accepted = input
        .process(|r: KafkaRecord, ctx| match accept(&r.value) {
            Ok((order, enriched)) => ctx.emit(Accepted {
                order,
                enriched: Value::Object(enriched).to_string(),
            }),
            Err(reason) => {
                let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default());
                let letter = Keyed::json(key, &dead_letter(&r.value, reason));
                ctx.side_output(&DEAD_LETTERS, letter);
                ctx.dropped(DropReason::Invalid);
            }
        })
        .uid("validate");
    let dead = accepted.side_output(&DEAD_LETTERS);
    let rows = accepted.map(|a: Accepted| Keyed {
        key: a.order.order_id,
        value: a.enriched,
    });
    let sliding = WindowAssigner::sliding(
        Duration::from_millis(WINDOW_MS as u64),
        Duration::from_millis(SLIDE_MS as u64),
    );
    let metrics = accepted
        .filter(|a: &Accepted| a.order.is_creation())
        .map(|a: Accepted| a.order)
        .key_by(|o: &OrderEvent| o.customer_id.clone())
        .window(sliding)
        .aggregate(OrderStats)
        .uid("customer-windows")
        .flat_map(|w: Windowed<String, Stats>| {
            let (orders, cents, largest) = w.value;
            let (customer, (largest, id)) = (customers::lookup(&w.key)?, largest?);
            let metrics = Metrics {
                customer_id: w.key.clone(),
                tier: customer.tier.to_string(),
                window_start: w.window.start,
                window_end: w.window.end,
                orders,
                total: cents as f64 / 100.0,
                largest: largest as f64 / 100.0,
                largest_order_id: id_value(&id),
            };
            Some(Keyed::json(w.key, &metrics))
        });
    Outputs {
        topics: vec![(METRICS_TOPIC, metrics), (DLQ_TOPIC, dead)],
        table: Some((TABLE, rows)),
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
            Ok((order, _)) => order,
            Err(reason) => {
                expect(&mut dead, i.key, &dead_letter(i.value, reason));
                continue;
            }
        };
        if !order.is_creation() {
            continue;
        }
        let cents = order.total_cents;
        let candidate = (Reverse(cents), order.order_id.clone());
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
            "largest_order_id": id_value(&id),
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
        let Ok((event, order)) = accept(i.value) else {
            continue;
        };
        let entry = table.entry(event.order_id).or_default();
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
    use crate::jobs::{Job, assert_matches_oracle, run_locally, test_orders};

    #[test]
    fn the_job_and_the_oracles_agree_on_a_generated_run() {
        let events = test_orders(0.5, 2_000);
        let input: Vec<Input<'_>> = events.iter().map(Input::from).collect();
        let (dead, metrics) = oracle(&input);
        let invalid = events.iter().filter(|e| e.invalid.is_some()).count() as u64;
        assert_eq!(dead.values().sum::<u64>(), invalid);
        assert!(invalid > 50, "{invalid} invalid events");
        assert!(!metrics.is_empty());
        let table = table_oracle(&input);
        let writes: u64 = table.values().map(|(_, w)| w).sum();
        assert_eq!(writes, events.len() as u64 - invalid);
        assert!(table.values().any(|(_, w)| *w > 1), "some order changes");
        assert_matches_oracle(Job::OrderPipeline, &events);
        // The rows the table gets are the oracle's, applied in order.
        let (_, rows) = run_locally(Job::OrderPipeline, &events);
        let mut applied = ExpectedTable::new();
        for r in rows {
            let entry = applied.entry(r.key).or_default();
            entry.0 = super::super::canonical(&serde_json::from_str(&r.value).unwrap());
            entry.1 += 1;
        }
        assert_eq!(applied, table);
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
