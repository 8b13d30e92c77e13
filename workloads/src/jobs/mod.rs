//! Jobs from the field, written on Weir's DataStream API as a user would write them, each with
//! an oracle that computes its exact output from its input without the engine.
//!
//! A job's logic takes the stream of its input topic's records and returns the streams of its
//! output records; [`Job::build`] reads the input from the broker and writes the outputs to
//! their topics (and table), and the jobs' tests run the same logic in local mode over
//! generated input, against the oracle. [`Job`] is the catalog that `weir job` runs and the
//! simulator's scenarios check.

pub mod click_analytics;
pub mod nexmark_queries;
pub mod nexmark_windows;
pub mod order_aggregates;
pub mod order_pipeline;
pub mod order_sessions;

use crate::generator::{Invalid, Workload};
use crate::orders::{self, OrderEvent};
use nexmark_queries::Query;
use nexmark_windows::WindowQuery;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use weir_engine::graph::GraphError;
use weir_engine::{
    DataStream, DeliveryGuarantee, DropReason, KafkaRecord, KafkaSink, KafkaSource, StreamEnv,
    TableSink, WatermarkStrategy,
};

/// Where a job reads, how wide it runs and how it writes.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The input topic.
    pub input_topic: String,
    /// Subtasks of every operator.
    pub parallelism: u32,
    /// How far behind the largest event time seen the watermark trails.
    pub out_of_orderness_ms: i64,
    /// A value that ends an input partition (bounded runs).
    pub end_marker: Option<String>,
    /// Exactly-once or at-least-once output.
    pub guarantee: DeliveryGuarantee,
}

/// One record for an output topic or table: its key and its value, a JSON document.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Keyed {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

impl Keyed {
    /// `value` as JSON, under `key`.
    pub fn json<T: Serialize>(key: impl Into<String>, value: &T) -> Self {
        Self {
            key: key.into(),
            value: serde_json::to_string(value).expect("job outputs serialize"),
        }
    }
}

/// What a job's logic makes of its input.
pub struct Outputs {
    /// Each output topic and the records it gets.
    pub topics: Vec<(&'static str, DataStream<Keyed>)>,
    /// The table it upserts into and the rows, if it has one.
    pub table: Option<(&'static str, DataStream<Keyed>)>,
}

impl Outputs {
    /// Outputs that are one topic.
    fn one(topic: &'static str, records: DataStream<Keyed>) -> Self {
        Self {
            topics: vec![(topic, records)],
            table: None,
        }
    }
}

/// Output records the oracle expects: (key, value in [`canonical`] form) to how many times
/// each must be committed.
pub type ExpectedRecords = BTreeMap<(Vec<u8>, Vec<u8>), u64>;

/// One input record, as the oracle reads it.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// Record key.
    pub key: &'a [u8],
    /// Record value.
    pub value: &'a [u8],
    /// Event time (the record timestamp).
    pub ts: i64,
}

impl<'a> From<&'a crate::generator::Event> for Input<'a> {
    fn from(e: &'a crate::generator::Event) -> Self {
        Input {
            key: &e.key,
            value: &e.value,
            ts: e.timestamp_ms,
        }
    }
}

/// A job of the catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Job {
    /// High-value orders per customer in 5-minute windows.
    OrderAggregates,
    /// Orders validated, enriched, upserted into a table and aggregated per customer.
    OrderPipeline,
    /// Ordering sessions per customer, and running totals in event-time order.
    OrderSessions,
    /// Transactions per user in 1-minute windows: count, sum, avg, min, max.
    ClickAnalytics,
    /// A stateless Nexmark query.
    Nexmark(Query),
    /// A windowed Nexmark query.
    NexmarkWindows(WindowQuery),
}

impl Job {
    /// Every job, in the order help texts list them.
    pub fn all() -> Vec<Job> {
        let mut jobs = vec![
            Job::OrderAggregates,
            Job::OrderPipeline,
            Job::OrderSessions,
            Job::ClickAnalytics,
        ];
        jobs.extend(Query::ALL.map(Job::Nexmark));
        jobs.extend(WindowQuery::ALL.map(Job::NexmarkWindows));
        jobs
    }

    /// The job's name, which is also the topic it writes (its first, if it writes several),
    /// except for `order-pipeline`, which writes `order-metrics`.
    pub fn name(self) -> &'static str {
        match self {
            Job::OrderAggregates => order_aggregates::NAME,
            Job::OrderPipeline => order_pipeline::NAME,
            Job::OrderSessions => order_sessions::NAME,
            Job::ClickAnalytics => click_analytics::NAME,
            Job::Nexmark(q) => q.name(),
            Job::NexmarkWindows(q) => q.name(),
        }
    }

    /// The job called `name`.
    pub fn named(name: &str) -> Option<Job> {
        Self::all().into_iter().find(|j| j.name() == name)
    }

    /// The workload that feeds it.
    pub fn workload(self) -> Workload {
        match self {
            Job::OrderAggregates | Job::OrderPipeline | Job::OrderSessions => Workload::Orders,
            Job::ClickAnalytics => Workload::Clicks,
            Job::Nexmark(_) | Job::NexmarkWindows(_) => Workload::Nexmark,
        }
    }

    /// The topic `weir produce` writes its workload to by default.
    pub fn input_topic(self) -> &'static str {
        self.workload().name()
    }

    /// The watermark's default distance behind the largest event time seen.
    pub fn out_of_orderness_ms(self) -> i64 {
        match self {
            Job::ClickAnalytics => click_analytics::OUT_OF_ORDERNESS_MS,
            _ => 5_000,
        }
    }

    /// The job's logic over its input records.
    pub fn logic(self, input: &DataStream<KafkaRecord>) -> Outputs {
        match self {
            Job::OrderAggregates => order_aggregates::logic(input),
            Job::OrderPipeline => order_pipeline::logic(input),
            Job::OrderSessions => order_sessions::logic(input),
            Job::ClickAnalytics => click_analytics::logic(input),
            Job::Nexmark(q) => nexmark_queries::logic(q, input),
            Job::NexmarkWindows(q) => nexmark_windows::logic(q, input),
        }
    }

    /// The job: its input topic read under read_committed, with per-partition watermarks
    /// `settings.out_of_orderness_ms` behind, its logic, and its outputs written to their
    /// topics (keyed) and table.
    pub fn build(self, settings: &Settings) -> Result<weir_engine::Job, GraphError> {
        let env = StreamEnv::new(self.name());
        env.set_parallelism(settings.parallelism);
        let mut source = KafkaSource::raw(&settings.input_topic);
        if let Some(marker) = &settings.end_marker {
            source = source.bounded_by_marker(marker);
        }
        let bound = Duration::from_millis(settings.out_of_orderness_ms as u64);
        let input = env
            .from_source(
                source,
                WatermarkStrategy::for_bounded_out_of_orderness(bound),
            )
            .uid("source");
        let outputs = self.logic(&input);
        for (topic, records) in outputs.topics {
            let sink = KafkaSink::new(topic, |r: &Keyed| {
                Ok((
                    Some(r.key.clone().into_bytes()),
                    r.value.clone().into_bytes(),
                ))
            })
            .delivery_guarantee(settings.guarantee);
            records.sink_to(sink).uid(&format!("sink-{topic}"));
        }
        if let Some((table, rows)) = outputs.table {
            let sink = TableSink::new(table, |r: &Keyed| (r.key.clone(), r.value.clone()));
            rows.sink_to(sink).uid(&format!("table-{table}"));
        }
        env.build()
    }

    /// The topics the job writes.
    pub fn outputs(self) -> Vec<&'static str> {
        match self {
            Job::OrderPipeline => vec![order_pipeline::METRICS_TOPIC, order_pipeline::DLQ_TOPIC],
            Job::OrderSessions => vec![order_sessions::NAME, order_sessions::RUNNING_TOPIC],
            _ => vec![self.name()],
        }
    }

    /// The table the job upserts into, if any: its name in the task managers' registry.
    pub fn table(self) -> Option<&'static str> {
        (self == Job::OrderPipeline).then_some(order_pipeline::TABLE)
    }

    /// The exact output for `input`, computed without the engine, per topic of
    /// [`Job::outputs`]. The oracle models no lateness: a run checked against it keeps its
    /// input's disorder below the job's out-of-orderness, so that no row is dropped behind the
    /// watermark.
    pub fn oracle(self, input: &[Input<'_>]) -> Vec<(&'static str, ExpectedRecords)> {
        let only = |expected| vec![(self.name(), expected)];
        match self {
            Job::OrderAggregates => only(order_aggregates::expected_records(input)),
            Job::OrderPipeline => {
                let (dead, metrics) = order_pipeline::oracle(input);
                vec![
                    (order_pipeline::METRICS_TOPIC, metrics),
                    (order_pipeline::DLQ_TOPIC, dead),
                ]
            }
            Job::OrderSessions => {
                let (sessions, running) = order_sessions::oracle(input);
                vec![
                    (order_sessions::NAME, sessions),
                    (order_sessions::RUNNING_TOPIC, running),
                ]
            }
            Job::ClickAnalytics => only(click_analytics::oracle(input)),
            Job::Nexmark(q) => only(nexmark_queries::expected_records(q, input)),
            Job::NexmarkWindows(q) => only(nexmark_windows::oracle(q, input)),
        }
    }
}

/// JSON with its object keys sorted, so that records compare by content, not by field order.
pub fn canonical(value: &Value) -> Vec<u8> {
    // serde_json's maps are sorted by key unless its `preserve_order` feature is on.
    serde_json::to_vec(value).expect("JSON serializes")
}

/// Adds one expected record.
fn expect(expected: &mut ExpectedRecords, key: &[u8], value: &Value) {
    *expected
        .entry((key.to_vec(), canonical(value)))
        .or_default() += 1;
}

/// The valid order events among `input`: values that are not JSON objects are dropped as
/// unparseable, events with a defect (see [`orders::parse_event`]) as invalid.
fn order_events(input: &DataStream<KafkaRecord>) -> DataStream<OrderEvent> {
    input
        .process(|r: KafkaRecord, ctx| match orders::parse_event(&r.value) {
            Ok(e) => ctx.emit(e),
            Err(defect) => ctx.dropped(drop_reason(defect)),
        })
        .uid("orders")
}

/// What a record's defect counts as when a job drops it.
fn drop_reason(defect: Invalid) -> DropReason {
    match defect {
        Invalid::Unparseable("value") => DropReason::Unparseable,
        _ => DropReason::Invalid,
    }
}

/// The records of `input` that `validate` accepts; the others are dropped and counted.
fn valid_records(
    input: &DataStream<KafkaRecord>,
    validate: fn(&[u8]) -> Result<(), Invalid>,
) -> DataStream<KafkaRecord> {
    input
        .process(move |r: KafkaRecord, ctx| match validate(&r.value) {
            Ok(()) => ctx.emit(r),
            Err(defect) => ctx.dropped(drop_reason(defect)),
        })
        .uid("validate")
}

/// The start of the `size_ms` window that holds `ts`.
fn window_start(ts: i64, size_ms: i64) -> i64 {
    ts - ts.rem_euclid(size_ms)
}

/// Runs `job`'s logic in local mode over `events` (stamped with their event times) and
/// returns what each output topic and the table received, for the jobs' tests.
#[cfg(test)]
fn run_locally(
    job: Job,
    events: &[crate::generator::Event],
) -> (BTreeMap<&'static str, Vec<Keyed>>, Vec<Keyed>) {
    use weir_engine::CollectSink;
    let env = StreamEnv::new(job.name());
    let input: Vec<(KafkaRecord, i64)> = events
        .iter()
        .map(|e| {
            let r = KafkaRecord {
                key: Some(e.key.clone()),
                value: e.value.clone(),
            };
            (r, e.timestamp_ms)
        })
        .collect();
    let bound = Duration::from_millis(job.out_of_orderness_ms() as u64 * 4);
    let strategy = WatermarkStrategy::for_bounded_out_of_orderness(bound)
        .with_timestamp_assigner(|r: &(KafkaRecord, i64), _| r.1);
    let records = env
        .from_collection(input, strategy)
        .map(|(r, _): (KafkaRecord, i64)| r);
    let outputs = job.logic(&records);
    let mut topics = BTreeMap::new();
    for (topic, stream) in outputs.topics {
        let (sink, collected) = CollectSink::new();
        stream.sink_to(sink);
        topics.insert(topic, collected);
    }
    let table = outputs.table.map(|(_, rows)| {
        let (sink, collected) = CollectSink::new();
        rows.sink_to(sink);
        collected
    });
    let clock = weir_seams::clock::Clock::starting_at(1_700_000_000_000);
    let built = env.build().expect("the job builds");
    let run = built.local(clock, None).expect("local mode runs it");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(async move {
            let mut run = run;
            run.run().await.expect("the job runs")
        });
    (
        topics.into_iter().map(|(t, c)| (t, c.values())).collect(),
        table.map(|c| c.values()).unwrap_or_default(),
    )
}

/// Checks that what `job` committed locally over `events` is what its oracle expects.
#[cfg(test)]
fn assert_matches_oracle(job: Job, events: &[crate::generator::Event]) {
    let (topics, _) = run_locally(job, events);
    let input: Vec<Input<'_>> = events.iter().map(Input::from).collect();
    for (topic, expected) in job.oracle(&input) {
        let mut found = ExpectedRecords::new();
        for r in &topics[topic] {
            let value: Value = serde_json::from_str(&r.value).expect("outputs are JSON");
            expect(&mut found, r.key.as_bytes(), &value);
        }
        assert!(!expected.is_empty(), "{topic}: the oracle expects output");
        assert_eq!(found, expected, "{topic}");
    }
}

/// Generated orders for the jobs' unit tests: the first `count` of seed 3, 5% invalid, from
/// 20 customers at `rate_per_s`.
#[cfg(test)]
fn test_orders(rate_per_s: f64, count: u64) -> Vec<crate::generator::Event> {
    let config = crate::generator::GeneratorConfig {
        rate_per_s,
        keys: 20,
        invalid_fraction: 0.05,
        ..Default::default()
    };
    Workload::Orders
        .events(3, &config, count)
        .unwrap()
        .collect()
}
