//! Scenario `idempotent-producer`: three brokers, replicated partitions, and idempotent
//! producers whose requests time out and are retried while the nemesis delays, holds and cuts
//! links and crashes brokers. Every retry of a batch that already landed must be answered with
//! its original offsets, never appended again; after the heal every acknowledged record must be
//! in the log exactly once.

use super::queue::{self, QueueScenario};
use crate::report::RunReport;
use crate::scenario::RunSpec;
use weir_broker::{BrokerConfig, BrokerMutant};

/// Deliberately broken clusters this scenario must catch.
pub const MUTANTS: &[(&str, &str)] = &[(
    "dedupe-disabled",
    "brokers append a retried batch again instead of answering with its original offsets",
)];

fn broker_config(mutant: Option<&str>) -> BrokerConfig {
    BrokerConfig {
        mutant: (mutant == Some("dedupe-disabled")).then_some(BrokerMutant::DedupeDisabled),
        ..super::common::broker_config()
    }
}

const SCENARIO: QueueScenario = QueueScenario {
    name: "idempotent-producer",
    brokers: 3,
    partitions: 2,
    replication_factor: 3,
    mutants: MUTANTS,
    broker_config,
};

/// Runs one seed.
pub fn run(spec: &RunSpec) -> RunReport {
    queue::run(&SCENARIO, spec)
}
