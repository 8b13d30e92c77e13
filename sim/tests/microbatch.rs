//! The `microbatch` scenario under `cargo test`.

mod common;

use common::{
    assert_caught, every_seed_passes, figure, generated_plans_pass, pipeline_topology,
    same_seed_same_hash,
};

const SCENARIO: &str = "microbatch";

#[test]
fn every_seed_passes_in_batches() {
    let reports = every_seed_passes(SCENARIO, 6);
    for r in &reports {
        let batches = figure(r, "batches");
        let started: u64 = batches.split(' ').next().unwrap().parse().unwrap();
        assert!(started > 0, "seed {} ran no batch: {batches}", r.seed);
        // The job can finish before a heartbeat reports its last commits, so the proof of
        // output is the checker's: every expected window was committed exactly once.
        let expected = figure(r, "output the oracle expects");
        assert_ne!(expected, "0 records", "seed {} expects no output", r.seed);
    }
}

#[test]
fn the_same_seed_gives_the_same_trace_hash() {
    same_seed_same_hash(SCENARIO, 3);
}

#[test]
fn a_rerun_batch_that_ignores_the_offset_log_is_caught() {
    assert_caught(SCENARIO, "offset-log-ignored", 40);
}

#[test]
fn a_batch_past_its_offset_bound_is_caught() {
    assert_caught(SCENARIO, "batch-unbounded", 40);
}

#[test]
fn a_sink_that_commits_before_the_batch_completes_is_caught() {
    assert_caught(SCENARIO, "commit-before-complete", 40);
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
