//! The `backpressure` scenario under `cargo test`.

mod common;

use common::{
    every_seed_passes, first_catch, generated_plans_pass, pipeline_topology, same_seed_same_hash,
};

const SCENARIO: &str = "backpressure";

#[test]
fn every_seed_passes_with_the_backlog_in_the_broker() {
    let reports = every_seed_passes(SCENARIO, 6);
    for r in &reports {
        let lag = r
            .metrics
            .iter()
            .find(|(n, _)| n == "consumer lag (sources, largest)")
            .map(|(_, v)| v.clone())
            .expect("lag is reported");
        let records: u64 = lag.split(' ').next().unwrap().parse().unwrap();
        assert!(records >= 100, "seed {}: {lag}", r.seed);
    }
}

#[test]
fn the_same_seed_gives_the_same_trace_hash() {
    same_seed_same_hash(SCENARIO, 2);
}

#[test]
fn unbounded_exchange_buffers_are_caught() {
    let caught = first_catch(SCENARIO, "unbounded-buffers", 6);
    eprintln!("unbounded-buffers caught at seed {caught:?}");
    assert_eq!(caught, Some(0));
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
