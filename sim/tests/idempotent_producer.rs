//! The `idempotent-producer` scenario under `cargo test`: retried batches through timeouts,
//! partitions and crashes on three brokers land once. Seeds scale with `WEIR_SEEDS`.

mod common;

use common::{
    every_seed_passes_with_progress, first_catch, generated_plans_pass, queue_topology,
    same_seed_same_hash,
};

const SCENARIO: &str = "idempotent-producer";

#[test]
fn every_seed_passes_and_makes_progress() {
    every_seed_passes_with_progress(SCENARIO, 4);
}

#[test]
fn the_same_seed_gives_the_same_trace_hash() {
    same_seed_same_hash(SCENARIO, 1);
}

#[test]
fn appending_a_retried_batch_again_is_caught() {
    let caught = first_catch(SCENARIO, "dedupe-disabled", 30);
    eprintln!("dedupe-disabled caught at seed {caught:?}");
    assert!(
        caught.is_some(),
        "a broker that appends a retry again must show a duplicate"
    );
}

#[test]
fn generated_fault_plans_pass() {
    generated_plans_pass(SCENARIO, &queue_topology(3), 20_000, 3);
}
