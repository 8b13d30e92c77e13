//! Scenario `backpressure`: the pipeline of [`super::pipeline`] with its downstream stage (the
//! window and sink subtasks) slowed for a long stretch, each row costing milliseconds, amid the
//! usual faults before and after.
//!
//! The sources are not slowed. While the window subtasks are slow, their credit runs out, the
//! sources wait on their output, and the input piles up in the broker as consumer lag instead
//! of in the job's memory. The checker requires that no task ever held more exchange buffers
//! than the job's settings allow, that a source's output waited for at least a second (the
//! backpressure reached it), that the sources' lag grew during the slowdown and was gone at the
//! end, and, as in `eos-pipeline`, that the committed output holds every window exactly once.

use super::pipeline::{self, Pipeline, PipelineJob};
use crate::fault::{BASE_LATENCY_MAX_MS, Fault, TimedFault};
use crate::report::RunReport;
use crate::scenario::RunSpec;
use rand::Rng;
use weir_engine::runtime::ExecutionModel;
use weir_engine::runtime::exchange::ExchangeConfig;
use weir_seams::rng::WeirRng;

/// Deliberately broken runtimes this scenario must catch.
pub const MUTANTS: &[(&str, &str)] = &[(
    "unbounded-buffers",
    "result partitions queue without limit instead of waiting for buffers that credit frees",
)];

/// The slowdown: from this time, in simulated milliseconds...
const SLOW_FROM_MS: u64 = 3_000;
/// ...for this long.
const SLOW_FOR_MS: u64 = 10_000;
/// After the slowdown, the job has this long without other faults to catch up.
const CATCH_UP_MS: u64 = 3_000;
/// Source lag the slowdown must build up, in records: well above what the exchange buffers of
/// this job can hold, so that it can only be waiting in the broker.
const LAG_MIN_RECORDS: u64 = 100;
/// Lag at or below this, in records, counts as caught up: the few records written between a
/// source's read and the probe's look at the partition's end.
const LAG_CAUGHT_UP_RECORDS: u64 = 20;
/// The least time, in milliseconds, some task's output must have waited for credit: the
/// slowdown lasts ten seconds, and only backpressure slows the sources.
const BACKPRESSURE_MIN_MS: u64 = 1_000;

/// Slows the downstream tasks of every task manager. Faults that would strike during the
/// slowdown or the catch-up after it are dropped (`quiet_ms`), and everything is healed when
/// the slowdown starts (crashed servers restarted, disk errors ended, the network healed, its
/// latency restored), so that the slowdown alone decides what happens then. A latency raised
/// before it would otherwise cap the exchange's throughput below the input rate for good, and
/// a broker crashed for good before it (a generated plan found one) would keep the input out.
fn slowdown(rng: &mut WeirRng) -> Vec<TimedFault> {
    let row_delay_us = rng.random_range(30_000..=60_000);
    let servers = pipeline::topology(&PIPELINE).servers;
    let repairs = servers.into_iter().flat_map(|node| {
        [
            Fault::Restart { node: node.clone() },
            Fault::DiskErrors { node, on: false },
        ]
    });
    let calm = repairs
        .chain([
            Fault::HealNetwork,
            Fault::Latency {
                max_ms: BASE_LATENCY_MAX_MS,
            },
        ])
        .map(|fault| TimedFault {
            at_ms: SLOW_FROM_MS,
            fault,
        });
    calm.chain((0..3).flat_map(|i| {
        let node = format!("tm-{i}");
        [
            TimedFault {
                at_ms: SLOW_FROM_MS,
                fault: Fault::Slow {
                    node: node.clone(),
                    row_delay_us,
                },
            },
            TimedFault {
                at_ms: SLOW_FROM_MS + SLOW_FOR_MS,
                fault: Fault::Slow {
                    node,
                    row_delay_us: 0,
                },
            },
        ]
    }))
    .collect()
}

const PIPELINE: Pipeline = Pipeline {
    name: "backpressure",
    job: PipelineJob::OrderTotals,
    // Small buffers, flushed often: a few dozen rows fill the job's whole exchange.
    exchange: ExchangeConfig {
        buffer_bytes_max: 256,
        buffer_timeout_ms: 20,
        buffers_per_subpartition_max: 2,
        exclusive_buffers: 2,
        floating_buffers: 2,
        frame_bytes_max: 1024,
        connect_attempts_max: 50,
        connect_backoff_ms: 100,
        keepalive_interval_ms: 500,
        idle_timeout_ms: 3_000,
    },
    input_gap_ms: 10,
    inputs_min: pipeline::INPUTS_MIN,
    extra_faults: slowdown,
    quiet_ms: Some(SLOW_FROM_MS..SLOW_FROM_MS + SLOW_FOR_MS + CATCH_UP_MS),
    stop_and_resume: false,
    model: ExecutionModel::Pipelined,
    probe: false,
    at_least_once: false,
};

/// Runs one seed.
pub fn run(spec: &RunSpec) -> RunReport {
    let slow = SLOW_FROM_MS..SLOW_FROM_MS + SLOW_FOR_MS;
    let catch_up = slow.end..slow.end + CATCH_UP_MS;
    let (mut r, observed) = pipeline::run(&PIPELINE, spec);
    for (at, task, held, bound) in observed.buffer_breaches.iter().take(5) {
        r.violations.push(format!(
            "unbounded: at {at} ms task {task} had held {held} exchange buffers; its bound is {bound}"
        ));
    }
    let during = observed
        .lag
        .iter()
        .filter(|(t, _)| slow.contains(t))
        .map(|(_, l)| *l)
        .max()
        .unwrap_or(0);
    if during < LAG_MIN_RECORDS {
        r.violations.push(format!(
            "backpressure: source lag reached only {during} records during the slowdown (expected at least {LAG_MIN_RECORDS}); the backlog is not waiting in the broker"
        ));
    }
    let blocked = observed.backpressure_max_ms();
    if blocked < BACKPRESSURE_MIN_MS {
        r.violations.push(format!(
            "backpressure: no task's output waited more than {blocked} ms (expected at least {BACKPRESSURE_MIN_MS}); the slowdown did not reach the sources through credit"
        ));
    }
    let caught_up = observed
        .lag
        .iter()
        .any(|(t, l)| catch_up.contains(t) && *l <= LAG_CAUGHT_UP_RECORDS);
    if !caught_up {
        r.violations.push(format!(
            "backpressure: the sources' lag did not fall back to {LAG_CAUGHT_UP_RECORDS} records within {CATCH_UP_MS} ms of the slowdown's end"
        ));
    }
    r.passed = r.violations.is_empty();
    r
}
