//! Execution models side by side in the simulator: jobs run under each model on the same
//! seeds, once without faults and once under one fault plan per seed that every model shares.
//!
//! The cost model is the simulator's: CPU is free, so time goes to the network (1 to 5 ms per
//! message, more under latency faults), disk syncs (up to 8 ms), the models' own waits
//! (checkpoint intervals, triggers, transaction commits) and recovery. Latency is measured
//! outside the job, by a read_committed reader that no fault reaches: the time from a result's
//! event time (its window's end) to the moment the reader first sees it.

use crate::fault::FaultPlan;
use crate::scenario::RunSpec;
use crate::scenarios::pipeline::live::{self, LiveSpec};
use crate::scenarios::pipeline::{self, Pipeline, PipelineJob};
use crate::scenarios::{eos_pipeline, jobs, kafka_streams, microbatch, storm};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::path::PathBuf;
use weir_engine::runtime::ExecutionModel;
use weir_seams::rng;
use weir_workloads::jobs::Job;
use weir_workloads::jobs::nexmark_windows::WindowQuery;

/// An execution model as the comparison runs it.
pub struct Model {
    /// Short name.
    pub name: &'static str,
    /// The engine it stands for, and how it is set.
    pub stands_for: &'static str,
    /// The model's settings for a job whose bound on disorder is the argument, in ms.
    pub settings: fn(i64) -> ExecutionModel,
}

/// The models compared.
pub fn models() -> Vec<Model> {
    vec![
        Model {
            name: "pipelined",
            stands_for: "Flink: pipelined, checkpoint barriers (aligned on half the seeds, unaligned on the others), two-phase-commit sink",
            settings: |_| ExecutionModel::Pipelined,
        },
        Model {
            name: "micro-batch",
            stands_for: "Spark Structured Streaming: micro-batches, offset log, transactional sink",
            // The pipelined model's checkpoint interval: both commit equally often.
            settings: |_| ExecutionModel::MicroBatch {
                trigger_ms: microbatch::TRIGGER_MS,
                // Spark reads a backlog in one batch unless `maxOffsetsPerTrigger` is set:
                // no bound that a run of this size could reach.
                batch_offsets_max: u64::MAX,
            },
        },
        Model {
            name: "kafka-streams",
            stands_for: "Kafka Streams: consume-transform-produce, one transaction per 100 ms commit interval, windows logged to a changelog topic, a repartition topic for the keyed edge; grace equal to the bound on disorder the other models' watermarks allow",
            settings: |disorder_ms| kafka_streams::model(disorder_ms as u64),
        },
        Model {
            name: "storm",
            stands_for: "Storm: record at a time, XOR-acked tuple trees, replay after a 30 s timeout or a restart, offsets committed every second below the open trees, sinks without transactions (at least once)",
            settings: |_| storm::MODEL,
        },
    ]
}

/// Percentiles of a set of durations, in ms.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl Percentiles {
    fn of(samples: &[u64]) -> Self {
        // Three significant digits up to an hour: more than any simulated run spans.
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000, 3)
            .expect("the histogram bounds are valid");
        for s in samples {
            h.saturating_record(*s);
        }
        Self {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// The jobs compared: `order-totals` (the `eos-pipeline` job: 1-second windows, event time
/// is simulated time, so its results' latency is measured), and `order-aggregates` and
/// Nexmark q5 and q7 (windows over generated events whose event time runs far ahead of
/// simulated time, so only their correctness, recoveries and commits compare).
fn jobs() -> [(&'static str, Pipeline, bool); 4] {
    let nexmark = |q| jobs::pipeline(Job::NexmarkWindows(q));
    [
        ("order-totals", eos_pipeline::PIPELINE, true),
        (
            "order-aggregates",
            jobs::pipeline(Job::OrderAggregates),
            false,
        ),
        ("nexmark-q5", nexmark(WindowQuery::Q5), false),
        ("nexmark-q7", nexmark(WindowQuery::Q7), false),
    ]
}

/// Simulated runs per seed: every job under every model on both schedules.
pub fn runs_per_seed() -> u64 {
    (jobs().len() * models().len() * 2) as u64
}

/// What one model did on one fault schedule, over all seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelFigures {
    /// The job.
    pub job: String,
    /// The model's short name.
    pub model: String,
    /// The engine whose model it is.
    pub stands_for: String,
    /// "none" or "shared faults".
    pub schedule: String,
    /// Seeds run.
    pub seeds: u64,
    /// Seeds whose output the checker accepted.
    pub passed: u64,
    /// Input records written.
    pub inputs: u64,
    /// Input records per simulated second, from the first input to the job's end.
    pub inputs_per_s: f64,
    /// From a result's event time to a read_committed reader seeing it, for a job whose event
    /// time is simulated time.
    pub latency_ms: Option<Percentiles>,
    /// Results the reader saw more than once, over all seeds.
    pub duplicates: u64,
    /// Results the oracle expects that were never committed, over all seeds.
    pub losses: u64,
    /// Results committed that the oracle does not give: a window with other figures (rows
    /// dropped as late, or counted twice) or one without input, over all seeds.
    #[serde(default)]
    pub wrong: u64,
    /// Input rows the windows dropped as late, over all seeds.
    #[serde(default)]
    pub late_dropped: u64,
    /// From each failover to the next completed checkpoint (Kafka Streams: the next committed
    /// transaction).
    pub recovery_ms: Percentiles,
    /// Each checkpoint's (micro-batch: batch's) duration from trigger to completion; under
    /// Kafka Streams, each transaction's commit.
    pub checkpoint_ms: Percentiles,
}

impl ModelFigures {
    /// Every seed passed the exactly-once check, and no result was duplicated, lost or wrong.
    pub fn exactly_once(&self) -> bool {
        self.passed == self.seeds && self.duplicates == 0 && self.losses == 0 && self.wrong == 0
    }
}

/// The fault schedules every model runs.
#[derive(Clone, Copy)]
enum Schedule {
    /// No faults.
    Calm,
    /// The plan each seed draws for the job's topology, the same for every model.
    SharedFaults,
}

impl Schedule {
    const ALL: [Schedule; 2] = [Schedule::Calm, Schedule::SharedFaults];

    fn label(self) -> &'static str {
        match self {
            Schedule::Calm => "none",
            Schedule::SharedFaults => "shared faults",
        }
    }

    fn plan(self, p: &Pipeline, seed: u64) -> FaultPlan {
        match self {
            Schedule::Calm => FaultPlan::default(),
            Schedule::SharedFaults => {
                let mut rng = rng::derive(seed, "compare");
                FaultPlan::swarm(&mut rng, &pipeline::topology(p), pipeline::WORKLOAD_MS).0
            }
        }
    }
}

/// Runs every job under every model on `seeds` under both schedules; `progress` hears each
/// finished run.
pub fn compare(seeds: Range<u64>, progress: &dyn Fn(&str)) -> Vec<ModelFigures> {
    let mut figures = Vec::new();
    for (job, base, probe) in jobs() {
        for Model {
            name,
            stands_for,
            settings,
        } in models()
        {
            let p = Pipeline {
                name: "compare",
                model: settings(base.job.out_of_orderness_ms()),
                probe,
                ..base.clone()
            };
            for schedule in Schedule::ALL {
                let acc = run_schedule(&p, schedule, seeds.clone(), &|seed, passed| {
                    progress(&format!(
                        "{job} / {name} / seed {seed}: {}",
                        if passed { "passed" } else { "FAILED" }
                    ))
                });
                figures.push(acc.figures(
                    (job, name, stands_for),
                    schedule.label(),
                    probe,
                    seeds.end - seeds.start,
                ));
            }
        }
    }
    figures
}

/// Runs `p` on `seeds` under `schedule`.
fn run_schedule(
    p: &Pipeline,
    schedule: Schedule,
    seeds: Range<u64>,
    progress: &dyn Fn(u64, bool),
) -> Accumulated {
    let mut acc = Accumulated::default();
    for seed in seeds {
        let spec = RunSpec {
            seed,
            plan: Some(schedule.plan(p, seed)),
            mutant: None,
        };
        let (report, observed) = pipeline::run(p, &spec);
        let busy_ms = observed.finished_at_ms.unwrap_or(report.sim_ms);
        acc.add(report.passed, &report.violations, busy_ms, &observed);
        progress(seed, report.passed);
    }
    acc
}

#[derive(Default)]
struct Accumulated {
    passed: u64,
    inputs: u64,
    busy_ms: u64,
    latency: Vec<u64>,
    duplicates: u64,
    losses: u64,
    wrong: u64,
    late_dropped: u64,
    recoveries: Vec<u64>,
    checkpoints: Vec<u64>,
}

impl Accumulated {
    /// Adds one run: whether it passed, what its checker found, and how long it was busy
    /// from its first input to the job's end.
    fn add(
        &mut self,
        passed: bool,
        violations: &[String],
        busy_ms: u64,
        observed: &pipeline::Observed,
    ) {
        self.passed += u64::from(passed);
        self.inputs += observed.inputs;
        self.busy_ms += busy_ms;
        self.latency.extend(&observed.visible_after_ms);
        for v in violations {
            // A catalog job's violations name their output topic first.
            let is = |kind: &str| {
                v.starts_with(kind)
                    || v.split_once(": ")
                        .is_some_and(|(_, rest)| rest.starts_with(kind))
            };
            if is("duplicate") {
                self.duplicates += 1;
            } else if is("lost") {
                self.losses += 1;
            } else if is("wrong") || is("unexpected") {
                self.wrong += 1;
            }
        }
        self.late_dropped += observed.late_dropped();
        self.recoveries.extend(&observed.recoveries_ms);
        self.checkpoints
            .extend(observed.checkpoints.iter().map(|c| c.duration_ms));
        self.checkpoints.extend(&observed.commits_ms);
    }

    fn figures(
        &self,
        (job, model, stands_for): (&str, &str, &str),
        schedule: &str,
        latency: bool,
        seeds: u64,
    ) -> ModelFigures {
        ModelFigures {
            job: job.into(),
            model: model.into(),
            stands_for: stands_for.into(),
            schedule: schedule.into(),
            seeds,
            passed: self.passed,
            inputs: self.inputs,
            inputs_per_s: self.inputs as f64 * 1_000.0 / self.busy_ms.max(1) as f64,
            latency_ms: latency.then(|| Percentiles::of(&self.latency)),
            duplicates: self.duplicates,
            losses: self.losses,
            wrong: self.wrong,
            late_dropped: self.late_dropped,
            recovery_ms: Percentiles::of(&self.recoveries),
            checkpoint_ms: Percentiles::of(&self.checkpoints),
        }
    }
}

/// The comparison on this machine: jobs under every model, on real sockets, files and
/// processes (see [`live`]).
#[derive(Clone, Debug)]
pub struct LiveComparison {
    /// A `weir` binary, which serves the broker.
    pub weir: PathBuf,
    /// Scratch directory; each run takes a fresh one under it and removes it after.
    pub dir: PathBuf,
    /// The jobs, by name: `order-totals` or a catalog job without a table.
    pub jobs: Vec<String>,
    /// Only the models with these names; all when empty.
    pub models: Vec<String>,
    /// Inputs per second of the paced runs; the backlog holds as many as they feed.
    pub inputs_per_s: u32,
    /// Length of a paced feed, in milliseconds.
    pub feed_ms: u64,
    /// Runs of each model on each schedule.
    pub rounds: u64,
    /// Seed of the feeder.
    pub seed: u64,
}

/// The schedules on this machine, by label: paced input without and with the shared faults,
/// then a backlog read as fast as the model goes.
const LIVE_SCHEDULES: [(&str, bool, bool); 3] = [
    ("none", false, false),
    ("shared faults", true, false),
    ("backlog", false, true),
];

/// The job a live comparison runs by `name`: `order-totals`, or a catalog job that has a
/// generated workload and no table.
fn live_job(name: &str) -> Result<PipelineJob, String> {
    if name == "order-totals" {
        return Ok(PipelineJob::OrderTotals);
    }
    match Job::named(name) {
        Some(job) if job.table().is_none() => Ok(PipelineJob::Catalog(job)),
        Some(_) => Err(format!(
            "{name} writes a table, which the live comparison does not check"
        )),
        None => Err(format!("no job {name:?}")),
    }
}

/// Runs every job of `c.jobs` under every model (of `c.models`) on this machine on each
/// schedule; `progress` hears each finished run.
pub fn compare_live(
    c: &LiveComparison,
    progress: &dyn Fn(&str),
) -> Result<Vec<ModelFigures>, String> {
    let chosen: Vec<Model> = models()
        .into_iter()
        .filter(|m| c.models.is_empty() || c.models.iter().any(|n| n == m.name))
        .collect();
    if chosen.is_empty() {
        return Err(format!("no model is called any of {:?}", c.models));
    }
    let jobs = c
        .jobs
        .iter()
        .map(|name| live_job(name).map(|job| (name.as_str(), job)))
        .collect::<Result<Vec<_>, String>>()?;
    let mut figures = Vec::new();
    for (name, job) in jobs {
        for m in &chosen {
            for (label, faults, backlog) in LIVE_SCHEDULES {
                let acc = live_schedule(
                    c,
                    (name, job.clone()),
                    m,
                    (faults, backlog),
                    &|round, line| {
                        progress(&format!(
                            "{name} / {} / {label} / round {round}: {line}",
                            m.name
                        ))
                    },
                )?;
                let latency = matches!(job, PipelineJob::OrderTotals) && !backlog;
                figures.push(acc.figures((name, m.name, m.stands_for), label, latency, c.rounds));
            }
        }
    }
    Ok(figures)
}

/// Runs `job` under `m` on one schedule (faults, backlog), `c.rounds` times.
fn live_schedule(
    c: &LiveComparison,
    (name, job): (&str, PipelineJob),
    m: &Model,
    (faults, backlog): (bool, bool),
    progress: &dyn Fn(u64, String),
) -> Result<Accumulated, String> {
    let mut acc = Accumulated::default();
    for round in 0..c.rounds {
        let spec = LiveSpec {
            weir: c.weir.clone(),
            dir: c.dir.join(format!(
                "{name}-{}-{}-{}-{round}",
                m.name,
                u8::from(faults),
                u8::from(backlog)
            )),
            model: (m.settings)(job.out_of_orderness_ms()),
            job: job.clone(),
            inputs_per_s: c.inputs_per_s,
            feed_ms: c.feed_ms,
            backlog,
            faults,
            seed: c.seed + round,
            finish_bound_ms: 120_000,
        };
        let run = live::run(&spec)?;
        let _ = std::fs::remove_dir_all(&spec.dir);
        let o = &run.observed;
        let busy_ms = o.finished_at_ms.map_or(0, |end| end - run.job_started_ms);
        let passed = run.violations.is_empty();
        acc.add(passed, &run.violations, busy_ms, o);
        let struck: Vec<String> = run
            .faults
            .iter()
            .map(|(at, what)| format!("{what} at {at} ms"))
            .collect();
        progress(
            round,
            format!(
                "{}{}{}",
                if passed { "passed" } else { "FAILED" },
                run.violations
                    .first()
                    .map_or(String::new(), |v| format!(" ({v})")),
                if struck.is_empty() {
                    String::new()
                } else {
                    format!("; {}", struck.join(", "))
                }
            ),
        );
    }
    Ok(acc)
}
