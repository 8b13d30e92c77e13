//! The distributed pipeline that `eos-pipeline` and `backpressure` run: three brokers, a job
//! manager, three task managers with two slots each (more if the job needs them), a feeder and an observer.
//!
//! ```text
//! feeder --orders (4 partitions)--> [source x2] ==keyed exchange==> [window 1 s -> 2PC sink] x2
//!                                                                      --order-totals-->
//! ```
//!
//! The feeder writes keyed amounts whose event times trail the clock by at most
//! [`DISORDER_MS`] (below the job's out-of-orderness), through one idempotent producer, so each
//! partition keeps them in order and no row can be late; then an end marker per partition. The
//! job reads to the markers, takes a final checkpoint and commits it, and reports itself
//! finished. The observer then reads both topics under read_committed and the checker compares
//! every window of the output with the windows recomputed from the input.

use super::common::{
    RETRY_MS, RecordsRead, add_brokers, broker_config_min_isr, broker_names, client_config,
    create_topic, faults_and_world, note, producer_config, read_records_to_end, report, sleep_ms,
    wait_for_topic,
};
use crate::checker::{check_rows, check_table, check_windows, check_windows_at_least_once, oracle};
use crate::env::{EPOCH_MS, Env, Rec, now_ms};
use crate::fault::{FaultPlan, TimedFault, Topology};
use crate::harness::{CommittedInput, InputRecord, TestSettings, UserJob};
use crate::report::RunReport;
use crate::scenario::RunSpec;
use bytes::Bytes;
use rand::Rng;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use weir_client::{
    Cluster, Consumer, ConsumerConfig, ConsumerRecord, Isolation, OffsetReset, Producer, Record,
};
use weir_engine::DeliveryGuarantee;
use weir_engine::runtime::exchange::ExchangeConfig;
use weir_engine::runtime::metrics::{CheckpointStats, LatencyStats, TaskSample};
use weir_engine::runtime::rpc::{JOB_MANAGER_PORT, ask};
use weir_engine::runtime::snapshot::TaskId;
use weir_engine::runtime::table::server::{
    TABLE_PORT, TableClient, TableServerConfig, run_table_server,
};
use weir_engine::runtime::table::{TableContent, TableStore, Tables};
use weir_engine::runtime::{
    Alignment, CheckpointConfig, ExecutionModel, JobConfig, JobEvent, JobManagerConfig, JobState,
    RestartStrategy, RuntimeMutation, TaskManagerConfig, ToClient, ToJobManager, run_job_manager,
    run_task_manager,
};
use weir_seams::clock::Clock;
use weir_seams::disk::Disk;
use weir_seams::net::Net;
use weir_seams::rng::{self, WeirRng};
use weir_workloads::generator::{GeneratorConfig, Skew, Workload};
use weir_workloads::jobs::nexmark_windows::WindowQuery;
use weir_workloads::jobs::order_pipeline;
use weir_workloads::jobs::{Input, Job, Settings, canonical};

pub(crate) mod live;
mod order_totals;

const INPUT_PARTITIONS: i32 = 4;
const OUTPUT_PARTITIONS: i32 = 2;
const REPLICATION_FACTOR: i16 = 3;
const KEYS: u32 = 16;
const WINDOW_MS: i64 = 1_000;
const OUT_OF_ORDERNESS_MS: i64 = 500;
/// How far an input's event time may trail the clock.
pub(crate) const DISORDER_MS: i64 = 200;
/// The value that ends every input partition.
pub(crate) const END_MARKER: &str = "END";
/// Inputs the feeder writes at least, unless a scenario asks for more.
pub(crate) const INPUTS_MIN: u64 = 300;
const TASK_MANAGERS: usize = 3;
/// Slots per task manager, at least: with one task manager down the others hold every
/// subtask of the scenarios' jobs.
const SLOTS: u32 = 2;
const JOB_MANAGER: &str = "jm";
/// The host of the table that upsert operators write, for jobs that have one.
const TABLE_HOST: &str = "table";
/// Faults strike during this phase, in simulated milliseconds.
pub(crate) const WORKLOAD_MS: u64 = 20_000;
/// After the heal the job must have finished within this bound.
const FINISH_BOUND_MS: u64 = 40_000;
/// How often the timeline gets a metrics line, in simulated milliseconds.
const METRICS_NOTE_MS: u64 = 1_000;
/// When the operator asks the job to stop with a savepoint, in simulated milliseconds.
const STOP_AT_MS: std::ops::Range<u64> = 2_000..15_000;
/// Longest the job stays stopped before the operator starts it again.
const STOPPED_FOR_MS_MAX: u64 = 3_000;
/// How long the operator waits for the answer to a stop: a checkpoint's timeout and its commit.
const STOP_REPLY_MS: u64 = 15_000;

/// The job a pipeline scenario runs, with the input it is fed and the oracle it is checked by.
#[derive(Clone, Debug)]
pub(crate) enum PipelineJob {
    /// Keyed integer amounts stamped near the clock; 1 s windows count and sum them.
    OrderTotals,
    /// A job of the catalog ([`jobs::Job`]), fed its generated workload, whose event time
    /// runs ahead of the clock at the rate [`generator_config`] sets.
    Catalog(Job),
    /// A user's job under [`crate::harness::JobTest`], fed the user's generators and checked
    /// by the user's oracle.
    User(Arc<UserJob>),
}

impl PipelineJob {
    /// The input topic the catalog's and order-totals' feeders write (a user job's first).
    fn input_topic(&self) -> &str {
        match self {
            PipelineJob::OrderTotals => "orders",
            PipelineJob::Catalog(job) => job.input_topic(),
            PipelineJob::User(job) => job.input_topics().next().expect("a user job has inputs"),
        }
    }

    /// Every input topic.
    fn input_topics(&self) -> Vec<&str> {
        match self {
            PipelineJob::User(job) => job.input_topics().collect(),
            _ => vec![self.input_topic()],
        }
    }

    fn outputs(&self) -> Vec<&str> {
        match self {
            PipelineJob::OrderTotals => vec!["order-totals"],
            PipelineJob::Catalog(job) => job.outputs(),
            PipelineJob::User(job) => job.outputs.iter().map(String::as_str).collect(),
        }
    }

    /// The table the job upserts into, if any.
    fn table(&self) -> Option<&'static str> {
        match self {
            PipelineJob::OrderTotals | PipelineJob::User(_) => None,
            PipelineJob::Catalog(job) => job.table(),
        }
    }

    /// The tables its task managers can write: the table host's, reached over the network.
    fn tables(&self) -> Tables {
        let Some(table) = self.table() else {
            return Tables::default();
        };
        let client = TableClient::new(Net::Sim, &format!("{TABLE_HOST}:{TABLE_PORT}"), table);
        Tables::default().with(table, Arc::new(client))
    }

    /// The generator that feeds the job, if the feeder does not make its own input.
    fn generator(&self) -> Option<(Workload, GeneratorConfig)> {
        match self {
            PipelineJob::OrderTotals | PipelineJob::User(_) => None,
            PipelineJob::Catalog(job) => Some((job.workload(), generator_config(*job))),
        }
    }
}

/// The generated input of a catalog job: a few invalid events, disorder well below the job's
/// out-of-orderness and no late events, so that the oracle's output is exact; event time fast
/// enough that a run of a few thousand events spans many of the job's windows.
fn generator_config(job: Job) -> GeneratorConfig {
    let base = GeneratorConfig {
        start_ms: EPOCH_MS,
        invalid_fraction: 0.02,
        ..GeneratorConfig::default()
    };
    // One order every two seconds from zipf-skewed customers, 5% invalid.
    let orders = GeneratorConfig {
        rate_per_s: 0.5,
        keys: 20,
        skew: Skew::Zipf { exponent: 1.0 },
        out_of_orderness_ms: 10_000,
        invalid_fraction: 0.05,
        ..base
    };
    match job {
        // Five-minute windows (one-hour ones sliding by five minutes): few customers.
        Job::OrderAggregates | Job::OrderPipeline => orders,
        // Ten-minute sessions: many customers, so that the rare ones' orders are far enough
        // apart to end sessions.
        Job::OrderSessions => GeneratorConfig {
            keys: 200,
            ..orders
        },
        // One-minute windows and a ten-minute watermark lag: one click a second (one in twenty
        // a transaction), disordered by up to a minute, so that windows start firing after
        // about 600 events, while the faults still strike.
        Job::ClickAnalytics => GeneratorConfig {
            rate_per_s: 1.0,
            keys: 10,
            skew: Skew::Zipf { exponent: 1.0 },
            out_of_orderness_ms: 60_000,
            ..base
        },
        Job::Nexmark(_) => base,
        // Ten-second windows: twenty events a second, so that a run spans a dozen; q8 joins
        // the persons of a window with its auctions, and at a hundred events a second a
        // window holds about twenty persons to join.
        Job::NexmarkWindows(q) => GeneratorConfig {
            rate_per_s: if q == WindowQuery::Q8 { 100.0 } else { 20.0 },
            ..base
        },
    }
}

impl PipelineJob {
    /// The bound on disorder the job's watermarks allow, in ms.
    pub(crate) fn out_of_orderness_ms(&self) -> i64 {
        match self {
            PipelineJob::OrderTotals => OUT_OF_ORDERNESS_MS,
            PipelineJob::Catalog(job) => out_of_orderness_ms(*job),
            // The user's job sets its own; nothing here depends on it.
            PipelineJob::User(_) => 0,
        }
    }
}

/// The job's out-of-orderness in a run: the catalog's default, which is above the generated
/// disorder, except for the order jobs, whose default of 5 s is below it.
fn out_of_orderness_ms(job: Job) -> i64 {
    match job {
        Job::OrderAggregates | Job::OrderPipeline | Job::OrderSessions => 15_000,
        _ => job.out_of_orderness_ms(),
    }
}

/// Events a generator is asked for at most; the feeder stops long before.
const GENERATED_MAX: u64 = 1_000_000;

/// One of the scenarios on this pipeline.
#[derive(Clone)]
pub(crate) struct Pipeline {
    pub name: &'static str,
    /// The job.
    pub job: PipelineJob,
    /// Exchange limits of the job.
    pub exchange: ExchangeConfig,
    /// Mean gap between two inputs, in milliseconds.
    pub input_gap_ms: u64,
    /// Inputs the feeder writes at least, even if the faults kept it out until the heal.
    pub inputs_min: u64,
    /// Faults the scenario adds to every plan.
    pub extra_faults: fn(&mut WeirRng) -> Vec<TimedFault>,
    /// A stretch, in simulated ms, in which the plan's faults do not strike (their repairs still
    /// happen).
    pub quiet_ms: Option<std::ops::Range<u64>>,
    /// An operator stops the job with a savepoint during the workload and, after a pause,
    /// starts the job manager again from that savepoint.
    pub stop_and_resume: bool,
    /// The execution model.
    pub model: ExecutionModel,
    /// The output is checked for at least once (every window's rows counted, perhaps twice)
    /// rather than exactly once.
    pub at_least_once: bool,
    /// A read_committed reader outside the faults' reach follows the output from the start
    /// and records how long after its window's end each result became visible (for
    /// `weir bench compare`; the scenarios leave it out).
    pub probe: bool,
}

/// What the run's samples and job events showed, for the scenarios' own checks.
#[derive(Default)]
pub(crate) struct Observed {
    /// Samples in which a task held more exchange buffers than its bound: (ms, task, held, bound).
    pub buffer_breaches: Vec<(u64, TaskId, usize, usize)>,
    /// Total source lag, one point per metrics note: (ms, records).
    pub lag: Vec<(u64, u64)>,
    lag_by_task: BTreeMap<TaskId, (u64, u64)>,
    latest: BTreeMap<(TaskId, u64), TaskSample>,
    pub checkpoints: Vec<CheckpointStats>,
    failovers: u64,
    last_note_ms: Option<u64>,
    /// Savepoints the job stopped with, with the checkpoint id each holds.
    pub stopped_with: Vec<(String, u64)>,
    /// Attempts deployed from a savepoint the job had stopped with.
    pub resumed_from_savepoint: u64,
    /// Micro-batch: each batch started.
    pub batches: Vec<Batch>,
    /// Micro-batch: batches re-run from the offset log.
    pub batches_replayed: u64,
    /// With the probe: ms from each result's event time to when a read_committed reader
    /// first saw it.
    pub visible_after_ms: Vec<u64>,
    /// Kafka Streams and Storm models: ms each subtask commit took.
    pub commits_ms: Vec<u64>,
    /// Kafka Streams and Storm models: rows each (subtask, attempt) had dropped as late at its
    /// latest commit, which a job that finishes right after it may not live to sample.
    late_at_commit: BTreeMap<(TaskId, u64), u64>,
    /// Output records (windows, for order-totals) the oracle expects, once the observer has
    /// read the output.
    pub expected_records: Option<usize>,
    /// When the failover not yet followed by a completed checkpoint (or, under the Kafka
    /// Streams model, a committed transaction) happened, in sim ms.
    failed_at_ms: Option<u64>,
    /// Ms from each failover to the next completed checkpoint or committed transaction.
    pub recoveries_ms: Vec<u64>,
    /// Input records the feeder wrote (as the observer read them back).
    pub inputs: u64,
    /// When the observer saw the job finished, in sim ms.
    pub finished_at_ms: Option<u64>,
}

/// Each source subtask's end offset per partition of one batch.
pub(crate) type BatchRanges = BTreeMap<String, BTreeMap<i32, i64>>;

/// A micro-batch the job manager started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Batch {
    /// The checkpoint that commits it.
    pub checkpoint_id: u64,
    /// The checkpoint it starts from.
    pub after: Option<u64>,
    /// Where it ends.
    pub ends: BatchRanges,
}

impl Observed {
    /// Rows the job's windows dropped as late, over every attempt.
    pub fn late_dropped(&self) -> u64 {
        let sampled = self
            .latest
            .iter()
            .map(|((t, a), s)| ((*t, *a), s.drops.late));
        let mut late: BTreeMap<(TaskId, u64), u64> = sampled.collect();
        for (k, n) in &self.late_at_commit {
            let at = late.entry(*k).or_default();
            *at = (*at).max(*n);
        }
        late.values().sum()
    }

    fn on_samples(&mut self, rec: &Rec, samples: &[TaskSample]) {
        let now = now_ms();
        for s in samples {
            let Some(task) = s.task else { continue };
            if s.buffers_peak > s.buffers_bound && self.buffer_breaches.len() < 100 {
                self.buffer_breaches
                    .push((now, task, s.buffers_peak, s.buffers_bound));
            }
            if let Some(lag) = s.lag_records {
                let newer = self
                    .lag_by_task
                    .get(&task)
                    .is_none_or(|(a, _)| *a <= s.attempt);
                if newer {
                    self.lag_by_task.insert(task, (s.attempt, lag));
                }
            }
            self.latest.insert((task, s.attempt), s.clone());
        }
        if self.last_note_ms.is_some_and(|t| now < t + METRICS_NOTE_MS) {
            return;
        }
        self.last_note_ms = Some(now);
        let lag: u64 = self.lag_by_task.values().map(|(_, l)| l).sum();
        self.lag.push((now, lag));
        let held: usize = samples.iter().map(|s| s.buffers_in_use).sum();
        let bound: usize = samples.iter().map(|s| s.buffers_bound).sum();
        let blocked = samples
            .iter()
            .map(|s| s.backpressured_ms)
            .max()
            .unwrap_or(0);
        let state: u64 = samples.iter().map(|s| s.state_bytes).sum();
        note(
            rec,
            "metrics",
            format!(
                "source lag {lag} records; buffers {held}/{bound} held on this tm; backpressure {blocked} ms; state {state} B"
            ),
        );
    }

    /// Takes in one of the job manager's events.
    pub(crate) fn on_event(&mut self, e: &JobEvent) {
        match e {
            JobEvent::CheckpointCompleted(c) => {
                self.checkpoints.push(*c);
                if let Some(at) = self.failed_at_ms.take() {
                    self.recoveries_ms.push(now_ms() - at);
                }
            }
            JobEvent::SubtaskCommitted {
                attempt,
                task,
                commit_ms,
                late_dropped,
            } => {
                self.commits_ms.push(*commit_ms);
                self.late_at_commit.insert((*task, *attempt), *late_dropped);
                if let Some(at) = self.failed_at_ms.take() {
                    self.recoveries_ms.push(now_ms() - at);
                }
            }
            JobEvent::Failover { .. } => {
                self.failovers += 1;
                self.failed_at_ms.get_or_insert(now_ms());
            }
            JobEvent::BatchStarted {
                checkpoint_id,
                after,
                ends,
                replayed,
            } => {
                self.batches.push(Batch {
                    checkpoint_id: *checkpoint_id,
                    after: *after,
                    ends: ends.clone(),
                });
                self.batches_replayed += u64::from(*replayed);
            }
            JobEvent::Stopped { savepoint } => {
                let id = self.checkpoints.last().map_or(0, |c| c.id);
                self.stopped_with.push((savepoint.clone(), id));
            }
            JobEvent::Deployed {
                restored: Some(id), ..
            } if self.stopped_with.iter().any(|(_, s)| s == id) => {
                self.resumed_from_savepoint += 1;
            }
            _ => {}
        }
    }

    /// The longest any task attempt's output waited for buffers, in milliseconds.
    pub fn backpressure_max_ms(&self) -> u64 {
        self.latest
            .values()
            .map(|s| s.backpressured_ms)
            .max()
            .unwrap_or(0)
    }

    /// The figures a run reports.
    fn figures(&self) -> Vec<(String, String)> {
        let mut commit = LatencyStats::default();
        let mut write = LatencyStats::default();
        let (mut state, mut replayed) = (0u64, 0u64);
        for s in self.latest.values() {
            commit.merge(&s.commit_latency);
            write.merge(&s.write_latency);
            state = state.max(s.state_bytes);
            replayed += s.replayed;
        }
        let n = self.checkpoints.len() as u64;
        let mean = |f: fn(&CheckpointStats) -> u64| {
            (n > 0).then(|| self.checkpoints.iter().map(f).sum::<u64>() / n)
        };
        let max = |f: fn(&CheckpointStats) -> u64| self.checkpoints.iter().map(f).max();
        let ms = |v: Option<u64>| v.map_or("-".into(), |v| format!("{v} ms"));
        let lag_max = self
            .lag
            .iter()
            .max_by_key(|(_, l)| *l)
            .copied()
            .unwrap_or((0, 0));
        vec![
            ("checkpoints completed".into(), n.to_string()),
            (
                "checkpoint duration".into(),
                format!(
                    "mean {}, max {}",
                    ms(mean(|c| c.duration_ms)),
                    ms(max(|c| c.duration_ms))
                ),
            ),
            (
                "checkpoint size".into(),
                format!(
                    "mean {} B, max {} B",
                    mean(|c| c.size_bytes).unwrap_or(0),
                    max(|c| c.size_bytes).unwrap_or(0)
                ),
            ),
            (
                "subtask commits (Kafka Streams transactions, Storm source offsets)".into(),
                format!(
                    "{}, mean {}, max {}",
                    self.commits_ms.len(),
                    ms((!self.commits_ms.is_empty()).then(
                        || self.commits_ms.iter().sum::<u64>() / self.commits_ms.len() as u64
                    )),
                    ms(self.commits_ms.iter().max().copied())
                ),
            ),
            ("restarts".into(), self.failovers.to_string()),
            (
                "end-to-end latency (event time to commit)".into(),
                format!(
                    "mean {}, max {} ms over {} rows",
                    ms(commit.mean_ms()),
                    commit.max_ms,
                    commit.count
                ),
            ),
            (
                "processing latency (event time to sink write)".into(),
                format!(
                    "mean {}, max {} ms over {} rows",
                    ms(write.mean_ms()),
                    write.max_ms,
                    write.count
                ),
            ),
            (
                "backpressure (longest a task's output waited)".into(),
                format!("{} ms", self.backpressure_max_ms()),
            ),
            ("window state (largest task)".into(), format!("{state} B")),
            ("late rows dropped".into(), self.late_dropped().to_string()),
            (
                "records replayed after a timeout (Storm model)".into(),
                replayed.to_string(),
            ),
            (
                "consumer lag (sources, largest)".into(),
                format!("{} records at {} ms", lag_max.1, lag_max.0),
            ),
            (
                "exchange buffer bound breaches".into(),
                self.buffer_breaches.len().to_string(),
            ),
        ]
    }
}

struct Shared {
    job: PipelineJob,
    brokers: Vec<String>,
    /// The savepoint the operator told the job manager to resume from.
    resume_from: RefCell<Option<String>>,
    /// Wakes the job manager's host to start again from `resume_from`.
    resume: tokio::sync::Notify,
    /// The operator is done (or there is none): the feeder may end the input.
    operator_done: Cell<bool>,
    feeder_done: Cell<bool>,
    drained: RefCell<Option<Result<Drained, String>>>,
    observed: RefCell<Observed>,
}

/// The job `kind` at the scenarios' settings: two subtasks per operator, reading to the end
/// markers, writing exactly once.
pub(crate) fn build_job(kind: &PipelineJob) -> Rc<weir_engine::Job> {
    let built = match kind {
        PipelineJob::OrderTotals => order_totals::build().map_err(|e| e.to_string()),
        PipelineJob::Catalog(job) => job
            .build(&Settings {
                input_topic: kind.input_topic().into(),
                parallelism: 2,
                out_of_orderness_ms: out_of_orderness_ms(*job),
                end_marker: Some(END_MARKER.into()),
                guarantee: DeliveryGuarantee::ExactlyOnce,
            })
            .map_err(|e| e.to_string()),
        PipelineJob::User(job) => job.build(&TestSettings {
            end_marker: END_MARKER.into(),
            parallelism: 2,
        }),
    };
    Rc::new(built.unwrap_or_else(|e| panic!("the job does not build: {e}")))
}

/// The runtime settings of `job` in a pipeline scenario.
pub(crate) fn job_config(
    job: &weir_engine::Job,
    brokers: &[String],
    exchange: ExchangeConfig,
    mutation: Option<RuntimeMutation>,
) -> JobConfig {
    JobConfig {
        checkpoint: CheckpointConfig {
            interval_ms: 1_000,
            timeout_ms: 5_000,
            ..CheckpointConfig::default()
        },
        restart: RestartStrategy {
            backoff_initial_ms: 200,
            backoff_max_ms: 2_000,
            attempts_max: 1_000,
            reset_after_ms: 10_000,
        },
        exchange,
        heartbeat_interval_ms: 250,
        heartbeat_timeout_ms: 2_000,
        broker_connect_timeout_ms: 1_000,
        broker_request_timeout_ms: 5_000,
        mutation,
        ..JobConfig::new(
            job.topology().clone(),
            brokers
                .iter()
                .map(|b| format!("{b}:{}", super::common::PORT))
                .collect(),
        )
    }
}

/// Writes the job's input until the faults end, then an end marker on every partition.
async fn feeder(
    rec: Rec,
    shared: Rc<Shared>,
    seed: u64,
    (gap_ms, inputs_min): (u64, u64),
) -> turmoil::Result {
    let name = "feeder";
    let cluster = Cluster::new(client_config(name, &shared.brokers));
    let clock = Clock::starting_at(EPOCH_MS + now_ms() as i64);
    let until = WORKLOAD_MS + FINISH_BOUND_MS;
    let input = shared.job.input_topic();
    for topic in shared.job.input_topics() {
        create_topic(&cluster, topic, INPUT_PARTITIONS, REPLICATION_FACTOR, until).await;
    }
    for output in shared.job.outputs() {
        create_topic(
            &cluster,
            output,
            OUTPUT_PARTITIONS,
            REPLICATION_FACTOR,
            until,
        )
        .await;
    }
    let mut rng = rng::derive(seed, name);
    // One producer for the whole run: its idempotence keeps each partition in send order.
    let producer = loop {
        match Producer::new(Arc::clone(&cluster), producer_config(120_000), clock).await {
            Ok(p) => break p,
            Err(_) => sleep_ms(RETRY_MS).await,
        }
    };
    let mut generated = shared.job.generator().map(|(workload, config)| {
        workload
            .events(seed, &config, GENERATED_MAX)
            .expect("the generator settings are valid")
    });
    // A user job's input is what its generators give, no more.
    let mut given = match &shared.job {
        PipelineJob::User(job) => Some(job.generate(&mut rng).into_iter()),
        _ => None,
    };
    let mut deliveries = Vec::new();
    let mut sent = 0u64;
    // At least `inputs_min` inputs, even if the faults kept the feeder out until the heal, and
    // input until the operator has stopped and resumed the job, so that it cannot finish first.
    loop {
        let more = now_ms() < WORKLOAD_MS || sent < inputs_min || !shared.operator_done.get();
        let (topic, key, value, ts) = match (&mut given, &mut generated) {
            (Some(records), _) => match records.next() {
                Some((topic, r)) => (topic, r.key, r.value, r.timestamp_ms),
                None => break,
            },
            _ if !more => break,
            (None, Some(events)) => {
                let e = events.next().expect("the generator outlasts the feeder");
                let key = Some(Bytes::from(e.key));
                (input.to_string(), key, Bytes::from(e.value), e.timestamp_ms)
            }
            (None, None) => {
                let key = format!("customer-{:02}", rng.random_range(0..KEYS));
                let amount: i64 = rng.random_range(1..=100);
                let ts = clock.now_ms() - rng.random_range(0..=DISORDER_MS);
                let value = Bytes::from(amount.to_string());
                (input.to_string(), Some(Bytes::from(key)), value, ts)
            }
        };
        let record = Record {
            timestamp: Some(ts),
            ..Record::new(&topic, key, value)
        };
        match producer.send(record).await {
            Ok(d) => {
                deliveries.push(d);
                sent += 1;
            }
            Err(e) => note(&rec, name, format!("send failed: {e}")),
        }
        sleep_ms(rng.random_range(1..=2 * gap_ms)).await;
    }
    let mut failed = 0;
    for d in deliveries {
        if d.wait().await.is_err() {
            failed += 1;
        }
    }
    note(
        &rec,
        name,
        format!("{sent} inputs sent, {failed} without an acknowledgement"),
    );
    for topic in shared.job.input_topics() {
        end_input(&producer, topic, || clock.now_ms()).await;
    }
    note(&rec, name, "end markers written".into());
    producer.close().await;
    shared.feeder_done.set(true);
    Ok(())
}

/// Writes the end marker on every partition of `topic`, stamped by `now_ms`, until each is
/// acknowledged.
async fn end_input(producer: &Producer, topic: &str, now_ms: impl Fn() -> i64) {
    for p in 0..INPUT_PARTITIONS {
        loop {
            let marker = Record {
                partition: Some(p),
                timestamp: Some(now_ms()),
                ..Record::new(
                    topic,
                    None::<Bytes>,
                    Bytes::from_static(END_MARKER.as_bytes()),
                )
            };
            let acked = match producer.send(marker).await {
                Ok(d) => d.wait().await.is_ok(),
                Err(_) => false,
            };
            if acked {
                break;
            }
            sleep_ms(RETRY_MS).await;
        }
    }
}

/// Stops the job with a savepoint at `stop_at_ms`, asking again until a job manager answers
/// with one, then after `pause_ms` starts the job manager again from it.
async fn operator(
    rec: Rec,
    shared: Rc<Shared>,
    control_limit: usize,
    stop_at_ms: u64,
    pause_ms: u64,
) -> turmoil::Result {
    let name = "operator";
    sleep_ms(stop_at_ms).await;
    let jm = format!("{JOB_MANAGER}:{JOB_MANAGER_PORT}");
    let savepoint = loop {
        if now_ms() >= WORKLOAD_MS + FINISH_BOUND_MS / 2 {
            note(&rec, name, "gave up stopping the job".into());
            shared.operator_done.set(true);
            return Ok(());
        }
        let reply = tokio::time::timeout(
            std::time::Duration::from_millis(STOP_REPLY_MS),
            ask(
                Net::Sim,
                &jm,
                &ToJobManager::StopWithSavepoint,
                control_limit,
            ),
        )
        .await;
        match reply {
            Ok(Ok(ToClient::Savepoint(Ok(savepoint)))) => break savepoint,
            Ok(Ok(ToClient::Savepoint(Err(why)))) => {
                note(&rec, name, format!("stop refused: {why}"))
            }
            Ok(other) => note(&rec, name, format!("stop failed: {other:?}")),
            Err(_) => note(&rec, name, "stop timed out".into()),
        }
        sleep_ms(RETRY_MS).await;
    };
    note(&rec, name, format!("job stopped with {savepoint}"));
    sleep_ms(pause_ms).await;
    note(
        &rec,
        name,
        format!("job manager restarted from {savepoint}"),
    );
    *shared.resume_from.borrow_mut() = Some(savepoint);
    shared.resume.notify_one();
    shared.operator_done.set(true);
    Ok(())
}

/// Waits for the job to finish, then reads the input and the committed output.
async fn observer(rec: Rec, shared: Rc<Shared>, control_limit: usize) -> turmoil::Result {
    let name = "observer";
    let deadline = WORKLOAD_MS + FINISH_BOUND_MS;
    sleep_ms(WORKLOAD_MS.saturating_sub(now_ms())).await;
    let result = drain(&rec, &shared, control_limit, deadline).await;
    if let Err(why) = &result {
        note(&rec, name, format!("drain failed: {why}"));
    }
    *shared.drained.borrow_mut() = Some(result);
    Ok(())
}

/// Follows the output topics under read_committed until the observer is done, noting when
/// each record first became visible, relative to its event time.
async fn probe(shared: Rc<Shared>) -> turmoil::Result {
    let cluster = Cluster::new(client_config("probe", &shared.brokers));
    let deadline = WORKLOAD_MS + FINISH_BOUND_MS;
    let mut consumer = Consumer::new(
        Arc::clone(&cluster),
        ConsumerConfig {
            fetch_max_wait_ms: 50,
            isolation: Isolation::ReadCommitted,
            auto_offset_reset: OffsetReset::Earliest,
            ..ConsumerConfig::default()
        },
    );
    for topic in shared.job.outputs() {
        wait_for_topic(&cluster, topic, deadline).await;
    }
    consumer.assign(
        shared
            .job
            .outputs()
            .iter()
            .flat_map(|t| (0..OUTPUT_PARTITIONS).map(move |p| (t.to_string(), p))),
    );
    while shared.drained.borrow().is_none() {
        match consumer.poll(std::time::Duration::from_millis(50)).await {
            Ok(records) => {
                let now = EPOCH_MS + now_ms() as i64;
                let mut o = shared.observed.borrow_mut();
                for r in records {
                    o.visible_after_ms
                        .push(u64::try_from(now - r.timestamp).unwrap_or(0));
                }
            }
            Err(_) => sleep_ms(RETRY_MS).await,
        }
    }
    Ok(())
}

async fn drain(
    rec: &Rec,
    shared: &Shared,
    control_limit: usize,
    deadline: u64,
) -> Result<Drained, String> {
    let name = "observer";
    while !shared.feeder_done.get() {
        if now_ms() >= deadline {
            return Err(format!(
                "the feeder was still busy {FINISH_BOUND_MS} ms after the heal"
            ));
        }
        sleep_ms(RETRY_MS).await;
    }
    let jm = format!("{JOB_MANAGER}:{JOB_MANAGER_PORT}");
    let bound = format!("{FINISH_BOUND_MS} ms after the heal");
    wait_finished(Net::Sim, &jm, control_limit, (deadline, &bound), 500).await?;
    note(rec, name, "the job finished".into());
    shared.observed.borrow_mut().finished_at_ms = Some(now_ms());
    let cluster = Cluster::new(client_config(name, &shared.brokers));
    for topic in shared.job.outputs() {
        wait_for_topic(&cluster, topic, deadline).await;
    }
    read_committed(rec, &cluster, &shared.job, deadline).await
}

/// Asks the job manager at `jm` for the job's state every `poll_ms` until it has finished;
/// an error if it failed or had not finished by the deadline (`bound` says when that is).
pub(crate) async fn wait_finished(
    net: Net,
    jm: &str,
    control_limit: usize,
    (deadline, bound): (u64, &str),
    poll_ms: u64,
) -> Result<(), String> {
    let mut last = None;
    loop {
        if now_ms() >= deadline {
            return Err(format!(
                "the job had not finished {bound}; last status {last:?}"
            ));
        }
        let status = tokio::time::timeout(
            std::time::Duration::from_millis(1_000),
            ask(net, jm, &ToJobManager::Status, control_limit),
        )
        .await;
        if let Ok(Ok(ToClient::Status { state, failure, .. })) = &status {
            match state {
                JobState::Finished => return Ok(()),
                JobState::Failed => return Err(format!("the job failed: {failure:?}")),
                _ => {}
            }
        }
        last = status.ok().and_then(Result::ok);
        sleep_ms(poll_ms).await;
    }
}

/// Reads what the finished job committed: its input, its output topics and its table.
async fn read_committed(
    rec: &Rec,
    cluster: &Arc<Cluster>,
    job: &PipelineJob,
    deadline: u64,
) -> Result<Drained, String> {
    let name = "observer";
    let committed = ConsumerConfig {
        fetch_max_wait_ms: 250,
        isolation: Isolation::ReadCommitted,
        ..ConsumerConfig::default()
    };
    let read = async |topic: &str, n: i32| {
        let partitions: Vec<(String, i32)> = (0..n).map(|p| (topic.to_string(), p)).collect();
        let c = (Arc::clone(cluster), committed.clone());
        read_records_to_end(rec, name, c.0, c.1, &partitions, deadline)
            .await
            .map_err(|(_, why)| why)
    };
    let mut inputs = Vec::new();
    for topic in job.input_topics() {
        inputs.push((topic.to_string(), read(topic, INPUT_PARTITIONS).await?));
    }
    let table = match job.table().and_then(|t| job.tables().get(t)) {
        Some(store) => Some(scan_table(rec, store.as_ref(), deadline).await?),
        None => None,
    };
    let mut outputs = Outputs::new();
    for topic in job.outputs() {
        let output = read(topic, OUTPUT_PARTITIONS).await?;
        let rows: usize = output.values().map(Vec::len).sum();
        note(
            rec,
            name,
            format!("read {rows} committed records of {topic}"),
        );
        outputs.push((topic.to_string(), output));
    }
    Ok(Drained {
        inputs,
        outputs,
        table,
    })
}

/// Reads the whole table, retrying while its host is unreachable.
async fn scan_table(
    rec: &Rec,
    store: &dyn TableStore,
    deadline: u64,
) -> Result<TableContent, String> {
    loop {
        match store.scan().await {
            Ok(content) => {
                note(
                    rec,
                    "observer",
                    format!("read {} table rows", content.len()),
                );
                return Ok(content);
            }
            Err(e) if now_ms() >= deadline => return Err(format!("table: {e}")),
            Err(_) => sleep_ms(RETRY_MS).await,
        }
    }
}

/// The committed records of each topic.
type Outputs = Vec<(String, RecordsRead)>;

/// What the observer read once the job finished.
struct Drained {
    /// Each input topic, committed.
    inputs: Outputs,
    /// Each output topic, committed.
    outputs: Outputs,
    /// The table the job upserts into, if it has one.
    table: Option<TableContent>,
}

impl Drained {
    /// The committed records of the (first) input topic.
    fn input(&self) -> &RecordsRead {
        &self.inputs.first().expect("every job has an input").1
    }

    /// The committed records of output `topic`.
    fn output(&self, topic: &str) -> &RecordsRead {
        self.outputs
            .iter()
            .find(|(t, _)| t == topic)
            .map(|(_, records)| records)
            .expect("the observer reads every output topic")
    }

    /// Committed input records over every input topic.
    fn inputs_len(&self) -> u64 {
        let records = self.inputs.iter().flat_map(|(_, r)| r.values());
        records.map(|r| r.len() as u64).sum()
    }
}

/// The runtime a mutant of a pipeline scenario runs (the command line has checked the name
/// against the scenario's list).
pub(crate) fn mutation(spec: &RunSpec) -> Option<RuntimeMutation> {
    spec.mutant.as_deref().map(|m| match m {
        "commit-before-complete" => RuntimeMutation::CommitBeforeComplete,
        "offsets-after-barrier" => RuntimeMutation::OffsetsAfterBarrier,
        "unbounded-buffers" => RuntimeMutation::UnboundedBuffers,
        "savepoint-ignored" => RuntimeMutation::SavepointIgnored,
        "offset-log-ignored" => RuntimeMutation::OffsetLogIgnored,
        "batch-unbounded" => RuntimeMutation::BatchUnbounded,
        "changelog-skipped" => RuntimeMutation::ChangelogSkipped,
        "commit-past-open-trees" => RuntimeMutation::CommitPastOpenTrees,
        m => panic!("unknown mutant {m:?}"),
    })
}

/// Checks the committed output against the job's oracle; returns how many records (windows,
/// for order-totals) the oracle expects, and every violation.
fn check_output(job: &PipelineJob, at_least_once: bool, drained: &Drained) -> (usize, Vec<String>) {
    let input = drained.input();
    let output = |topic: &str| drained.output(topic);
    match job {
        PipelineJob::OrderTotals => {
            let expected = oracle(input, WINDOW_MS, END_MARKER.as_bytes());
            let output = output(job.outputs()[0]);
            let found = if at_least_once {
                check_windows_at_least_once(&expected, output)
            } else {
                check_windows(&expected, output)
            };
            (expected.len(), strings(found))
        }
        PipelineJob::User(job) => check_user_output(job, drained, at_least_once),
        PipelineJob::Catalog(job) => {
            let input: Vec<Input<'_>> = input
                .values()
                .flatten()
                .filter_map(|r| {
                    let value = r.value.as_deref().unwrap_or_default();
                    (value != END_MARKER.as_bytes()).then(|| Input {
                        key: r.key.as_deref().unwrap_or_default(),
                        value,
                        ts: r.timestamp,
                    })
                })
                .collect();
            let (mut records, mut found) = (0, Vec::new());
            for (topic, expected) in job.oracle(&input) {
                let broken = check_rows(&expected, &canonical_records(output(topic)));
                found.extend(broken.iter().map(|v| format!("{topic}: {v}")));
                records += expected.values().sum::<u64>() as usize;
            }
            if let (Some(name), Some(content)) = (job.table(), &drained.table) {
                let expected = order_pipeline::table_oracle(&input);
                let broken = check_table(&expected, &order_pipeline::found_table(content));
                found.extend(broken.iter().map(|v| format!("table {name}: {v}")));
                records += expected.len();
            }
            (records, found)
        }
    }
}

fn strings<T: ToString>(violations: Vec<T>) -> Vec<String> {
    violations.iter().map(ToString::to_string).collect()
}

/// A user job's committed output against its oracle's prediction from the committed input.
fn check_user_output(
    job: &UserJob,
    drained: &Drained,
    at_least_once: bool,
) -> (usize, Vec<String>) {
    let mut input = CommittedInput::default();
    for (topic, read) in &drained.inputs {
        let records = read.iter().flat_map(|(p, records)| {
            records.iter().filter_map(move |r| {
                let value = r.value.clone().unwrap_or_default();
                (value != END_MARKER.as_bytes()).then(|| InputRecord {
                    partition: *p,
                    offset: r.offset,
                    key: r.key.clone(),
                    value,
                    timestamp_ms: r.timestamp,
                })
            })
        });
        input.insert(topic, records.collect());
    }
    let expected = job.expected(&input);
    let mut found = Vec::new();
    for topic in &job.outputs {
        let committed = canonical_records(drained.output(topic));
        let want = expected.topics.get(topic).cloned().unwrap_or_default();
        let broken = check_rows(&want, &committed);
        let broken = broken.into_iter().filter(|v| {
            !(at_least_once && matches!(v, crate::checker::RowViolation::Duplicate { .. }))
        });
        found.extend(broken.map(|v| format!("{topic}: {v}")));
    }
    let unknown = expected.topics.keys().filter(|t| !job.outputs.contains(t));
    found.extend(
        unknown.map(|t| format!("the oracle expects records on {t}, which is not an output")),
    );
    (expected.len() as usize, found)
}

/// `records` with each JSON value in canonical form.
fn canonical_records(records: &RecordsRead) -> RecordsRead {
    let canonical_record = |r: &ConsumerRecord| ConsumerRecord {
        value: r.value.as_deref().map(|v| Bytes::from(canonical_value(v))),
        ..r.clone()
    };
    records
        .iter()
        .map(|(p, records)| (*p, records.iter().map(canonical_record).collect()))
        .collect()
}

/// `value` in [`canonical`] form if it is JSON, else as it is.
pub(crate) fn canonical_value(value: &[u8]) -> Vec<u8> {
    serde_json::from_slice::<serde_json::Value>(value)
        .map_or_else(|_| value.to_vec(), |v| canonical(&v))
}

/// Runs one seed of `pipeline`; returns its report (window checks done) and what it observed.
/// The hosts a pipeline's faults can reach: brokers, job manager, task managers, the table
/// host if the job has a table, and the clients.
pub(crate) fn topology(pipeline: &Pipeline) -> Topology {
    let servers: Vec<String> = broker_names(3)
        .into_iter()
        .chain([JOB_MANAGER.to_string()])
        .chain((0..TASK_MANAGERS).map(|i| format!("tm-{i}")))
        .chain(pipeline.job.table().map(|_| TABLE_HOST.to_string()))
        .collect();
    Topology {
        servers,
        clients: ["feeder", "observer"]
            .into_iter()
            .chain(pipeline.stop_and_resume.then_some("operator"))
            .map(String::from)
            .collect(),
    }
}

pub(crate) fn run(pipeline: &Pipeline, spec: &RunSpec) -> (RunReport, Observed) {
    let mutation = mutation(spec);
    let seed = spec.seed;
    let mut rng = rng::derive(seed, pipeline.name);
    let brokers = broker_names(3);
    let tms: Vec<String> = (0..TASK_MANAGERS).map(|i| format!("tm-{i}")).collect();
    let topo = topology(pipeline);
    let (mut plan, mix, world) = faults_and_world(
        spec,
        &mut rng,
        &topo,
        WORKLOAD_MS,
        WORKLOAD_MS + FINISH_BOUND_MS + 10_000,
    );
    // The scenario's own faults join every plan, drawn or given, so that a replay of a
    // generated plan runs what the test ran.
    if let Some(quiet) = &pipeline.quiet_ms {
        plan.faults
            .retain(|f| !quiet.contains(&f.at_ms) || f.fault.is_repair());
    }
    plan.faults.extend((pipeline.extra_faults)(&mut rng));
    plan = FaultPlan {
        faults: plan.faults,
    }
    .sorted();
    let mut env = Env::new(seed, topo, &world);
    let shared = Rc::new(Shared {
        job: pipeline.job.clone(),
        brokers: brokers.clone(),
        resume_from: RefCell::new(None),
        resume: tokio::sync::Notify::new(),
        operator_done: Cell::new(!pipeline.stop_and_resume),
        feeder_done: Cell::new(false),
        drained: RefCell::new(None),
        observed: RefCell::new(Observed::default()),
    });
    add_brokers(&mut env, &brokers, broker_config_min_isr(2));
    let built = build_job(&pipeline.job);
    // Each subtask takes a slot of its own; the task managers left when one is down must hold
    // them all.
    let subtasks: u32 = built
        .topology()
        .stages()
        .iter()
        .map(|s| s.parallelism)
        .sum();
    let slots = SLOTS.max(subtasks.div_ceil(TASK_MANAGERS as u32 - 1));
    let mut job = job_config(&built, &brokers, pipeline.exchange.clone(), mutation);
    job.model = pipeline.model;
    // Half the seeds take unaligned checkpoints, which save in-flight rows with the snapshot.
    if rng.random_bool(0.5) {
        job.checkpoint.alignment = Alignment::Unaligned;
    }
    let alignment = job.checkpoint.alignment;
    let control_limit = job.control_frame_bytes_max;
    {
        let faults = env.disk(JOB_MANAGER);
        let (rec, sh) = (Rc::clone(&env.rec), Rc::clone(&shared));
        let job = job.clone();
        env.sim.host(JOB_MANAGER, move || {
            let config = JobManagerConfig {
                listen: format!("0.0.0.0:{JOB_MANAGER_PORT}"),
                net: Net::Sim,
                job: job.clone(),
                savepoint: None,
            };
            let faults = faults.clone();
            let (rec, sh) = (Rc::clone(&rec), Rc::clone(&sh));
            let observed = Rc::clone(&sh);
            let hook = Rc::new(move |e: &JobEvent| {
                note(&rec, "job", format!("{e:?}"));
                observed.observed.borrow_mut().on_event(e);
            });
            async move {
                loop {
                    // The operator's latest command line: from a savepoint once it asked for one.
                    let config = JobManagerConfig {
                        savepoint: sh.resume_from.borrow().clone(),
                        ..config.clone()
                    };
                    let disk = Disk::sim("/jm", faults.clone());
                    tokio::select! {
                        Err(e) = run_job_manager(config, disk, Some(Rc::clone(&hook) as _)) => {
                            // Its disk failed at start (an injected fault): try again, as a
                            // supervisor would.
                            tracing::warn!(error = %e, "job manager could not start; retrying");
                            sleep_ms(500).await;
                        }
                        () = sh.resume.notified() => {}
                    }
                }
            }
        });
    }
    if pipeline.job.table().is_some() {
        let faults = env.disk(TABLE_HOST);
        env.sim.host(TABLE_HOST, move || {
            let faults = faults.clone();
            async move {
                loop {
                    let config = TableServerConfig::new(format!("0.0.0.0:{TABLE_PORT}"), Net::Sim);
                    let disk = Disk::sim("/table", faults.clone());
                    if let Err(e) = run_table_server(config, disk).await {
                        // A disk fault stopped it: start again from its log, as a supervisor
                        // would.
                        tracing::warn!(error = %e, "table host stopped; restarting");
                        sleep_ms(500).await;
                    }
                }
            }
        });
    }
    for name in &tms {
        let throttle = env.throttle(name);
        let (rec, sh) = (Rc::clone(&env.rec), Rc::clone(&shared));
        let tm = name.clone();
        let (job, built) = (job.clone(), Rc::clone(&built));
        env.sim.host(name.as_str(), move || {
            let config = TaskManagerConfig {
                name: tm.clone(),
                host: tm.clone(),
                job_manager: format!("{JOB_MANAGER}:{JOB_MANAGER_PORT}"),
                slots,
                net: Net::Sim,
                clock: Clock::starting_at(EPOCH_MS + now_ms() as i64),
                heartbeat_interval_ms: job.heartbeat_interval_ms,
                heartbeat_timeout_ms: job.heartbeat_timeout_ms,
                control_frame_bytes_max: job.control_frame_bytes_max,
                throttle: throttle.clone(),
                job: Rc::clone(&built),
                tables: sh.job.tables(),
            };
            let (rec, sh) = (Rc::clone(&rec), Rc::clone(&sh));
            let hook = Rc::new(move |_: &str, samples: &[TaskSample]| {
                sh.observed.borrow_mut().on_samples(&rec, samples);
            });
            async move {
                run_task_manager(config, Some(hook)).await;
                Ok(())
            }
        });
    }
    let (rec, sh) = (Rc::clone(&env.rec), Rc::clone(&shared));
    env.sim.client(
        "feeder",
        feeder(rec, sh, seed, (pipeline.input_gap_ms, pipeline.inputs_min)),
    );
    let (rec, sh) = (Rc::clone(&env.rec), Rc::clone(&shared));
    env.sim.client("observer", observer(rec, sh, control_limit));
    if pipeline.probe {
        // Not in the topology, so no fault reaches it.
        env.sim.client("probe", probe(Rc::clone(&shared)));
    }
    if pipeline.stop_and_resume {
        let stop_at_ms = rng.random_range(STOP_AT_MS);
        let pause_ms = rng.random_range(0..=STOPPED_FOR_MS_MAX);
        let (rec, sh) = (Rc::clone(&env.rec), Rc::clone(&shared));
        env.sim.client(
            "operator",
            operator(rec, sh, control_limit, stop_at_ms, pause_ms),
        );
    }
    let outcome = env.run(&plan, WORKLOAD_MS);
    let mut violations = Vec::new();
    let mut beyond_exactly_once = None;
    match shared.drained.borrow_mut().take() {
        Some(Ok(drained)) => {
            shared.observed.borrow_mut().inputs = drained.inputs_len();
            let (windows, found) = check_output(&pipeline.job, pipeline.at_least_once, &drained);
            shared.observed.borrow_mut().expected_records = Some(windows);
            if pipeline.at_least_once {
                let (_, strict) = check_output(&pipeline.job, false, &drained);
                let count = |kind: &str| strict.iter().filter(|v| v.starts_with(kind)).count();
                beyond_exactly_once = Some((count("duplicate"), count("wrong")));
            }
            if windows == 0 {
                violations.push("liveness: the input holds no rows".into());
            }
            violations.extend(found);
        }
        Some(Err(why)) => violations.push(format!("liveness: {why}")),
        None => violations.push("liveness: the observer never finished".into()),
    }
    let mut r = report(pipeline.name, spec, &env, (plan, mix), outcome, violations);
    let observed = std::mem::take(&mut *shared.observed.borrow_mut());
    r.metrics = observed.figures();
    r.metrics
        .insert(0, ("checkpoint alignment".into(), format!("{alignment:?}")));
    if let Some(n) = observed.expected_records {
        r.metrics.insert(
            0,
            ("output the oracle expects".into(), format!("{n} records")),
        );
    }
    if let Some((twice, miscounted)) = beyond_exactly_once {
        r.metrics.push((
            "at least once: windows beyond exactly once".into(),
            format!("{twice} emitted more than once, {miscounted} emitted once with other figures"),
        ));
    }
    (r, observed)
}
