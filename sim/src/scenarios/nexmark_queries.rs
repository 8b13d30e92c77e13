//! Scenarios `nexmark-q0` and `nexmark-q1`: two of Nexmark's stateless queries
//! ([`weir_workloads::jobs::nexmark_queries`]) on the distributed runtime, fed generated Nexmark
//! events (2% invalid), under the faults of `eos-pipeline`.
//!
//! Each job is one chained task per subtask: source, query, two-phase-commit sink. The checker
//! reads the output under read_committed and requires every record the query's oracle makes of
//! the input exactly once, and nothing else.
//!
//! q2 has no scenario: it keeps the bids of one auction in 123, and a run's few thousand events
//! reach only about 90 auctions, none of them selected.

use super::eos_pipeline::{COMMIT_BEFORE_COMPLETE, EXCHANGE, no_extra_faults};
use super::pipeline::{self, Pipeline, PipelineJob};
use crate::report::RunReport;
use crate::scenario::RunSpec;
use weir_workloads::jobs::nexmark_queries::Query;

/// Deliberately broken runtimes these scenarios must catch.
pub const MUTANTS: &[(&str, &str)] = &[COMMIT_BEFORE_COMPLETE];

fn run_query(name: &'static str, query: Query, spec: &RunSpec) -> RunReport {
    let pipeline = Pipeline {
        name,
        job: PipelineJob::Nexmark(query),
        exchange: EXCHANGE,
        // Twice the order pipelines' input: the queries are cheap.
        input_gap_ms: 5,
        extra_faults: no_extra_faults,
        quiet_ms: None,
        stop_and_resume: false,
    };
    pipeline::run(&pipeline, spec).0
}

/// Runs one seed of `nexmark-q0`.
pub fn run_q0(spec: &RunSpec) -> RunReport {
    run_query("nexmark-q0", Query::Q0, spec)
}

/// Runs one seed of `nexmark-q1`.
pub fn run_q1(spec: &RunSpec) -> RunReport {
    run_query("nexmark-q1", Query::Q1, spec)
}
