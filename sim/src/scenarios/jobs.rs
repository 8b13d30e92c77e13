//! One scenario per job of the catalog ([`weir_workloads::jobs::Job`]), named after it: the
//! job on the distributed runtime, fed its generated workload (a few invalid events, disorder
//! below the job's out-of-orderness), under the faults of `eos-pipeline`.
//!
//! The checker reads the output under read_committed and requires every record the job's
//! oracle computes from the committed input exactly once, and nothing else: for a windowed job,
//! one record per key and window with the exact aggregate.

use super::eos_pipeline::{COMMIT_BEFORE_COMPLETE, EXCHANGE, no_extra_faults};
use super::pipeline::{self, Pipeline, PipelineJob};
use crate::report::RunReport;
use crate::scenario::RunSpec;
use weir_engine::runtime::ExecutionModel;
use weir_workloads::jobs::Job;
use weir_workloads::jobs::nexmark_queries::Query;
use weir_workloads::jobs::nexmark_windows::WindowQuery;

/// Deliberately broken runtimes these scenarios must catch.
pub const MUTANTS: &[(&str, &str)] = &[COMMIT_BEFORE_COMPLETE];

/// The pipeline of `job`'s scenario.
pub(crate) fn pipeline(job: Job) -> Pipeline {
    Pipeline {
        name: job.name(),
        job: PipelineJob::Catalog(job),
        exchange: EXCHANGE,
        input_gap_ms: match job {
            // q2 selects the bids of one auction in 123: five times the others' input, so that
            // every run reaches several selected auctions (ids start at 1000).
            Job::Nexmark(Query::Q2) => 2,
            // The other stateless queries are cheap: twice the others' input.
            Job::Nexmark(_) => 5,
            _ => 10,
        },
        // q2's first selected auction, 1107, opens about 3 700 events in.
        inputs_min: if job == Job::Nexmark(Query::Q2) {
            6_000
        } else {
            pipeline::INPUTS_MIN
        },
        extra_faults: no_extra_faults,
        quiet_ms: None,
        stop_and_resume: false,
        model: ExecutionModel::Pipelined,
        probe: false,
        at_least_once: false,
    }
}

fn run_job(job: Job, spec: &RunSpec) -> RunReport {
    pipeline::run(&pipeline(job), spec).0
}

/// Runs one seed of `order-aggregates`.
pub fn order_aggregates(spec: &RunSpec) -> RunReport {
    run_job(Job::OrderAggregates, spec)
}

/// Runs one seed of `order-pipeline`.
pub fn order_pipeline(spec: &RunSpec) -> RunReport {
    run_job(Job::OrderPipeline, spec)
}

/// Runs one seed of `order-sessions`.
pub fn order_sessions(spec: &RunSpec) -> RunReport {
    run_job(Job::OrderSessions, spec)
}

/// Runs one seed of `click-analytics`.
pub fn click_analytics(spec: &RunSpec) -> RunReport {
    run_job(Job::ClickAnalytics, spec)
}

/// Runs one seed of `nexmark-q0`.
pub fn nexmark_q0(spec: &RunSpec) -> RunReport {
    run_job(Job::Nexmark(Query::Q0), spec)
}

/// Runs one seed of `nexmark-q1`.
pub fn nexmark_q1(spec: &RunSpec) -> RunReport {
    run_job(Job::Nexmark(Query::Q1), spec)
}

/// Runs one seed of `nexmark-q2`.
pub fn nexmark_q2(spec: &RunSpec) -> RunReport {
    run_job(Job::Nexmark(Query::Q2), spec)
}

/// Runs one seed of `nexmark-q5`.
pub fn nexmark_q5(spec: &RunSpec) -> RunReport {
    run_job(Job::NexmarkWindows(WindowQuery::Q5), spec)
}

/// Runs one seed of `nexmark-q7`.
pub fn nexmark_q7(spec: &RunSpec) -> RunReport {
    run_job(Job::NexmarkWindows(WindowQuery::Q7), spec)
}

/// Runs one seed of `nexmark-q8`.
pub fn nexmark_q8(spec: &RunSpec) -> RunReport {
    run_job(Job::NexmarkWindows(WindowQuery::Q8), spec)
}
