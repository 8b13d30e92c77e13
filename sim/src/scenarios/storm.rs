//! Scenario `storm`: the `eos-pipeline` job under the Storm model, amid the same faults.
//!
//! Every input record roots a tree of tuples that the source tracks by XOR acknowledgements;
//! the window holds its tuples unacknowledged until it fires, and the sink acknowledges once
//! its write is delivered. Sources commit, per partition, the offset below which every tree
//! completed, and replay a tree still open after [`MESSAGE_TIMEOUT_MS`]. Nothing is
//! checkpointed, and the sink has no transactions, so the promise is at least once: the
//! checker requires every window of the input in the output, its results counting at least
//! its rows, and no window without input.

use super::eos_pipeline;
use super::pipeline::{self, Pipeline};
use crate::report::RunReport;
use crate::scenario::RunSpec;
use weir_engine::runtime::ExecutionModel;

/// Deliberately broken runtimes this scenario must catch.
pub const MUTANTS: &[(&str, &str)] = &[(
    "commit-past-open-trees",
    "sources commit the offset they have read up to, past records whose trees are still open",
)];

/// Storm's default `topology.message.timeout.secs`, 30 s.
pub const MESSAGE_TIMEOUT_MS: u64 = 30_000;

/// The model as this scenario and the comparison run it: Storm's default message timeout, at
/// most 1 000 open trees per source subtask, and an offset commit every second (the other
/// models' commit cadence).
pub const MODEL: ExecutionModel = ExecutionModel::Storm {
    message_timeout_ms: MESSAGE_TIMEOUT_MS,
    max_spout_pending: 1_000,
    commit_interval_ms: 1_000,
};

const PIPELINE: Pipeline = Pipeline {
    name: "storm",
    model: MODEL,
    at_least_once: true,
    ..eos_pipeline::PIPELINE
};

/// Runs one seed.
pub fn run(spec: &RunSpec) -> RunReport {
    pipeline::run(&PIPELINE, spec).0
}
