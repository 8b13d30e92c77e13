//! Jobs from the field, written for Weir's distributed runtime, each with an oracle that
//! computes its exact output from its input without the engine.
//!
//! A job here is a graph (plain data the job manager ships to task managers) plus the user
//! functions it names, which every task manager registers with [`functions`]. [`Job`] is the
//! catalog that `weir job` runs and the simulator's scenarios check.

pub mod click_analytics;
pub mod nexmark_queries;
pub mod nexmark_windows;
pub mod order_aggregates;
pub mod order_pipeline;
pub mod order_sessions;

use crate::generator::Event;
use crate::generator::Workload;
use bytes::Bytes;
use nexmark_queries::Query;
use nexmark_windows::WindowQuery;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use weir_engine::runtime::element::Row;
use weir_engine::runtime::{Edge, Functions, JobGraph, OperatorSpec, SinkMode, Vertex};
use weir_engine::stream::window::WindowAssigner;

/// Every job's user functions, for a task manager's registry.
pub fn functions() -> Functions {
    let f = order_aggregates::register(Functions::default());
    let f = order_sessions::register(f);
    let f = order_pipeline::register(f);
    let f = click_analytics::register(f);
    let f = nexmark_queries::register(f);
    nexmark_windows::register(f)
}

/// Where a job reads, how wide it runs and how it writes.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The input topic.
    pub input_topic: String,
    /// Its partition count.
    pub input_partitions: i32,
    /// Subtasks of every operator.
    pub parallelism: u32,
    /// How far behind the largest event time seen the watermark trails.
    pub out_of_orderness_ms: i64,
    /// A value that ends an input partition (bounded runs).
    pub end_marker: Option<String>,
    /// Exactly-once or at-least-once output.
    pub sink_mode: SinkMode,
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

impl<'a> From<&'a Event> for Input<'a> {
    fn from(e: &'a Event) -> Self {
        Input {
            key: &e.key,
            value: &e.value,
            ts: e.timestamp_ms,
        }
    }
}

/// A generated event as the row a source makes of it.
#[cfg(test)]
fn row_of(e: &Event) -> Row {
    Row {
        key: Bytes::from(e.key.clone()),
        value: Bytes::from(e.value.clone()),
        ts: e.timestamp_ms,
    }
}

/// Generated orders for the jobs' unit tests: the first `count` of seed 3, 5% invalid, from
/// 20 customers at `rate_per_s`.
#[cfg(test)]
fn test_orders(rate_per_s: f64, count: u64) -> Vec<Event> {
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

    /// The job's graph.
    pub fn graph(self, settings: &Settings) -> JobGraph {
        match self {
            Job::OrderAggregates => order_aggregates::graph(settings),
            Job::OrderPipeline => order_pipeline::graph(settings),
            Job::OrderSessions => order_sessions::graph(settings),
            Job::ClickAnalytics => click_analytics::graph(settings),
            Job::Nexmark(q) => nexmark_queries::graph(q, settings),
            Job::NexmarkWindows(q) => nexmark_windows::graph(q, settings),
        }
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

/// An operator of a [`linear`] job: its uid, the edge that feeds it, what it does.
type Step = (&'static str, Edge, OperatorSpec);

/// The graph `source -> steps -> sink`, every operator at the settings' parallelism, writing
/// to the topic named after the job.
fn linear(name: &str, settings: &Settings, steps: Vec<Step>) -> JobGraph {
    linear_to((name, name), settings, steps)
}

/// [`linear`], for a job (`.0`) whose sink writes a topic (`.1`) of another name.
fn linear_to((name, topic): (&str, &str), settings: &Settings, steps: Vec<Step>) -> JobGraph {
    let vertex = |uid: &str, op| Vertex {
        uid: uid.into(),
        op,
        parallelism: settings.parallelism,
    };
    let mut vertices = vec![vertex(
        "source",
        OperatorSpec::Source {
            topic: settings.input_topic.clone(),
            partitions: settings.input_partitions,
            out_of_orderness_ms: settings.out_of_orderness_ms,
            end_marker: settings.end_marker.clone(),
        },
    )];
    let mut edges = Vec::new();
    for (uid, edge, op) in steps {
        vertices.push(vertex(uid, op));
        edges.push(edge);
    }
    vertices.push(vertex(
        "sink",
        OperatorSpec::Sink {
            topic: topic.into(),
            mode: settings.sink_mode,
        },
    ));
    edges.push(Edge::Forward);
    JobGraph {
        name: name.into(),
        vertices,
        edges,
    }
}

/// The shape most windowed jobs share: `source -> prepare ==by key==> windows -> format ->
/// sink`, where the function `prepare` keys and values the rows and `format` turns each
/// window's result into a record.
fn keyed_windows(
    name: &str,
    settings: &Settings,
    prepare: &str,
    (uid, assigner): (&'static str, WindowAssigner),
    format: &str,
) -> JobGraph {
    let steps = vec![
        map("prepare", Edge::Forward, prepare),
        windows(uid, assigner),
        map("format", Edge::Forward, format),
    ];
    linear(name, settings, steps)
}

/// A step that keys rows by a hash exchange and aggregates them in `assigner`'s windows.
fn windows(uid: &'static str, assigner: WindowAssigner) -> Step {
    (uid, Edge::Hash, OperatorSpec::Window { assigner })
}

/// Tumbling windows of `size` ms.
fn tumbling(size: i64) -> WindowAssigner {
    WindowAssigner::Tumbling { size, offset: 0 }
}

/// A value the workload's `validate` accepts, parsed as `T`.
fn parse_valid<T: DeserializeOwned, E>(
    validate: fn(&[u8]) -> Result<(), E>,
    value: &[u8],
) -> Option<T> {
    validate(value).ok()?;
    serde_json::from_slice(value).ok()
}

/// `row` with `value`, as JSON, for its value.
fn with_json<T: Serialize>(row: Row, value: &T) -> Row {
    let value = serde_json::to_vec(value).expect("job outputs serialize");
    Row {
        value: Bytes::from(value),
        ..row
    }
}

/// The fields of an order event that jobs keying orders by customer read.
#[derive(Deserialize)]
struct OrderFields {
    event_type: String,
    order_id: u64,
    customer_id: String,
    total_amount: f64,
}

/// An order's creation as a row keyed by its customer and valued `<cents> <order id>`, so that
/// a window's extremes name their order; other events make none.
fn creation_by_customer(order: OrderFields, ts: i64) -> Option<Row> {
    (order.event_type == "order_created").then(|| Row {
        key: Bytes::from(order.customer_id),
        value: Bytes::from(format!(
            "{} {}",
            to_cents(order.total_amount),
            order.order_id
        )),
        ts,
    })
}

/// A step that runs the registered function `function`.
fn map(uid: &'static str, edge: Edge, function: &str) -> Step {
    (
        uid,
        edge,
        OperatorSpec::Map {
            function: function.into(),
        },
    )
}

/// An amount in whole cents; amounts have at most two decimals.
fn to_cents(amount: f64) -> i64 {
    (amount * 100.0).round() as i64
}

/// The start of the `size_ms` window that holds `ts`.
fn window_start(ts: i64, size_ms: i64) -> i64 {
    ts - ts.rem_euclid(size_ms)
}
