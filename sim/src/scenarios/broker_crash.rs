//! Scenario `broker-crash`: one broker, idempotent acks=all producers, polling consumers.
//!
//! The nemesis crashes and restarts the broker (losing unsynced writes, sometimes tearing them
//! or leaving garbage), partitions it from clients (both ways and one way), holds links,
//! raises latency and makes its disk fail with EIO, at times the seed draws. Then everything
//! heals, and a final reader must see every acknowledged record, once, at its acknowledged
//! offset, within the liveness bound.

use super::queue::{self, QueueScenario};
use crate::report::RunReport;
use crate::scenario::RunSpec;
use weir_broker::log::TailRecovery;
use weir_broker::{BrokerConfig, Durability};

/// Deliberately broken brokers this scenario must catch.
pub const MUTANTS: &[(&str, &str)] = &[
    (
        "page-cache-acks",
        "acks=all is acknowledged and readable from the page cache, before fsync",
    ),
    (
        "skip-recovery",
        "on restart the broker keeps a torn or garbled log tail instead of truncating it",
    ),
];

fn broker_config(mutant: Option<&str>) -> BrokerConfig {
    BrokerConfig {
        durability: if mutant == Some("page-cache-acks") {
            Durability::PageCache
        } else {
            Durability::Fsync
        },
        tail_recovery: if mutant == Some("skip-recovery") {
            TailRecovery::UnsafeSkip
        } else {
            TailRecovery::Check
        },
        ..super::common::broker_config()
    }
}

const SCENARIO: QueueScenario = QueueScenario {
    name: "broker-crash",
    brokers: 1,
    partitions: 3,
    replication_factor: 1,
    mutants: MUTANTS,
    broker_config,
};

/// Runs one seed.
pub fn run(spec: &RunSpec) -> RunReport {
    queue::run(&SCENARIO, spec)
}
