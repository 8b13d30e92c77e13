//! The `nexmark-q0` and `nexmark-q1` scenarios under `cargo test`.

mod common;

use common::{
    every_seed_passes, first_catch, generated_plans_pass, pipeline_topology, same_seed_same_hash,
};

#[test]
fn q0_passes_every_bid_through_exactly_once() {
    every_seed_passes("nexmark-q0", 2);
}

#[test]
fn q1_converts_every_bid_exactly_once() {
    every_seed_passes("nexmark-q1", 2);
}

#[test]
fn the_same_seed_gives_the_same_trace_hash() {
    same_seed_same_hash("nexmark-q1", 3);
}

#[test]
fn a_sink_that_commits_before_the_checkpoint_completes_is_caught() {
    let caught = first_catch("nexmark-q1", "commit-before-complete", 40);
    eprintln!("commit-before-complete caught at seed {caught:?}");
    assert!(caught.is_some());
}

#[test]
fn generated_fault_plans_pass() {
    let topo = pipeline_topology(&["feeder", "observer"]);
    generated_plans_pass("nexmark-q0", &topo, 20_000, 1);
}
