//! The `consumer-group` scenario under `cargo test`: a group of three consumes through
//! coordinator crashes, partitions and a zombie member, and its commits stay fenced. Seeds
//! scale with `WEIR_SEEDS`.

mod common;

use common::{every_seed_passes, first_catch, generated_plans_pass, same_seed_same_hash};
use weir_sim::fault::Topology;

const SCENARIO: &str = "consumer-group";

#[test]
fn every_seed_passes_and_makes_progress() {
    let reports = every_seed_passes(SCENARIO, 3);
    let polled: u64 = reports.iter().map(|r| r.ops.polled).sum();
    assert!(
        polled > reports.len() as u64 * 100,
        "the group consumes: {polled} records delivered"
    );
}

#[test]
fn the_same_seed_gives_the_same_trace_hash() {
    same_seed_same_hash(SCENARIO, 1);
}

#[test]
fn accepting_commits_from_any_generation_is_caught() {
    let caught = first_catch(SCENARIO, "no-generation-fencing", 20);
    eprintln!("no-generation-fencing caught at seed {caught:?}");
    assert!(
        caught.is_some(),
        "a coordinator that takes a zombie's commit must show an offset going back"
    );
}

#[test]
fn generated_fault_plans_pass() {
    let topology = Topology {
        servers: (0..3).map(|i| format!("broker-{i}")).collect(),
        clients: ["producer", "member-0", "member-1", "member-2", "observer"]
            .map(String::from)
            .to_vec(),
    };
    generated_plans_pass(SCENARIO, &topology, 20_000, 3);
}
