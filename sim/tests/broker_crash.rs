//! The `broker-crash` scenario under `cargo test`: a bounded seed range (scale it with
//! `WEIR_SEEDS`), a proptest over fault plans, the double-run determinism check, and the
//! deliberately broken brokers that the checkers must catch.

use proptest::test_runner::{Config, TestError, TestRunner};
use weir_sim::fault::{FaultPlan, Topology};
use weir_sim::report::RunReport;
use weir_sim::scenario::{RunSpec, find};

const SCENARIO: &str = "broker-crash";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run(spec: RunSpec) -> RunReport {
    (find(SCENARIO).expect("registered").run)(&spec)
}

/// Runs seeds `range` on two threads; returns the reports in seed order.
fn sweep(range: std::ops::Range<u64>, mutant: Option<&str>) -> Vec<RunReport> {
    let seeds: Vec<u64> = range.collect();
    let mut out: Vec<RunReport> = std::thread::scope(|s| {
        let handles: Vec<_> = seeds
            .chunks(seeds.len().div_ceil(2).max(1))
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|&seed| {
                            run(RunSpec {
                                seed,
                                plan: None,
                                mutant: mutant.map(String::from),
                            })
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("no panic"))
            .collect()
    });
    out.sort_by_key(|r| r.seed);
    out
}

fn describe(failed: &[&RunReport]) -> String {
    failed
        .iter()
        .map(|r| {
            format!(
                "seed {}: {}\n  {}",
                r.seed,
                r.violations.first().cloned().unwrap_or_default(),
                r.replay
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_seed_passes() {
    let n = env_u64("WEIR_SEEDS", 8);
    let reports = sweep(0..n, None);
    let failed: Vec<&RunReport> = reports.iter().filter(|r| !r.passed).collect();
    assert!(
        failed.is_empty(),
        "{} of {n} seeds failed:\n{}",
        failed.len(),
        describe(&failed)
    );
    let acked: u64 = reports.iter().map(|r| r.ops.ok).sum();
    assert!(
        acked > n * 100,
        "the workload makes progress: {acked} acknowledged sends over {n} seeds"
    );
}

#[test]
fn the_same_seed_gives_the_same_trace_hash() {
    let a = run(RunSpec {
        seed: 3,
        ..Default::default()
    });
    let b = run(RunSpec {
        seed: 3,
        ..Default::default()
    });
    assert_eq!(a.trace_hash, b.trace_hash, "seed 3 replays bit for bit");
    assert_eq!(a.violations, b.violations);
    assert_eq!(a.ops, b.ops);
    assert_eq!(a.trace.len(), b.trace.len());
    let c = run(RunSpec {
        seed: 4,
        ..Default::default()
    });
    assert_ne!(
        a.trace_hash, c.trace_hash,
        "different seeds take different paths"
    );
}

/// The first seed in `0..limit` at which `mutant` is caught.
fn first_catch(mutant: &str, limit: u64) -> Option<u64> {
    (0..limit).step_by(2).find_map(|start| {
        sweep(start..(start + 2).min(limit), Some(mutant))
            .into_iter()
            .find(|r| !r.passed)
            .map(|r| r.seed)
    })
}

#[test]
fn acking_before_fsync_is_caught() {
    let caught = first_catch("page-cache-acks", 20);
    eprintln!("page-cache-acks caught at seed {caught:?}");
    assert!(
        caught.is_some(),
        "a broker that acks from the page cache must lose acknowledged writes under crashes"
    );
}

#[test]
fn recovering_without_truncation_is_caught() {
    let caught = first_catch("skip-recovery", 40);
    eprintln!("skip-recovery caught at seed {caught:?}");
    assert!(
        caught.is_some(),
        "a broker that keeps a torn tail must fail to serve its log"
    );
}

fn topology() -> Topology {
    Topology {
        servers: vec!["broker".into()],
        clients: vec![
            "producer-0".into(),
            "producer-1".into(),
            "consumer-0".into(),
            "drainer".into(),
        ],
    }
}

#[test]
fn generated_fault_plans_pass() {
    let cases = env_u64("WEIR_PROPTEST_CASES", 6) as u32;
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&FaultPlan::strategy(&topology(), 20_000, 12), |plan| {
        let r = run(RunSpec {
            seed: 11,
            plan: Some(plan),
            mutant: None,
        });
        proptest::prop_assert!(
            r.passed,
            "{}\nreplay: {}",
            r.violations.join("\n"),
            r.replay
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn a_failing_plan_shrinks_to_a_few_faults() {
    let mut runner = TestRunner::new(Config {
        cases: 16,
        max_shrink_iters: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&FaultPlan::strategy(&topology(), 20_000, 12), |plan| {
        let r = run(RunSpec {
            seed: 5,
            plan: Some(plan),
            mutant: Some("page-cache-acks".into()),
        });
        proptest::prop_assert!(r.passed, "{}", r.replay);
        Ok(())
    });
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
