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
fn the_comparison_measures_every_job_and_model_on_both_schedules() {
    let figures = weir_sim::compare::compare(0..1, &|_| {});
    assert_eq!(figures.len() as u64, weir_sim::compare::runs_per_seed());
    for f in &figures {
        let name = format!("{} / {} / {}", f.job, f.model, f.schedule);
        assert_eq!(f.passed, 1, "{name} failed its checks");
        // Only the job whose event time is simulated time has a comparable latency.
        assert_eq!(f.latency_ms.is_some(), f.job == "order-totals", "{name}");
        if let Some(l) = &f.latency_ms {
            assert!(l.count > 0, "{name}: no result seen");
            assert!(l.p50 <= l.p99 && l.p99 <= l.max, "{name}: {l:?}");
        }
        assert!(f.checkpoint_ms.count > 0, "{name}: no checkpoint");
        assert_eq!((f.duplicates, f.losses), (0, 0), "{name}");
        if f.schedule == "none" {
            assert_eq!(f.recovery_ms.count, 0, "{name}: a failover without faults");
        }
    }
    // The same seeds give the same figures: the comparison is deterministic.
    assert_eq!(figures, weir_sim::compare::compare(0..1, &|_| {}));
}
