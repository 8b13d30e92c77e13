//! The `consume-transform-produce` scenario under `cargo test`: exactly one committed output
//! per input through rebalances, stalls and faults on three brokers, and a coordinator that
//! does not fence stale generations is caught. Seeds scale with `WEIR_SEEDS`.

mod common;

use common::{every_seed_passes, first_catch, generated_plans_pass, same_seed_same_hash};
use weir_sim::fault::Topology;

const SCENARIO: &str = "consume-transform-produce";

#[test]
fn every_seed_passes_and_transforms() {
    let reports = every_seed_passes(SCENARIO, 4);
    let polled: u64 = reports.iter().map(|r| r.ops.polled).sum();
    assert!(polled > 0, "the workers consumed the input");
}

#[test]
fn the_same_seed_gives_the_same_trace_hash() {
    same_seed_same_hash(SCENARIO, 2);
}

#[test]
fn unfenced_generations_are_caught() {
    let caught = first_catch(SCENARIO, "no-generation-fencing", 20);
    eprintln!("no-generation-fencing caught at seed {caught:?}");
    assert!(
        caught.is_some(),
        "a stalled worker whose stale offsets commit must duplicate outputs"
    );
}

#[test]
fn generated_fault_plans_pass() {
    let topology = Topology {
        servers: (0..3).map(|i| format!("broker-{i}")).collect(),
        clients: ["feeder", "worker-0", "worker-1", "worker-2", "observer"]
            .map(String::from)
            .to_vec(),
    };
    generated_plans_pass(SCENARIO, &topology, 20_000, 3);
}
