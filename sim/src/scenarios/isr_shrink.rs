//! Scenario `isr-shrink`: three brokers, three replicas and `min.insync.replicas=1`, so the ISR
//! may shrink to the leader alone and acks=all then means the leader alone.
//!
//! When that last in-sync replica dies while a stale replica is alive, the partition must stay
//! offline until an ISR member returns: electing the stale replica would throw away records
//! that were acknowledged. The nemesis and the checker are the queue's; the mutant elects
//! outside the ISR.

use super::queue::{self, QueueScenario};
use crate::report::RunReport;
use crate::scenario::RunSpec;
use weir_broker::BrokerConfig;

/// Deliberately broken clusters this scenario must catch.
pub const MUTANTS: &[(&str, &str)] = &[(
    "unclean-election",
    "a partition whose ISR is all down is led by a live replica outside the ISR",
)];

fn broker_config(mutant: Option<&str>) -> BrokerConfig {
    BrokerConfig {
        unclean_leader_election: mutant == Some("unclean-election"),
        ..super::common::broker_config_min_isr(1)
    }
}

const SCENARIO: QueueScenario = QueueScenario {
    name: "isr-shrink",
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
