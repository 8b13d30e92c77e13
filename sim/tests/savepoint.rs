//! The `savepoint` scenario under `cargo test`.

mod common;

use common::{
    every_seed_passes, first_catch, generated_plans_pass, pipeline_topology, same_seed_same_hash,
};

const SCENARIO: &str = "savepoint";

#[test]
fn every_seed_stops_with_a_savepoint_and_resumes_from_it() {
    for r in every_seed_passes(SCENARIO, 4) {
        let stopped = r.trace.iter().any(|e| e.what.starts_with("Stopped {"));
        assert!(stopped, "seed {} never stopped", r.seed);
    }
}

#[test]
fn the_same_seed_gives_the_same_trace_hash() {
    same_seed_same_hash(SCENARIO, 5);
}

#[test]
fn a_resume_that_ignores_the_savepoint_is_caught() {
    let caught = first_catch(SCENARIO, "savepoint-ignored", 10);
    eprintln!("savepoint-ignored caught at seed {caught:?}");
    assert!(caught.is_some());
}

#[test]
fn generated_fault_plans_pass() {
    generated_plans_pass(
        SCENARIO,
        &pipeline_topology(&["feeder", "observer", "operator"]),
        20_000,
        2,
    );
}
