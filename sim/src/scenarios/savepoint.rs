//! Scenario `savepoint`: the `eos-pipeline` job, stopped by an operator with a savepoint in the
//! middle of its input and started again from that savepoint, amid the same faults.
//!
//! The stop commits the savepoint's output before the subtasks are cancelled; the input that
//! arrives while the job is stopped waits in the broker. The job manager then starts again
//! from the savepoint, drops the stopped run's checkpoints, and the sinks commit the
//! savepoint's transactions again and abort the rest. The checker requires that the job was
//! stopped and resumed from its savepoint, and, as in `eos-pipeline`, that the committed output
//! holds every window exactly once.

use super::eos_pipeline;
use super::pipeline::{self, Pipeline};
use crate::report::RunReport;
use crate::scenario::RunSpec;

/// Deliberately broken runtimes this scenario must catch.
pub const MUTANTS: &[(&str, &str)] = &[(
    "savepoint-ignored",
    "a job manager resuming from a savepoint starts the job from scratch instead",
)];

const PIPELINE: Pipeline = Pipeline {
    name: "savepoint",
    stop_and_resume: true,
    ..eos_pipeline::PIPELINE
};

/// Runs one seed.
pub fn run(spec: &RunSpec) -> RunReport {
    let (mut r, observed) = pipeline::run(&PIPELINE, spec);
    if observed.stopped_with.is_empty() {
        r.violations
            .push("liveness: the job was never stopped with a savepoint".into());
    } else if observed.resumed_from_savepoint == 0 && spec.mutant.is_none() {
        r.violations.push(format!(
            "liveness: no attempt restored the savepoint the job stopped with ({:?})",
            observed.stopped_with
        ));
    }
    r.passed = r.violations.is_empty();
    r
}
