//! The orders workload: `order_created`, `order_updated` and `order_cancelled` events keyed by
//! `order_id`, with customers drawn from the configured skew.
//!
//! Updates and cancellations refer to valid orders created earlier in write order; their event
//! time may still precede the creation's, as disorder allows. An invalid event has exactly one
//! defect, which [`validate`] finds again from the value alone: a negative `total_amount`, no
//! `customer_id`, or a `timestamp` that is not a number. Invalid events change no order.

use crate::generator::{
    Event, EventTime, GeneratorConfig, Invalid, amount_field, count_field, field, money, one_of,
    parse, roll_invalid, str_field,
};
use crate::keys::KeyDist;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::VecDeque;
use weir_seams::rng::{self, WeirRng};

/// The values of `event_type`.
pub const EVENT_TYPES: [&str; 3] = ["order_created", "order_updated", "order_cancelled"];
/// The values of `status`.
pub const STATUSES: [&str; 5] = ["created", "paid", "shipped", "delivered", "cancelled"];
/// Statuses an update moves an order to.
const UPDATE_STATUSES: [&str; 3] = ["paid", "shipped", "delivered"];
/// Open orders remembered for updates and cancellations; older ones count as completed.
const OPEN_ORDERS_MAX: usize = 1_024;
/// Distinct SKUs.
const SKUS: u32 = 500;
/// The defects of invalid events, one per event.
const DEFECTS: [Invalid; 3] = [
    Invalid::Negative("total_amount"),
    Invalid::Missing("customer_id"),
    Invalid::Unparseable("timestamp"),
];

#[derive(Clone, Debug)]
struct Item {
    sku: u32,
    quantity: i64,
    price_cents: i64,
}

#[derive(Clone, Debug)]
struct Order {
    id: u64,
    customer: u64,
    items: Vec<Item>,
    status: &'static str,
}

impl Order {
    fn total_cents(&self) -> i64 {
        self.items.iter().map(|i| i.quantity * i.price_cents).sum()
    }
}

/// Generates order events: an iterator over exactly the number of events asked for.
pub struct Orders {
    rng: WeirRng,
    time: EventTime,
    customers: KeyDist,
    invalid_fraction: f64,
    open: VecDeque<Order>,
    next_id: u64,
    left: u64,
}

impl Orders {
    /// The first `count` order events for `seed` and `config`.
    pub fn new(seed: u64, config: &GeneratorConfig, count: u64) -> Result<Self, String> {
        config.validate()?;
        Ok(Self {
            rng: rng::derive(seed, "workloads/orders"),
            time: EventTime::new(config),
            customers: config.key_dist(),
            invalid_fraction: config.invalid_fraction,
            open: VecDeque::new(),
            next_id: 1,
            left: count,
        })
    }

    fn create(&mut self) -> Order {
        let r = &mut self.rng;
        // 1-4 items of 1-3 units at 1.00-40.00: totals average about 100, so a good share of
        // orders passes the 100.0 thresholds jobs like to filter on.
        let items = (0..r.random_range(1..=4))
            .map(|_| Item {
                sku: r.random_range(0..SKUS),
                quantity: r.random_range(1..=3),
                price_cents: r.random_range(100..=4_000),
            })
            .collect();
        let id = self.next_id;
        self.next_id += 1;
        Order {
            id,
            customer: self.customers.sample(&mut self.rng),
            items,
            status: "created",
        }
    }

    /// The order after an update or cancellation (by `roll`) of open order `i`.
    fn change(&mut self, i: usize, roll: u32) -> (&'static str, Order) {
        let mut order = self.open[i].clone();
        if roll < 90 {
            order.status = UPDATE_STATUSES[self.rng.random_range(0..UPDATE_STATUSES.len())];
            if self.rng.random_bool(0.5) {
                let j = self.rng.random_range(0..order.items.len());
                order.items[j].quantity = self.rng.random_range(1..=3);
            }
            ("order_updated", order)
        } else {
            order.status = "cancelled";
            ("order_cancelled", order)
        }
    }
}

impl Iterator for Orders {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        self.left = self.left.checked_sub(1)?;
        let (timestamp_ms, late) = self.time.next(&mut self.rng);
        // 60% creations, 30% updates, 10% cancellations once there are orders to change.
        let roll = self.rng.random_range(0..100);
        let (event_type, order, changed) = if self.open.is_empty() || roll < 60 {
            ("order_created", self.create(), None)
        } else {
            let i = self.rng.random_range(0..self.open.len());
            let (event_type, order) = self.change(i, roll);
            (event_type, order, Some(i))
        };
        let invalid = roll_invalid(&mut self.rng, self.invalid_fraction)
            .then(|| DEFECTS[self.rng.random_range(0..DEFECTS.len())]);
        let items: Vec<_> = order
            .items
            .iter()
            .map(|i| json!({"sku": format!("sku-{:03}", i.sku), "quantity": i.quantity, "price": money(i.price_cents)}))
            .collect();
        let value = json!({
            "event_type": event_type,
            "order_id": order.id,
            "customer_id": format!("customer-{}", order.customer),
            "total_amount": money(order.total_cents()),
            "items": items,
            "status": order.status,
            "timestamp": timestamp_ms,
        });
        let key = order.id.to_string().into_bytes();
        if invalid.is_none() {
            match (event_type, changed) {
                ("order_cancelled", Some(i)) => {
                    self.open.remove(i);
                }
                (_, Some(i)) => self.open[i] = order,
                (_, None) => {
                    if self.open.len() == OPEN_ORDERS_MAX {
                        self.open.pop_front();
                    }
                    self.open.push_back(order);
                }
            }
        }
        Some(Event::made(key, value, (timestamp_ms, late), invalid))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.left).unwrap_or(usize::MAX);
        (n, Some(n))
    }
}

/// An order event as the jobs read it, from Weir's generated events or from the seed's
/// producer (whose `order_id` is text such as `"ORD-12345"`, whose `timestamp` is
/// `time.time()`, in float seconds, and whose events carry no `event_type`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderEvent {
    /// `order_created`, `order_updated` or `order_cancelled`; an event without one is a
    /// creation.
    pub event_type: String,
    /// The order's id as text (Weir writes integers).
    pub order_id: String,
    /// The customer.
    pub customer_id: String,
    /// `total_amount` in whole cents.
    pub total_cents: i64,
    /// `timestamp` in milliseconds since the epoch: integer milliseconds, float seconds or
    /// ISO-8601 text (UTC when it names no offset).
    pub timestamp_ms: i64,
    /// The event's JSON object as written.
    pub json: String,
}

impl OrderEvent {
    /// Whether this event creates its order.
    pub fn is_creation(&self) -> bool {
        self.event_type == "order_created"
    }
}

/// An amount in whole cents; amounts have at most two decimals.
pub fn to_cents(amount: f64) -> i64 {
    (amount * 100.0).round() as i64
}

/// `timestamp` of `o` in milliseconds.
fn timestamp_ms(o: &serde_json::Map<String, Value>) -> Result<i64, Invalid> {
    const NAME: &str = "timestamp";
    let v = field(o, NAME)?;
    let ms = if let Some(n) = v.as_i64() {
        n
    } else if let Some(seconds) = v.as_f64() {
        (seconds * 1_000.0).round() as i64
    } else if let Some(text) = v.as_str() {
        iso_8601_ms(text).ok_or(Invalid::Unparseable(NAME))?
    } else {
        return Err(Invalid::Unparseable(NAME));
    };
    if ms < 0 {
        return Err(Invalid::Negative(NAME));
    }
    Ok(ms)
}

/// Milliseconds since the epoch of ISO-8601 `text`, with an offset or (taken as UTC) without.
fn iso_8601_ms(text: &str) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())
        .map(|t| t.and_utc().timestamp_millis())
}

/// Reads an order event as a validating job would, naming the first defect found.
pub fn parse_event(value: &[u8]) -> Result<OrderEvent, Invalid> {
    let o = parse(value)?;
    let event_type = match o.get("event_type") {
        Some(_) => {
            one_of(&o, "event_type", &EVENT_TYPES)?;
            str_field(&o, "event_type")?.to_string()
        }
        None => EVENT_TYPES[0].to_string(),
    };
    let order_id = match field(&o, "order_id")? {
        Value::String(s) if !s.is_empty() => s.clone(),
        _ => count_field(&o, "order_id")?.to_string(),
    };
    let customer_id = str_field(&o, "customer_id")?.to_string();
    let total_cents = to_cents(amount_field(&o, "total_amount")?);
    if o.contains_key("items") {
        field(&o, "items")?
            .as_array()
            .ok_or(Invalid::Unparseable("items"))?;
    }
    if o.contains_key("status") {
        one_of(&o, "status", &STATUSES)?;
    }
    let timestamp_ms = timestamp_ms(&o)?;
    Ok(OrderEvent {
        event_type,
        order_id,
        customer_id,
        total_cents,
        timestamp_ms,
        json: String::from_utf8_lossy(value).into_owned(),
    })
}

/// Checks an order event as a validating job would, naming the first defect found.
pub fn validate(value: &[u8]) -> Result<(), Invalid> {
    parse_event(value).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::testing::{self, N};
    use crate::generator::{Skew, Workload};
    use std::collections::BTreeSet;

    #[test]
    fn same_seed_same_events_other_seed_other_events() {
        testing::assert_deterministic(Workload::Orders);
    }

    #[test]
    fn fractions_disorder_and_defects_are_as_designed() {
        testing::assert_designed(Workload::Orders);
    }

    #[test]
    fn changes_refer_to_open_orders_created_before() {
        let mut open = BTreeSet::new();
        let (mut changes, mut above_100, mut created) = (0, 0, 0);
        for e in Orders::new(5, &testing::config(), N).unwrap() {
            let o = parse(&e.value).unwrap();
            let id = o["order_id"].as_u64().unwrap();
            assert_eq!(e.key, id.to_string().into_bytes());
            match (o["event_type"].as_str().unwrap(), e.invalid.is_none()) {
                ("order_created", valid) => {
                    assert!(!open.contains(&id));
                    if valid {
                        open.insert(id);
                        created += 1;
                        above_100 += usize::from(o["total_amount"].as_f64().unwrap() > 100.0);
                    }
                }
                (t, valid) => {
                    changes += 1;
                    assert!(open.contains(&id), "{t} of order {id}, not open");
                    if valid && t == "order_cancelled" {
                        open.remove(&id);
                    }
                }
            }
        }
        assert!(changes > N / 4, "{changes} changes");
        let share = above_100 as f64 / created as f64;
        assert!((0.25..0.75).contains(&share), "{share} above 100.0");
    }

    #[test]
    fn the_seeds_producer_format_reads_as_weirs() {
        let seed = br#"{"order_id": "ORD-12345", "customer_id": "CUST-7", "total_amount": 120.5,
            "items": [], "status": "created", "timestamp": 1700000000.25}"#;
        let e = parse_event(seed).unwrap();
        assert_eq!(e.order_id, "ORD-12345");
        assert!(e.is_creation());
        assert_eq!((e.total_cents, e.timestamp_ms), (12_050, 1_700_000_000_250));
        for (text, ms) in [
            ("2023-11-14T22:13:20Z", 1_700_000_000_000),
            ("2023-11-14T23:13:20.5+01:00", 1_700_000_000_500),
            ("2023-11-14 22:13:20", 1_700_000_000_000),
        ] {
            let v = format!(
                r#"{{"order_id": 1, "customer_id": "c", "total_amount": 1, "timestamp": "{text}"}}"#
            );
            assert_eq!(
                parse_event(v.as_bytes()).unwrap().timestamp_ms,
                ms,
                "{text}"
            );
        }
        let bad = br#"{"order_id": 1, "customer_id": "c", "total_amount": 1, "timestamp": "n/a"}"#;
        assert_eq!(validate(bad), Err(Invalid::Unparseable("timestamp")));
        let typed = br#"{"event_type": "order_paid", "order_id": 1, "customer_id": "c", "total_amount": 1, "timestamp": 1}"#;
        assert_eq!(validate(typed), Err(Invalid::Unknown("event_type")));
    }

    #[test]
    fn zipf_makes_a_hot_customer() {
        let customer = |o: &serde_json::Map<String, serde_json::Value>| {
            o.get("customer_id").map(|c| c.to_string())
        };
        let uniform = testing::top_count(Workload::Orders, Skew::Uniform, customer);
        let zipf = testing::top_count(Workload::Orders, Skew::Zipf { exponent: 1.1 }, customer);
        assert!(zipf > 10 * uniform, "top customer {zipf} vs {uniform}");
    }
}
