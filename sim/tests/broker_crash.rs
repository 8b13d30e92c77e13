//! The `broker-crash` scenario under `cargo test`: a bounded seed range (scale it with
//! `WEIR_SEEDS`), a proptest over fault plans, the double-run determinism check, and the
//! deliberately broken brokers that the checkers must catch.

mod common;

use common::{
    every_seed_passes_with_progress, first_catch, generated_plans_pass, plan_runner,
    queue_topology, run, same_seed_same_hash,
};
use proptest::test_runner::TestError;
use weir_sim::fault::FaultPlan;
use weir_sim::scenario::RunSpec;

const SCENARIO: &str = "broker-crash";

#[test]
fn every_seed_passes_and_makes_progress() {
    every_seed_passes_with_progress(SCENARIO, 8);
}

#[test]
fn the_same_seed_gives_the_same_trace_hash() {
    same_seed_same_hash(SCENARIO, 3);
}

#[test]
fn acking_before_fsync_is_caught() {
    let caught = first_catch(SCENARIO, "page-cache-acks", 20);
    eprintln!("page-cache-acks caught at seed {caught:?}");
    assert!(
        caught.is_some(),
        "a broker that acks from the page cache must lose acknowledged writes under crashes"
    );
}

#[test]
fn recovering_without_truncation_is_caught() {
    // Rare: 4 of 200 seeds catch it, the first at seed 70.
    let caught = first_catch(SCENARIO, "skip-recovery", 100);
    eprintln!("skip-recovery caught at seed {caught:?}");
    assert!(
        caught.is_some(),
        "a broker that keeps a torn tail must fail to serve its log"
    );
}

#[test]
fn generated_fault_plans_pass() {
    generated_plans_pass(SCENARIO, &queue_topology(1), 20_000, 6);
}

#[test]
fn a_failing_plan_shrinks_to_a_few_faults() {
    let mut runner = plan_runner(16, 64);
    let result = runner.run(
        &FaultPlan::strategy(&queue_topology(1), 20_000, 12),
        |plan| {
            let r = run(
                SCENARIO,
                RunSpec {
                    seed: 5,
                    plan: Some(plan),
                    mutant: Some("page-cache-acks".into()),
                },
            );
            proptest::prop_assert!(r.passed, "{}", r.replay);
            Ok(())
        },
    );
    match result {
        Err(TestError::Fail(why, plan)) => {
            eprintln!(
                "shrunk to {} faults: {}\n{why}",
                plan.faults.len(),
                serde_json::to_string(&plan).unwrap()
            );
            assert!(
                plan.faults.len() <= 3,
                "shrinking leaves a small plan, got {plan:?}"
            );
            assert!(
                why.message()
                    .contains("weir replay --scenario broker-crash --seed 5"),
                "the failure names its replay line"
            );
        }
        other => panic!("the page-cache mutant should fail some generated plan: {other:?}"),
    }
}
