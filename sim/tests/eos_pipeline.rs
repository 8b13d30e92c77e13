//! The `eos-pipeline` scenario under `cargo test`.

mod common;

use common::{
    assert_caught, every_seed_passes, figure, generated_plans_pass, pipeline_topology,
    same_seed_same_hash,
};

const SCENARIO: &str = "eos-pipeline";

#[test]
fn every_seed_passes_with_checkpoints_and_commits() {
    let reports = every_seed_passes(SCENARIO, 6);
    for r in &reports {
        let checkpoints: u64 = figure(r, "checkpoints completed").parse().unwrap();
        assert!(checkpoints > 0, "seed {} completed no checkpoint", r.seed);
        assert!(
            !figure(r, "end-to-end latency (event time to commit)").contains("over 0 rows"),
            "seed {} committed window results",
            r.seed
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_trace_hash() {
    same_seed_same_hash(SCENARIO, 3);
}

#[test]
fn a_sink_that_commits_before_the_checkpoint_completes_is_caught() {
    assert_caught(SCENARIO, "commit-before-complete", 40);
}

#[test]
fn sources_that_save_offsets_after_the_barrier_are_caught() {
    assert_caught(SCENARIO, "offsets-after-barrier", 40);
}

#[test]
fn generated_fault_plans_pass() {
    generated_plans_pass(
        SCENARIO,
        &pipeline_topology(&["feeder", "observer"]),
        20_000,
        3,
    );
}
