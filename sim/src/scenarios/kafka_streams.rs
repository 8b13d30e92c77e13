//! Scenario `kafka-streams`: the `eos-pipeline` job under the Kafka Streams model, amid the
//! same faults.
//!
//! Each subtask commits one broker transaction every [`COMMIT_INTERVAL_MS`] holding its output,
//! its windows' changes (in a changelog topic) and its input offsets. The keyed edge is a
//! repartition topic. A restarted subtask rebuilds its windows from its changelog and resumes
//! from its group's offsets; nothing else is saved. The checker requires the same exactly-once
//! output as `eos-pipeline`.

use super::eos_pipeline;
use super::pipeline::{self, Pipeline};
use crate::report::RunReport;
use crate::scenario::RunSpec;
use weir_engine::runtime::ExecutionModel;

/// Deliberately broken runtimes this scenario must catch.
pub const MUTANTS: &[(&str, &str)] = &[(
    "changelog-skipped",
    "windows' changes are left out of the changelog, so a restarted subtask restores no open window",
)];

/// Kafka Streams' default `commit.interval.ms` under exactly-once.
pub const COMMIT_INTERVAL_MS: u64 = 100;

/// Grace period of the scenario's windows: longer than the whole input, so that no row is
/// ever late and the checker can require every window exact. A shorter grace drops rows
/// after a recovery (see [`crate::compare`]).
pub const GRACE_MS: u64 = 30_000;

/// The model with windows closing `grace_ms` after their end: Kafka Streams' default commit
/// interval, and internal topics replicated like the job's own.
pub const fn model(grace_ms: u64) -> ExecutionModel {
    ExecutionModel::KafkaStreams {
        commit_interval_ms: COMMIT_INTERVAL_MS,
        grace_ms,
        replication_factor: 3,
    }
}

const PIPELINE: Pipeline = Pipeline {
    name: "kafka-streams",
    model: model(GRACE_MS),
    ..eos_pipeline::PIPELINE
};

/// Runs one seed.
pub fn run(spec: &RunSpec) -> RunReport {
    pipeline::run(&PIPELINE, spec).0
}
