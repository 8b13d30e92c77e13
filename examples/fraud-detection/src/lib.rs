//! Fraud detection, the example job a newcomer copies: a card is flagged when its
//! transactions in one minute exceed the count or the amount its limits allow.
//!
//! ```text
//! transactions --> [source] ==by card==> [minute activity: map state + timer]
//!                                              \
//!                                               ==by card==> [1 min window join -> alerts] --> alerts
//!                                              /
//! card-limits  --> [source] ==by card=========
//! ```
//!
//! The keyed process function keeps each card's open minutes in managed map state and sets an
//! event-time timer at each minute's end; when it fires, the minute's activity goes downstream
//! and its state is cleared. A one-minute window join pairs each activity with the limits the
//! risk service published for that card and minute, and an alert is written when the activity
//! is above them.
//!
//! [`Variant::PlainField`] is the same job with one deliberate bug: the per-card counts live in
//! a field of the function instead of managed state, so a restart from a checkpoint forgets
//! them. `tests/faults.rs` shows that the simulator catches it and the real job passes.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use weir_engine::graph::GraphError;
use weir_engine::state::{MapStateDescriptor, StateError};
use weir_engine::{
    Data, DataStream, Job, KafkaSink, KafkaSource, KeyedContext, KeyedProcessFunction, StreamEnv,
    TimeDomain, Timestamp, WatermarkStrategy, WindowAssigner,
};

/// The topic of card transactions.
pub const TRANSACTIONS: &str = "transactions";
/// The topic of per-card, per-minute limits.
pub const LIMITS: &str = "card-limits";
/// The topic alerts are written to.
pub const ALERTS: &str = "alerts";
/// The length of the buckets activity is counted in, in ms.
pub const MINUTE_MS: i64 = 60_000;
/// How far a record's timestamp may trail the latest one of its partition, in ms.
pub const OUT_OF_ORDERNESS_MS: u64 = 5_000;

/// One card payment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// The card.
    pub card_id: String,
    /// The amount, in cents.
    pub amount_cents: i64,
}

/// The limits of one card for the minute its record's timestamp falls in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardLimit {
    /// The card.
    pub card_id: String,
    /// Transactions allowed in the minute.
    pub max_count: u64,
    /// Amount allowed in the minute, in cents.
    pub max_amount_cents: i64,
}

/// A card's transactions in one minute.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// The card.
    pub card_id: String,
    /// The minute's start, in ms since the epoch.
    pub minute_start: i64,
    /// Transactions in the minute.
    pub count: u64,
    /// Their total, in cents.
    pub amount_cents: i64,
}

impl Activity {
    /// A minute of `card_id` with no transactions yet.
    fn opening(card_id: &str, minute_start: i64) -> Self {
        Activity {
            card_id: card_id.to_string(),
            minute_start,
            ..Activity::default()
        }
    }

    /// Counts one more transaction.
    fn add(&mut self, t: &Transaction) {
        self.count += 1;
        self.amount_cents += t.amount_cents;
    }
}

/// A flagged card and minute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// The card.
    pub card_id: String,
    /// The minute's start, in ms since the epoch.
    pub minute_start: i64,
    /// Transactions in the minute.
    pub count: u64,
    /// Their total, in cents.
    pub amount_cents: i64,
    /// Which limits were exceeded: "count", "amount" or "count,amount".
    pub exceeded: String,
}

impl Alert {
    /// The alert `activity` raises against `limit`, if it exceeds it.
    pub fn check(activity: &Activity, limit: &CardLimit) -> Option<Alert> {
        let mut exceeded = Vec::new();
        if activity.count > limit.max_count {
            exceeded.push("count");
        }
        if activity.amount_cents > limit.max_amount_cents {
            exceeded.push("amount");
        }
        (!exceeded.is_empty()).then(|| Alert {
            card_id: activity.card_id.clone(),
            minute_start: activity.minute_start,
            count: activity.count,
            amount_cents: activity.amount_cents,
            exceeded: exceeded.join(","),
        })
    }
}

/// Which minute `ts` falls in: its start.
pub fn minute_of(ts: Timestamp) -> i64 {
    ts.div_euclid(MINUTE_MS) * MINUTE_MS
}

/// Which version of the job to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// Per-card activity in managed state: restored with the checkpoint.
    Correct,
    /// Per-card activity in a plain field of the function: lost on every restart.
    PlainField,
}

/// Open minutes of the current card, by start.
const OPEN_MINUTES: MapStateDescriptor<i64, Activity> = MapStateDescriptor::new("open-minutes");

/// Counts each card's transactions per minute in managed state; emits a minute when its timer
/// fires at the minute's last millisecond.
#[derive(Clone, Default)]
struct MinuteActivity;

impl KeyedProcessFunction<String, Transaction, Activity> for MinuteActivity {
    fn process_element(
        &mut self,
        t: Transaction,
        ctx: &mut KeyedContext<'_, String, Activity>,
    ) -> Result<(), StateError> {
        let minute = minute_of(ctx.timestamp().expect("sources stamp every record"));
        let mut open = ctx.map(&OPEN_MINUTES)?;
        let mut activity = open
            .get(&minute)?
            .unwrap_or_else(|| Activity::opening(&t.card_id, minute));
        activity.add(&t);
        open.put(&minute, &activity)?;
        ctx.register_event_time_timer(minute + MINUTE_MS - 1);
        Ok(())
    }

    fn on_timer(
        &mut self,
        at: Timestamp,
        _: TimeDomain,
        ctx: &mut KeyedContext<'_, String, Activity>,
    ) -> Result<(), StateError> {
        let minute = minute_of(at);
        let mut open = ctx.map(&OPEN_MINUTES)?;
        if let Some(activity) = open.get(&minute)? {
            open.remove(&minute)?;
            ctx.emit(activity);
        }
        Ok(())
    }
}

/// The bug: [`MinuteActivity`] with its state in a field. Each subtask's clone keeps its own
/// map, which works until a restart, when the map starts empty again while the sources rewind
/// only to the last checkpoint.
#[derive(Clone, Default)]
struct PlainFieldActivity {
    open: BTreeMap<(String, i64), Activity>,
}

impl KeyedProcessFunction<String, Transaction, Activity> for PlainFieldActivity {
    fn process_element(
        &mut self,
        t: Transaction,
        ctx: &mut KeyedContext<'_, String, Activity>,
    ) -> Result<(), StateError> {
        let minute = minute_of(ctx.timestamp().expect("sources stamp every record"));
        self.open
            .entry((t.card_id.clone(), minute))
            .or_insert_with(|| Activity::opening(&t.card_id, minute))
            .add(&t);
        ctx.register_event_time_timer(minute + MINUTE_MS - 1);
        Ok(())
    }

    fn on_timer(
        &mut self,
        at: Timestamp,
        _: TimeDomain,
        ctx: &mut KeyedContext<'_, String, Activity>,
    ) -> Result<(), StateError> {
        if let Some(activity) = self.open.remove(&(ctx.key().clone(), minute_of(at))) {
            ctx.emit(activity);
        }
        Ok(())
    }
}

/// Where the job reads and how it ends.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Subtasks per operator.
    pub parallelism: u32,
    /// Read each input partition up to this value and then end (for tests); unbounded if
    /// unset.
    pub end_marker: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            parallelism: 2,
            end_marker: None,
        }
    }
}

/// The job: see the crate docs.
pub fn build(variant: Variant, settings: &Settings) -> Result<Job, GraphError> {
    let env = StreamEnv::new("fraud-detection");
    env.set_parallelism(settings.parallelism);
    let transactions: DataStream<Transaction> = env
        .from_source(source(TRANSACTIONS, settings), watermarks())
        .uid("transactions");
    let limits: DataStream<CardLimit> = env
        .from_source(source(LIMITS, settings), watermarks())
        .uid("card-limits");
    let by_card = transactions.key_by(|t: &Transaction| t.card_id.clone());
    let activity = match variant {
        Variant::Correct => by_card.process(MinuteActivity),
        Variant::PlainField => by_card.process(PlainFieldActivity::default()),
    }
    .uid("minute-activity");
    let alerts = activity
        .join(&limits)
        .where_key(
            |a: &Activity| a.card_id.clone(),
            |l: &CardLimit| l.card_id.clone(),
        )
        .window(WindowAssigner::tumbling(Duration::from_millis(
            MINUTE_MS as u64,
        )))
        .apply(Alert::check)
        .uid("limits-join")
        .flat_map(|alert: Option<Alert>| alert);
    alerts
        .sink_to(KafkaSink::json(ALERTS, |a: &Alert| {
            Some(a.card_id.clone().into_bytes())
        }))
        .uid("alerts");
    env.build()
}

/// `topic` as JSON documents of `T`, bounded by the settings' end marker if there is one.
fn source<T: Data + serde::de::DeserializeOwned>(
    topic: &str,
    settings: &Settings,
) -> KafkaSource<T> {
    let source = KafkaSource::json(topic);
    match &settings.end_marker {
        Some(marker) => source.bounded_by_marker(marker),
        None => source,
    }
}

/// Watermarks that trail each partition's latest timestamp by [`OUT_OF_ORDERNESS_MS`].
fn watermarks<T>() -> WatermarkStrategy<T> {
    WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(OUT_OF_ORDERNESS_MS))
}

/// The alerts the job must write for this input, computed without the engine: the
/// transactions' per-card minutes against every limit of the same card and minute.
/// Inputs are (value, record timestamp); values that do not parse are skipped, as the
/// sources skip them.
pub fn oracle<'a>(
    transactions: impl IntoIterator<Item = (&'a [u8], i64)>,
    limits: impl IntoIterator<Item = (&'a [u8], i64)>,
) -> Vec<Alert> {
    let mut minutes: BTreeMap<(String, i64), Activity> = BTreeMap::new();
    for (value, ts) in transactions {
        let Ok(t) = serde_json::from_slice::<Transaction>(value) else {
            continue;
        };
        let minute = minute_of(ts);
        minutes
            .entry((t.card_id.clone(), minute))
            .or_insert_with(|| Activity::opening(&t.card_id, minute))
            .add(&t);
    }
    let mut alerts = Vec::new();
    for (value, ts) in limits {
        let Ok(l) = serde_json::from_slice::<CardLimit>(value) else {
            continue;
        };
        if let Some(a) = minutes.get(&(l.card_id.clone(), minute_of(ts))) {
            alerts.extend(Alert::check(a, &l));
        }
    }
    alerts
}
