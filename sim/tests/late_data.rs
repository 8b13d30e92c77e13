//! The `late-data` scenario under `cargo test`.

mod common;

use common::{every_seed_passes, first_catch, generated_plans_pass, same_seed_same_hash};
use weir_sim::fault::Topology;

const SCENARIO: &str = "late-data";

#[test]
fn every_seed_passes_and_reads_everything() {
    let reports = every_seed_passes(SCENARIO, 12);
    assert!(
        reports.iter().all(|r| r.ops.ok == 1_200),
        "every event is acknowledged and checked"
    );
}

#[test]
fn the_same_seed_gives_the_same_trace_hash() {
    same_seed_same_hash(SCENARIO, 5);
}

#[test]
fn an_engine_with_off_by_one_windows_is_caught() {
    let caught = first_catch(SCENARIO, "window-off-by-one", 10);
    eprintln!("window-off-by-one caught at seed {caught:?}");
    assert_eq!(caught, Some(0));
}

#[test]
fn generated_fault_plans_pass() {
    let topo = Topology {
        servers: vec!["broker".into()],
        clients: vec!["producer".into(), "job".into()],
    };
    generated_plans_pass(SCENARIO, &topo, 20_000, 6);
}
