//! The `microbatch` scenario, and the execution models' comparison, under `cargo test`.

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

#[test]
fn the_comparison_measures_every_model_on_both_schedules() {
    let figures = weir_sim::compare::compare(0..1, &|_| {});
    let models = weir_sim::compare::models().len();
    assert_eq!(figures.len(), models * 2);
    for f in &figures {
        assert_eq!(
            f.passed, 1,
            "{} / {} failed its checks",
            f.model, f.schedule
        );
        assert!(
            f.latency_ms.count > 0,
            "{} / {}: no result seen",
            f.model,
            f.schedule
        );
        assert!(f.latency_ms.p50 <= f.latency_ms.p99 && f.latency_ms.p99 <= f.latency_ms.max);
        assert!(
            f.checkpoint_ms.count > 0,
            "{} / {}: no checkpoint",
            f.model,
            f.schedule
        );
        assert_eq!((f.duplicates, f.losses), (0, 0));
        if f.schedule == "none" {
            assert_eq!(
                f.recovery_ms.count, 0,
                "{}: a failover without faults",
                f.model
            );
        }
    }
    // The same seeds give the same figures: the comparison is deterministic.
    assert_eq!(figures, weir_sim::compare::compare(0..1, &|_| {}));
}
