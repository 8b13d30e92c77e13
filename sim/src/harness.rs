//! The harness a user's own `cargo test` runs their job under: [`JobTest`] feeds generated
//! input to a simulated cluster (three brokers, a job manager, three task managers), runs the
//! user's job on the distributed runtime through crashes, partitions, pauses and disk faults,
//! reads the committed output under read_committed, and compares it with the user's oracle.
//!
//! ```no_run
//! # use weir_sim::harness::{JobTest, TestRecord, Expected};
//! # fn build(s: &weir_sim::harness::TestSettings) -> Result<weir_engine::Job, String> { todo!() }
//! JobTest::new("my-job", build)
//!     .input("payments", |rng| vec![TestRecord::new("card-1", "12.50", 1_000)])
//!     .output("alerts")
//!     .oracle(|input| Expected::new())
//!     .seeds(20)
//!     .run();
//! ```
//!
//! Every seed runs under its own swarm fault mix. The first seed runs twice, and the two trace
//! hashes must agree. A failing seed's fault plan is shrunk to the fewest faults that still
//! fail it; the test then fails with the seed, the violations, the shrunk plan and a one-line
//! command that replays exactly that run.

use crate::env::EPOCH_MS;
use crate::fault::FaultPlan;
use crate::report::RunReport;
use crate::scenario::RunSpec;
use crate::scenarios::eos_pipeline::{EXCHANGE, no_extra_faults};
use crate::scenarios::pipeline::{self, Pipeline, PipelineJob};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use weir_engine::Job;
use weir_engine::runtime::ExecutionModel;
use weir_seams::rng::WeirRng;
use weir_workloads::jobs::ExpectedRecords;

/// When a run's clock starts, in ms since the Unix epoch: generated event times near it keep
/// processing time and event time together.
pub const START_MS: i64 = EPOCH_MS;

/// The value the feeder writes on every partition of every input topic once the input is
/// written; a job built for a test reads each partition up to it
/// ([`weir_engine::KafkaSource::bounded_by_marker`]).
pub const END_MARKER: &str = pipeline::END_MARKER;

/// When every injected fault heals, in simulated ms from the start of a run.
pub const HEAL_MS: u64 = pipeline::WORKLOAD_MS;

/// Records the feeder writes at most per run.
pub const INPUT_RECORDS_MAX: usize = 20_000;

/// Runs the harness tries while it shrinks a failing fault plan.
const SHRINK_RUNS_MAX: usize = 40;

/// Where failing runs are written for replay, under the target directory.
const FAILURES_DIR: &str = "weir-failures";

/// What the harness tells the job it builds.
#[derive(Clone, Debug)]
pub struct TestSettings {
    /// The marker that ends every input partition.
    pub end_marker: String,
    /// Subtasks per operator: the cluster has six slots.
    pub parallelism: u32,
}

/// One record a generator writes to an input topic, keyed as the producer partitions it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRecord {
    /// The record key; the partitioner hashes it.
    pub key: Option<Bytes>,
    /// The value.
    pub value: Bytes,
    /// The record timestamp (event time, for a job that reads it as such), in ms.
    pub timestamp_ms: i64,
}

impl TestRecord {
    /// A keyed record.
    pub fn new(key: impl Into<Bytes>, value: impl Into<Bytes>, timestamp_ms: i64) -> Self {
        TestRecord {
            key: Some(key.into()),
            value: value.into(),
            timestamp_ms,
        }
    }

    /// A keyed record whose value is `value` as JSON.
    pub fn json(key: impl Into<Bytes>, value: &impl Serialize, timestamp_ms: i64) -> Self {
        let value = serde_json::to_vec(value).expect("test records serialize");
        Self::new(key, value, timestamp_ms)
    }
}

/// One committed input record, as the oracle reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputRecord {
    /// The partition it was written to.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// The key.
    pub key: Option<Bytes>,
    /// The value.
    pub value: Bytes,
    /// The record timestamp, in ms.
    pub timestamp_ms: i64,
}

/// The committed input of a run, as the oracle reads it: per topic, each partition's records in
/// offset order, partitions in ascending order, end markers left out.
#[derive(Clone, Debug, Default)]
pub struct CommittedInput {
    topics: BTreeMap<String, Vec<InputRecord>>,
}

impl CommittedInput {
    /// The records of `topic` (empty if it is not an input).
    pub fn topic(&self, topic: &str) -> &[InputRecord] {
        self.topics.get(topic).map_or(&[], Vec::as_slice)
    }

    /// Records over every topic.
    pub fn len(&self) -> usize {
        self.topics.values().map(Vec::len).sum()
    }

    /// No input was committed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn insert(&mut self, topic: &str, records: Vec<InputRecord>) {
        self.topics.insert(topic.to_string(), records);
    }
}

/// The output the oracle expects: per output topic, each (key, value) record and how many
/// times it must be committed. JSON values are compared in a canonical form (sorted keys), so
/// field order does not matter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    pub(crate) topics: BTreeMap<String, ExpectedRecords>,
}

impl Expected {
    /// Nothing expected yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// One more record `(key, value)` expected on `topic`.
    pub fn record(&mut self, topic: &str, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let value = pipeline::canonical_value(value.as_ref());
        *self
            .topics
            .entry(topic.to_string())
            .or_default()
            .entry((key.as_ref().to_vec(), value))
            .or_default() += 1;
    }

    /// One more record expected on `topic`, with `value` as JSON.
    pub fn json(&mut self, topic: &str, key: impl AsRef<[u8]>, value: &impl Serialize) {
        let value = serde_json::to_vec(value).expect("expected records serialize");
        self.record(topic, key, value);
    }

    /// Records expected over every topic.
    pub fn len(&self) -> u64 {
        self.topics.values().flat_map(BTreeMap::values).sum()
    }

    /// No record is expected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

type Builder = dyn Fn(&TestSettings) -> Result<Job, String> + Send + Sync;
type Generator = dyn Fn(&mut WeirRng) -> Vec<TestRecord> + Send + Sync;
type Oracle = dyn Fn(&CommittedInput) -> Expected + Send + Sync;

/// A user's job as a pipeline scenario runs it.
pub(crate) struct UserJob {
    pub name: String,
    build: Arc<Builder>,
    /// Input topics with their generators, in the order the feeder interleaves them.
    inputs: Vec<(String, Arc<Generator>)>,
    pub outputs: Vec<String>,
    oracle: Arc<Oracle>,
}

impl std::fmt::Debug for UserJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserJob")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl UserJob {
    /// The input topics.
    pub fn input_topics(&self) -> impl Iterator<Item = &str> {
        self.inputs.iter().map(|(t, _)| t.as_str())
    }

    /// Builds the job for a run.
    pub fn build(&self, settings: &TestSettings) -> Result<Job, String> {
        (self.build)(settings)
    }

    /// The run's input: the topics' generated records merged by timestamp, each generator's
    /// own order kept (so its disorder stays), at most [`INPUT_RECORDS_MAX`].
    pub fn generate(&self, rng: &mut WeirRng) -> Vec<(String, TestRecord)> {
        let mut topics: Vec<(&str, std::iter::Peekable<std::vec::IntoIter<TestRecord>>)> = self
            .inputs
            .iter()
            .map(|(topic, generate)| (topic.as_str(), generate(rng).into_iter().peekable()))
            .collect();
        let mut merged = Vec::new();
        while merged.len() < INPUT_RECORDS_MAX {
            // The first topic whose next record is earliest.
            let next = topics
                .iter_mut()
                .filter_map(|(t, records)| Some((records.peek()?.timestamp_ms, t, records)))
                .min_by_key(|(ts, _, _)| *ts);
            let Some((_, topic, records)) = next else {
                break;
            };
            let topic = topic.to_string();
            merged.extend(records.next().map(|r| (topic, r)));
        }
        merged
    }

    /// What the oracle expects of `input`.
    pub fn expected(&self, input: &CommittedInput) -> Expected {
        (self.oracle)(input)
    }
}

/// A test of a user's job under faults: see the [module docs](self).
pub struct JobTest {
    name: String,
    build: Arc<Builder>,
    inputs: Vec<(String, Arc<Generator>)>,
    outputs: Vec<String>,
    oracle: Option<Arc<Oracle>>,
    seeds: u64,
    first_seed: u64,
    faults: bool,
    plans: Option<Arc<PlanDistribution>>,
    model: ExecutionModel,
    input_gap_ms: u64,
}

/// Draws a run's fault plan from its own RNG (see [`JobTest::fault_plans`]).
pub type PlanDistribution = dyn Fn(&mut WeirRng) -> FaultPlan + Send + Sync;

/// The label of the RNG a [`PlanDistribution`] draws from, derived from the run's seed.
const PLAN_RNG_LABEL: &str = "user-fault-plan";

impl JobTest {
    /// A test named `name` (it names the run's scenario in reports) of the job `build` makes.
    pub fn new(
        name: &str,
        build: impl Fn(&TestSettings) -> Result<Job, String> + Send + Sync + 'static,
    ) -> Self {
        JobTest {
            name: name.to_string(),
            build: Arc::new(build),
            inputs: Vec::new(),
            outputs: Vec::new(),
            oracle: None,
            seeds: 10,
            first_seed: 0,
            faults: true,
            plans: None,
            model: ExecutionModel::Pipelined,
            input_gap_ms: 10,
        }
    }

    /// An input topic (four partitions) and the generator of its records, given the run's RNG.
    pub fn input(
        mut self,
        topic: &str,
        generate: impl Fn(&mut WeirRng) -> Vec<TestRecord> + Send + Sync + 'static,
    ) -> Self {
        self.inputs.push((topic.to_string(), Arc::new(generate)));
        self
    }

    /// An output topic (two partitions) the job writes and the oracle predicts.
    pub fn output(mut self, topic: &str) -> Self {
        self.outputs.push(topic.to_string());
        self
    }

    /// The oracle: a plain function from the committed input to the expected output.
    pub fn oracle(
        mut self,
        oracle: impl Fn(&CommittedInput) -> Expected + Send + Sync + 'static,
    ) -> Self {
        self.oracle = Some(Arc::new(oracle));
        self
    }

    /// Seeds to run by default; the `WEIR_SEEDS` environment variable overrides it.
    pub fn seeds(mut self, seeds: u64) -> Self {
        self.seeds = seeds;
        self
    }

    /// The first seed of the range (`WEIR_FIRST_SEED` overrides it).
    pub fn first_seed(mut self, seed: u64) -> Self {
        self.first_seed = seed;
        self
    }

    /// Runs without injected faults: a baseline that checks the oracle itself.
    pub fn without_faults(mut self) -> Self {
        self.faults = false;
        self
    }

    /// Draws each seed's fault plan from `plans` instead of the scenarios' swarm mix. Nodes are
    /// `broker-0`..`broker-2`, `jm` and `tm-0`..`tm-2`; faults apply until [`HEAL_MS`], when
    /// every fault heals and the job must finish.
    pub fn fault_plans(
        mut self,
        plans: impl Fn(&mut WeirRng) -> FaultPlan + Send + Sync + 'static,
    ) -> Self {
        self.plans = Some(Arc::new(plans));
        self
    }

    /// The execution model the runtime uses (pipelined by default).
    pub fn model(mut self, model: ExecutionModel) -> Self {
        self.model = model;
        self
    }

    /// The mean gap between two input records, in simulated ms (10 by default).
    pub fn input_gap_ms(mut self, gap_ms: u64) -> Self {
        assert!(gap_ms > 0, "the feeder needs a positive gap");
        self.input_gap_ms = gap_ms;
        self
    }

    fn pipeline(&self) -> Pipeline {
        let oracle = Arc::clone(self.oracle.as_ref().expect("a JobTest needs an oracle"));
        assert!(!self.inputs.is_empty(), "a JobTest needs an input");
        assert!(!self.outputs.is_empty(), "a JobTest needs an output");
        let job = UserJob {
            name: self.name.clone(),
            build: Arc::clone(&self.build),
            inputs: self.inputs.clone(),
            outputs: self.outputs.clone(),
            oracle,
        };
        Pipeline {
            name: "user-job",
            job: PipelineJob::User(Arc::new(job)),
            exchange: EXCHANGE,
            input_gap_ms: self.input_gap_ms,
            inputs_min: 0,
            extra_faults: no_extra_faults,
            quiet_ms: None,
            stop_and_resume: false,
            model: self.model,
            probe: false,
            at_least_once: matches!(self.model, ExecutionModel::Storm { .. }),
        }
    }

    /// Runs one seed, with `plan` instead of the seed's own draw if given.
    pub fn run_seed(&self, seed: u64, plan: Option<FaultPlan>) -> RunReport {
        self.run_counted(seed, plan).0
    }

    /// [`JobTest::run_seed`], with the output records the oracle expected.
    fn run_counted(&self, seed: u64, plan: Option<FaultPlan>) -> (RunReport, usize) {
        let plan = plan.or_else(|| match &self.plans {
            _ if !self.faults => Some(FaultPlan::default()),
            Some(draw) => Some(draw(&mut weir_seams::rng::derive(seed, PLAN_RNG_LABEL))),
            None => None,
        });
        let spec = RunSpec {
            seed,
            plan,
            mutant: None,
        };
        let (mut report, observed) = pipeline::run(&self.pipeline(), &spec);
        report.scenario.clone_from(&self.name);
        report.replay = replay_command(&failure_path(&self.name, seed));
        (report, observed.expected_records.unwrap_or(0))
    }

    /// Runs every seed (or the one run `WEIR_REPLAY` names); panics with the seed, the shrunk
    /// fault plan and the replay command of the first failure.
    pub fn run(&self) -> Passed {
        match self.check() {
            Ok(passed) => {
                eprintln!("{}: {passed}", self.name);
                passed
            }
            Err(failed) => panic!("{failed}"),
        }
    }

    /// Runs every seed, two at a time, until one fails: that seed's plan is shrunk and saved
    /// for replay. With `WEIR_REPLAY` set, runs that saved run alone instead.
    pub fn check(&self) -> Result<Passed, Box<Failed>> {
        if let Ok(path) = std::env::var("WEIR_REPLAY") {
            return self.replay(&PathBuf::from(path));
        }
        let first = env_u64("WEIR_FIRST_SEED", self.first_seed);
        let n = env_u64("WEIR_SEEDS", self.seeds).max(1);
        let a = self.run_counted(first, None);
        let b = self.run_seed(first, None);
        assert_eq!(
            (&a.0.trace_hash, &a.0.violations),
            (&b.trace_hash, &b.violations),
            "{}: seed {first} ran twice with different traces: the job is not deterministic (a HashMap's order, a thread, the OS clock or RNG?)",
            self.name
        );
        let mut passed = Passed {
            first_seed: first,
            ..Passed::default()
        };
        let mut next = vec![a];
        let mut seed = first + 1;
        loop {
            for (r, expected) in &next {
                if !r.passed {
                    return Err(Box::new(self.failed(r)));
                }
                passed.seeds += 1;
                passed.expected_records += expected;
                passed.faults += r.plan.faults.len();
            }
            if seed >= first + n {
                return Ok(passed);
            }
            let until = (seed + 2).min(first + n);
            next = sweep(self, seed..until);
            seed = until;
        }
    }

    /// Shrinks the failing run's plan and saves the run for replay.
    fn failed(&self, failed: &RunReport) -> Failed {
        let plan = self.shrink(failed.seed, failed.plan.clone());
        let rerun = self.run_seed(failed.seed, Some(plan.clone()));
        let (plan, violations) = if rerun.passed {
            (failed.plan.clone(), failed.violations.clone())
        } else {
            (plan, rerun.violations)
        };
        let path = failure_path(&self.name, failed.seed);
        let saved = Saved {
            seed: failed.seed,
            plan: plan.clone(),
        };
        let written = std::fs::create_dir_all(path.parent().expect("a directory"))
            .and_then(|()| std::fs::write(&path, serde_json::to_vec_pretty(&saved)?));
        let replay = match written {
            Ok(()) => replay_command(&path),
            Err(e) => format!("(could not write {}: {e})", path.display()),
        };
        Failed {
            test: self.name.clone(),
            seed: failed.seed,
            violations,
            shrunk_from: failed.plan.faults.len(),
            plan,
            replay,
        }
    }

    /// The smallest plan found, by removing faults one at a time, under which `seed` still
    /// fails (at most [`SHRINK_RUNS_MAX`] runs).
    fn shrink(&self, seed: u64, mut plan: FaultPlan) -> FaultPlan {
        let mut runs = 0;
        let mut i = plan.faults.len();
        while i > 0 && runs < SHRINK_RUNS_MAX {
            i -= 1;
            let mut fewer = plan.clone();
            fewer.faults.remove(i);
            runs += 1;
            if !self.run_seed(seed, Some(fewer.clone())).passed {
                plan = fewer;
            }
        }
        plan
    }

    /// Runs the saved run at `path`, printing its timeline.
    fn replay(&self, path: &PathBuf) -> Result<Passed, Box<Failed>> {
        let text =
            std::fs::read(path).unwrap_or_else(|e| panic!("WEIR_REPLAY={}: {e}", path.display()));
        let saved: Saved = serde_json::from_slice(&text)
            .unwrap_or_else(|e| panic!("WEIR_REPLAY={}: not a saved run: {e}", path.display()));
        let (r, expected) = self.run_counted(saved.seed, Some(saved.plan.clone()));
        for e in &r.trace {
            eprintln!("{:>8} ms  {:<12} {}", e.at_ms, e.source, e.what);
        }
        eprintln!("trace hash {}", r.trace_hash);
        if !r.passed {
            return Err(Box::new(Failed {
                test: self.name.clone(),
                seed: r.seed,
                violations: r.violations.clone(),
                shrunk_from: saved.plan.faults.len(),
                plan: saved.plan,
                replay: replay_command(path),
            }));
        }
        Ok(Passed {
            first_seed: r.seed,
            seeds: 1,
            expected_records: expected,
            faults: r.plan.faults.len(),
        })
    }
}

/// What a passing [`JobTest`] ran.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Passed {
    /// The first seed.
    pub first_seed: u64,
    /// Seeds that passed.
    pub seeds: u64,
    /// Output records the oracle expected, summed over the seeds.
    pub expected_records: usize,
    /// Faults injected, summed over the seeds.
    pub faults: usize,
}

impl std::fmt::Display for Passed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} seeds from {} passed, {} expected records checked, {} faults injected",
            self.seeds, self.first_seed, self.expected_records, self.faults
        )
    }
}

/// The first failing seed of a [`JobTest`], with its shrunk plan and how to replay it.
#[derive(Clone, Debug)]
pub struct Failed {
    /// The test's name.
    pub test: String,
    /// The seed.
    pub seed: u64,
    /// What the checker found under the shrunk plan.
    pub violations: Vec<String>,
    /// The shrunk fault plan.
    pub plan: FaultPlan,
    /// Faults the seed's own plan had.
    pub shrunk_from: usize,
    /// The command that replays the run.
    pub replay: String,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}: seed {} failed", self.test, self.seed)?;
        for v in self.violations.iter().take(10) {
            writeln!(f, "  {v}")?;
        }
        let json = serde_json::to_string(&self.plan).map_err(|_| std::fmt::Error)?;
        writeln!(
            f,
            "fault plan ({} faults, shrunk from {}): {json}",
            self.plan.faults.len(),
            self.shrunk_from
        )?;
        write!(f, "replay: {}", self.replay)
    }
}

/// A failing run, as written for `WEIR_REPLAY`.
#[derive(Serialize, Deserialize)]
struct Saved {
    seed: u64,
    plan: FaultPlan,
}

/// Runs `seeds` on two threads, each seed its own simulation; reports (with the records the
/// oracle expected) in seed order.
fn sweep(test: &JobTest, seeds: std::ops::Range<u64>) -> Vec<(RunReport, usize)> {
    let seeds: Vec<u64> = seeds.collect();
    if seeds.is_empty() {
        return Vec::new();
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = seeds
            .chunks(seeds.len().div_ceil(2))
            .map(|chunk| {
                s.spawn(move || {
                    let runs = chunk.iter().map(|&seed| test.run_counted(seed, None));
                    runs.collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a seed's run does not panic"))
            .collect()
    })
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Where a failing seed of test `name` is written: the target directory when cargo runs the
/// test, else the system's temporary directory.
fn failure_path(name: &str, seed: u64) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            // target/<profile>/deps/<test binary>
            Some(exe.parent()?.parent()?.parent()?.to_path_buf())
        })
        .unwrap_or_else(std::env::temp_dir);
    target
        .join(FAILURES_DIR)
        .join(format!("{name}-seed-{seed}.json"))
}

/// The command that replays the run saved at `path`: this test alone, of this package.
fn replay_command(path: &std::path::Path) -> String {
    let package = std::env::var("CARGO_PKG_NAME").unwrap_or_else(|_| "<package>".into());
    let test = std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .map(|n| format!(" {n} -- --exact"))
        .unwrap_or_default();
    format!(
        "WEIR_REPLAY={} cargo test -p {package}{test}",
        path.display()
    )
}
