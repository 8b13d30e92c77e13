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

use super::{ExpectedRecords, Input, Keyed, Outputs, expect, order_events};
use crate::orders::{self, OrderEvent};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use weir_engine::state::{CountSum, MapStateDescriptor, StateError, ValueStateDescriptor};
use weir_engine::{
    DataStream, DropReason, KafkaRecord, KeyedContext, KeyedProcessFunction, OutputTag, TimeDomain,
    WindowAssigner, Windowed,
};

/// The job's name, and the topic of its sessions.
pub const NAME: &str = "order-sessions";
/// The topic of its running totals.
pub const RUNNING_TOPIC: &str = "order-running-totals";
/// A session ends after this long without an order: ten minutes.
pub const GAP_MS: i64 = 10 * 60_000;

/// One record of `order-running-totals`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Running {
    /// The customer.
    pub customer_id: String,
    /// The order: a number for Weir's integer ids, else the id's text.
    pub order_id: Value,
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

/// The running totals, as they leave for their topic.
const RUNNING: OutputTag<Keyed> = OutputTag::new("running-totals");
/// A customer's orders waiting for the watermark, by event time.
const WAITING: MapStateDescriptor<i64, Vec<OrderEvent>> = MapStateDescriptor::new("waiting");
/// A customer's orders and cents so far.
const SO_FAR: ValueStateDescriptor<(u64, i64)> = ValueStateDescriptor::new("so-far");

/// Releases each customer's orders in event-time order, once the watermark has passed them,
/// with the customer's count and total so far; orders of one event time go in the order of
/// their amount in cents as text, then of their id. An order behind the watermark on arrival
/// is late: its place in the order is already past.
#[derive(Clone)]
struct RunningTotals;

/// The tie-break of orders with one event time.
fn tie(o: &OrderEvent) -> String {
    format!("{} {}", o.total_cents, o.order_id)
}

impl KeyedProcessFunction<String, OrderEvent, OrderEvent> for RunningTotals {
    fn process_element(
        &mut self,
        o: OrderEvent,
        ctx: &mut KeyedContext<'_, String, OrderEvent>,
    ) -> Result<(), StateError> {
        let Some(ts) = ctx.timestamp() else {
            return Err(StateError::Codec("an order without a timestamp".into()));
        };
        if ts <= ctx.current_watermark() {
            ctx.dropped(DropReason::Late);
            return Ok(());
        }
        let mut waiting = ctx.map(&WAITING)?;
        let mut at = waiting.get(&ts)?.unwrap_or_default();
        at.push(o);
        waiting.put(&ts, &at)?;
        ctx.register_event_time_timer(ts);
        Ok(())
    }

    fn on_timer(
        &mut self,
        ts: i64,
        _domain: TimeDomain,
        ctx: &mut KeyedContext<'_, String, OrderEvent>,
    ) -> Result<(), StateError> {
        let mut due = ctx.map(&WAITING)?.get(&ts)?.unwrap_or_default();
        ctx.map(&WAITING)?.remove(&ts)?;
        due.sort_by_key(tie);
        let (mut count, mut cents) = ctx.value(&SO_FAR)?.get()?.unwrap_or_default();
        for o in due {
            count += 1;
            cents += o.total_cents;
            let running = Running {
                customer_id: o.customer_id.clone(),
                order_id: id_value(&o.order_id),
                timestamp: ts,
                amount: o.total_cents as f64 / 100.0,
                count,
                total: cents as f64 / 100.0,
            };
            ctx.side_output(&RUNNING, Keyed::json(o.customer_id.clone(), &running));
            ctx.emit_at(o, ts);
        }
        ctx.value(&SO_FAR)?.update(&(count, cents))
    }
}

/// An order id as the records name it.
fn id_value(id: &str) -> Value {
    id.parse::<u64>().map_or_else(|_| json!(id), |n| json!(n))
}

/// The job's logic: running totals per customer in event-time order, then the customer's
/// ordering sessions over the released orders.
pub fn logic(input: &DataStream<KafkaRecord>) -> Outputs {
    let released = order_events(input)
        .filter(|o: &OrderEvent| o.is_creation())
        .key_by(|o: &OrderEvent| o.customer_id.clone())
        .process(RunningTotals)
        .uid("running-totals");
    let running = released.side_output(&RUNNING);
    let sessions = released
        .key_by(|o: &OrderEvent| o.customer_id.clone())
        .window(WindowAssigner::session(Duration::from_millis(
            GAP_MS as u64,
        )))
        .aggregate(CountSum::new(|o: &OrderEvent| o.total_cents))
        .uid("sessions")
        .map(|w: Windowed<String, (u64, i64)>| {
            let session = Session {
                customer_id: w.key.clone(),
                session_start: w.window.start,
                session_end: w.window.end,
                count: w.value.0,
                total: w.value.1 as f64 / 100.0,
            };
            Keyed::json(w.key, &session)
        });
    Outputs {
        topics: vec![(NAME, sessions), (RUNNING_TOPIC, running)],
        table: None,
    }
}

/// The exact output for `input`, computed without the engine: the sessions, then the running
/// totals.
pub fn oracle(input: &[Input<'_>]) -> (ExpectedRecords, ExpectedRecords) {
    // Customer -> (event time, amount in cents as text then order id, cents, order id).
    let mut by_customer: BTreeMap<String, Vec<(i64, String, i64, String)>> = BTreeMap::new();
    for i in input {
        let Ok(order) = orders::parse_event(i.value) else {
            continue;
        };
        if !order.is_creation() {
            continue;
        }
        by_customer
            .entry(order.customer_id.clone())
            .or_default()
            .push((i.ts, tie(&order), order.total_cents, order.order_id));
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
                "customer_id": customer, "order_id": id_value(&order_id), "timestamp": ts,
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
    use crate::jobs::{Job, assert_matches_oracle};

    #[test]
    fn the_job_and_the_oracle_agree_on_generated_orders() {
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
        let orders: u64 = running.values().sum();
        assert!(
            (sessions.len() as u64) > 100 && (sessions.len() as u64) < orders,
            "{} sessions of {orders} orders",
            sessions.len()
        );
        assert_matches_oracle(Job::OrderSessions, &events);
    }
}
