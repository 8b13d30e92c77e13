//! The `order-aggregates` scenario under `cargo test`.

mod common;

use common::{
    every_seed_passes, first_catch, generated_plans_pass, pipeline_topology, same_seed_same_hash,
};

const SCENARIO: &str = "order-aggregates";

#[test]
fn every_seed_outputs_the_oracles_aggregates() {
    for r in every_seed_passes(SCENARIO, 3) {
        let checkpoints = r
            .metrics
            .iter()
            .find(|(n, _)| n == "checkpoints completed")
            .map(|(_, v)| v.parse::<u64>().unwrap())
            .unwrap();
        assert!(checkpoints > 0, "seed {} completed no checkpoint", r.seed);
    }
}

#[test]
fn the_same_seed_gives_the_same_trace_hash() {
    same_seed_same_hash(SCENARIO, 7);
}

#[test]
fn a_sink_that_commits_before_the_checkpoint_completes_is_caught() {
    let caught = first_catch(SCENARIO, "commit-before-complete", 40);
    eprintln!("commit-before-complete caught at seed {caught:?}");
    assert!(caught.is_some());
}

#[test]
fn generated_fault_plans_pass() {
    generated_plans_pass(
        SCENARIO,
        &pipeline_topology(&["feeder", "observer"]),
        20_000,
        2,
    );
}
