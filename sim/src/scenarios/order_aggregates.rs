//! Scenario `order-aggregates`: the [`weir_workloads::jobs::order_aggregates`] job on the
//! distributed runtime, fed generated orders, under the faults of `eos-pipeline`.
//!
//! The orders come from the orders generator (skewed customers, a few invalid events, event
//! time about two seconds an event, so that a run spans many 5-minute windows). The checker
//! reads the output under read_committed and requires, for every customer and window, exactly
//! one record with the count and total that the job's oracle computes from the input.

use super::eos_pipeline::{COMMIT_BEFORE_COMPLETE, EXCHANGE, no_extra_faults};
use super::pipeline::{self, Pipeline, PipelineJob};
use crate::report::RunReport;
use crate::scenario::RunSpec;

/// Deliberately broken runtimes this scenario must catch.
pub const MUTANTS: &[(&str, &str)] = &[COMMIT_BEFORE_COMPLETE];

const PIPELINE: Pipeline = Pipeline {
    name: "order-aggregates",
    job: PipelineJob::OrderAggregates,
    exchange: EXCHANGE,
    input_gap_ms: 10,
    extra_faults: no_extra_faults,
    quiet_ms: None,
    stop_and_resume: false,
};

/// Runs one seed.
pub fn run(spec: &RunSpec) -> RunReport {
    pipeline::run(&PIPELINE, spec).0
}
