//! Scenario `replication`: three brokers, a topic with three replicas and
//! `min.insync.replicas=2`, idempotent acks=all producers and a polling consumer.
//!
//! The nemesis crashes any broker (the controller included), partitions the cluster one way
//! and both ways (majority/minority splits among them), holds links, raises latency and fails
//! disks. Leadership moves within the ISR, followers truncate where they diverged, and after
//! the heal the cluster must converge and serve every acknowledged record, once, at its
//! acknowledged offset.

use super::queue::{self, QueueScenario};
use crate::report::RunReport;
use crate::scenario::RunSpec;
use weir_broker::{BrokerConfig, BrokerMutant};

/// Deliberately broken clusters this scenario must catch.
pub const MUTANTS: &[(&str, &str)] = &[(
    "hw-ignores-isr",
    "a leader advances its high watermark (and acknowledges acks=all) before the ISR has the write",
)];

fn broker_config(mutant: Option<&str>) -> BrokerConfig {
    BrokerConfig {
        mutant: (mutant == Some("hw-ignores-isr")).then_some(BrokerMutant::HwIgnoresIsr),
        ..super::common::broker_config_min_isr(2)
    }
}

const SCENARIO: QueueScenario = QueueScenario {
    name: "replication",
    brokers: 3,
    partitions: 3,
    replication_factor: 3,
    mutants: MUTANTS,
    broker_config,
};

/// Runs one seed.
pub fn run(spec: &RunSpec) -> RunReport {
    queue::run(&SCENARIO, spec)
}
