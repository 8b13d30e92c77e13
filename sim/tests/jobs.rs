//! The scenarios of the job catalog under `cargo test`: one per job, each the job under the
//! `eos-pipeline` faults, checked against its oracle.

mod common;

use common::{
    every_seed_passes, figure, first_catch, generated_plans_pass, pipeline_topology,
    same_seed_same_hash, sweep,
};

/// Runs `scenario`'s first `seeds` seeds (more with `WEIR_SEEDS`), requires a completed
/// checkpoint in each, and the same trace hash from `hash_seed` run twice.
fn passes(scenario: &str, seeds: u64, hash_seed: u64) {
    for r in every_seed_passes(scenario, seeds) {
        assert_ne!(figure(&r, "checkpoints completed"), "0", "seed {}", r.seed);
    }
    same_seed_same_hash(scenario, hash_seed);
}

/// Requires the `commit-before-complete` mutant to fail a seed of `scenario` below 40.
fn catches_early_commits(scenario: &str) {
    let caught = first_catch(scenario, "commit-before-complete", 40);
    eprintln!("{scenario}: commit-before-complete caught at seed {caught:?}");
    assert!(caught.is_some());
}

#[test]
fn order_aggregates_commits_each_window_once() {
    passes("order-aggregates", 3, 7);
}

#[test]
fn order_pipeline_commits_each_record_once_and_upserts_each_event_once() {
    passes("order-pipeline", 2, 5);
}

#[test]
fn order_sessions_commits_each_session_and_running_total_once() {
    passes("order-sessions", 2, 4);
}

#[test]
fn click_analytics_commits_each_user_minute_once() {
    passes("click-analytics", 2, 5);
}

#[test]
fn nexmark_stateless_queries_commit_each_selected_bid_once() {
    passes("nexmark-q0", 2, 2);
    passes("nexmark-q1", 2, 3);
    passes("nexmark-q2", 1, 4);
}

#[test]
fn nexmark_windowed_queries_commit_each_window_result_once() {
    passes("nexmark-q5", 1, 6);
    passes("nexmark-q7", 1, 7);
    passes("nexmark-q8", 1, 8);
}

#[test]
fn order_aggregates_catches_a_sink_that_commits_before_the_checkpoint_completes() {
    catches_early_commits("order-aggregates");
}

/// The mutant commits the table's upserts at the barrier too; the table's own check (writes
/// per key), not only the topics', must catch it.
#[test]
fn order_pipeline_catches_upserts_applied_before_the_checkpoint_completes() {
    let caught = (0..40).step_by(2).find_map(|start| {
        sweep(
            "order-pipeline",
            start..start + 2,
            Some("commit-before-complete"),
        )
        .into_iter()
        .find(|r| r.violations.iter().any(|v| v.starts_with("table orders:")))
        .map(|r| r.seed)
    });
    eprintln!("order-pipeline: upserts applied twice caught at seed {caught:?}");
    assert!(caught.is_some());
}

#[test]
fn order_sessions_catches_a_sink_that_commits_before_the_checkpoint_completes() {
    catches_early_commits("order-sessions");
}

#[test]
fn nexmark_q1_catches_a_sink_that_commits_before_the_checkpoint_completes() {
    catches_early_commits("nexmark-q1");
}

#[test]
fn generated_fault_plans_pass() {
    let topo = pipeline_topology(&["feeder", "observer"]);
    generated_plans_pass("order-aggregates", &topo, 20_000, 2);
    generated_plans_pass("order-sessions", &topo, 20_000, 1);
    generated_plans_pass("nexmark-q0", &topo, 20_000, 1);
    let mut topo = pipeline_topology(&["feeder", "observer"]);
    topo.servers.push("table".into());
    generated_plans_pass("order-pipeline", &topo, 20_000, 1);
}
