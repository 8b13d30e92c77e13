//! The `transactions` scenario under `cargo test`: committed transactions are whole, aborted
//! ones invisible, zombies fenced, through faults on three brokers. Seeds scale with
//! `WEIR_SEEDS`.

mod common;

use common::{every_seed_passes, first_catch, generated_plans_pass, same_seed_same_hash};
use weir_sim::fault::Topology;

const SCENARIO: &str = "transactions";

#[test]
fn every_seed_passes_and_commits() {
    let reports = every_seed_passes(SCENARIO, 4);
    let committed: u64 = reports.iter().map(|r| r.ops.ok).sum();
    let aborted: u64 = reports.iter().map(|r| r.ops.failed).sum();
    assert!(
        committed > 0 && aborted > 0,
        "the workload both commits ({committed} records) and aborts ({aborted})"
    );
}

#[test]
fn the_same_seed_gives_the_same_trace_hash() {
    same_seed_same_hash(SCENARIO, 2);
}

#[test]
fn an_unfenced_zombie_is_caught() {
    let caught = first_catch(SCENARIO, "no-zombie-fencing", 20);
    eprintln!("no-zombie-fencing caught at seed {caught:?}");
    assert!(
        caught.is_some(),
        "a coordinator that does not fence a replaced producer must let aborted data through"
    );
}

#[test]
fn generated_fault_plans_pass() {
    let topology = Topology {
        servers: (0..3).map(|i| format!("broker-{i}")).collect(),
        clients: ["producer-0", "producer-1", "drainer"]
            .map(String::from)
            .to_vec(),
    };
    generated_plans_pass(SCENARIO, &topology, 20_000, 3);
}
