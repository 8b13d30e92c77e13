//! Scenario `eos-pipeline`: a keyed tumbling-window count and sum, exactly-once from a broker
//! topic to a broker topic, on the distributed runtime (see [`super::pipeline`]).
//!
//! The nemesis crashes and restarts task managers, the job manager and brokers (at any moment,
//! the commit phase included), partitions them from each other, delays and holds messages and
//! fails disks. The checker reads the output under read_committed after the job finished and
//! requires every window of the input exactly once, with its count and sum.

use super::pipeline::{self, Pipeline, PipelineJob};
use crate::fault::TimedFault;
use crate::report::RunReport;
use crate::scenario::RunSpec;
use weir_engine::runtime::ExecutionModel;
use weir_engine::runtime::exchange::ExchangeConfig;
use weir_seams::rng::WeirRng;

/// The mutant every exactly-once pipeline scenario must catch.
pub(crate) const COMMIT_BEFORE_COMPLETE: (&str, &str) = (
    "commit-before-complete",
    "the exactly-once sink commits its transaction at the barrier, before the checkpoint completes",
);

/// Deliberately broken runtimes this scenario must catch.
pub const MUTANTS: &[(&str, &str)] = &[
    COMMIT_BEFORE_COMPLETE,
    (
        "offsets-after-barrier",
        "sources forward the barrier, read one more batch, and only then save their offsets",
    ),
];

pub(crate) fn no_extra_faults(_: &mut WeirRng) -> Vec<TimedFault> {
    Vec::new()
}

/// The exchange limits of the job: buffers of a few kilobytes, so that a run moves many.
pub(crate) const EXCHANGE: ExchangeConfig = ExchangeConfig {
    buffer_bytes_max: 4 * 1024,
    buffer_timeout_ms: 50,
    buffers_per_subpartition_max: 4,
    exclusive_buffers: 2,
    floating_buffers: 4,
    frame_bytes_max: 8 * 1024,
    connect_attempts_max: 50,
    connect_backoff_ms: 100,
    keepalive_interval_ms: 500,
    idle_timeout_ms: 3_000,
};

/// The pipeline, which `savepoint` runs too, with an operator.
pub(crate) const PIPELINE: Pipeline = Pipeline {
    name: "eos-pipeline",
    job: PipelineJob::OrderTotals,
    exchange: EXCHANGE,
    input_gap_ms: 10,
    inputs_min: pipeline::INPUTS_MIN,
    extra_faults: no_extra_faults,
    quiet_ms: None,
    stop_and_resume: false,
    model: ExecutionModel::Pipelined,
    probe: false,
    at_least_once: false,
};

/// Runs one seed.
pub fn run(spec: &RunSpec) -> RunReport {
    pipeline::run(&PIPELINE, spec).0
}
