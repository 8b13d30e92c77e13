//! Helpers the scenario tests share: sweeping seeds on two threads, finding the first seed that
//! catches a mutant, and checking that generated fault plans pass.

use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use weir_sim::fault::{FaultPlan, Topology};
use weir_sim::report::RunReport;
use weir_sim::scenario::{RunSpec, find};

/// A number from the environment, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The figure a run's report gives for `name`.
#[allow(dead_code)]
pub fn figure<'a>(r: &'a RunReport, name: &str) -> &'a str {
    r.metrics
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("seed {} reports no {name:?}", r.seed))
}

/// The hosts of a queue scenario with `brokers` brokers ("broker" alone, else "broker-i").
// Each test file compiles this module on its own, and the late-data tests need no topology.
#[allow(dead_code)]
pub fn queue_topology(brokers: usize) -> Topology {
    let servers = if brokers == 1 {
        vec!["broker".to_string()]
    } else {
        (0..brokers).map(|i| format!("broker-{i}")).collect()
    };
    Topology {
        servers,
        clients: ["producer-0", "producer-1", "consumer-0", "drainer"]
            .map(String::from)
            .to_vec(),
    }
}

/// The pipeline scenarios' hosts: three brokers, a job manager, three task managers, and
/// `clients`.
// The test files of other scenarios compile this module too.
#[allow(dead_code)]
pub fn pipeline_topology(clients: &[&str]) -> Topology {
    Topology {
        servers: [
            "broker-0", "broker-1", "broker-2", "jm", "tm-0", "tm-1", "tm-2",
        ]
        .map(String::from)
        .to_vec(),
        clients: clients.iter().map(ToString::to_string).collect(),
    }
}

/// Runs one seed of `scenario`.
pub fn run(scenario: &str, spec: RunSpec) -> RunReport {
    (find(scenario).expect("registered").run)(&spec)
}

/// Runs seeds `range` on two threads; returns the reports in seed order.
pub fn sweep(scenario: &str, range: std::ops::Range<u64>, mutant: Option<&str>) -> Vec<RunReport> {
    let seeds: Vec<u64> = range.collect();
    let mut out: Vec<RunReport> = std::thread::scope(|s| {
        let handles: Vec<_> = seeds
            .chunks(seeds.len().div_ceil(2).max(1))
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|&seed| {
                            run(
                                scenario,
                                RunSpec {
                                    seed,
                                    plan: None,
                                    mutant: mutant.map(String::from),
                                },
                            )
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

/// Asserts that seeds `0..WEIR_SEEDS` (default `default`) all pass; returns their reports.
pub fn every_seed_passes(scenario: &str, default: u64) -> Vec<RunReport> {
    let n = env_u64("WEIR_SEEDS", default);
    let reports = sweep(scenario, 0..n, None);
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.passed)
        .map(|r| {
            format!(
                "seed {}: {}\n  {}",
                r.seed,
                r.violations.first().cloned().unwrap_or_default(),
                r.replay
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {n} seeds failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    reports
}

/// [`every_seed_passes`], and the seeds acknowledged more than 100 sends each on average.
// Not every test file sweeps a queue-like scenario.
#[allow(dead_code)]
pub fn every_seed_passes_with_progress(scenario: &str, default: u64) {
    let reports = every_seed_passes(scenario, default);
    let acked: u64 = reports.iter().map(|r| r.ops.ok).sum();
    assert!(
        acked > reports.len() as u64 * 100,
        "the workload makes progress: {acked} acknowledged sends"
    );
}

/// Asserts that a seed replays bit for bit and that another seed differs.
pub fn same_seed_same_hash(scenario: &str, seed: u64) {
    let a = run(
        scenario,
        RunSpec {
            seed,
            ..Default::default()
        },
    );
    let b = run(
        scenario,
        RunSpec {
            seed,
            ..Default::default()
        },
    );
    assert_eq!(
        a.trace_hash, b.trace_hash,
        "seed {seed} replays bit for bit"
    );
    assert_eq!(a.violations, b.violations);
    assert_eq!(a.ops, b.ops);
    let c = run(
        scenario,
        RunSpec {
            seed: seed + 1,
            ..Default::default()
        },
    );
    assert_ne!(
        a.trace_hash, c.trace_hash,
        "different seeds take different paths"
    );
}

/// Asserts that `mutant` of `scenario` is caught within seeds `0..limit`, and prints where.
#[allow(dead_code)]
pub fn assert_caught(scenario: &str, mutant: &str, limit: u64) {
    let caught = first_catch(scenario, mutant, limit);
    eprintln!("{mutant} caught at seed {caught:?}");
    assert!(
        caught.is_some(),
        "{scenario}: {mutant} passed seeds 0..{limit}"
    );
}

/// The first seed in `0..limit` at which `mutant` is caught.
pub fn first_catch(scenario: &str, mutant: &str, limit: u64) -> Option<u64> {
    (0..limit).step_by(2).find_map(|start| {
        sweep(scenario, start..(start + 2).min(limit), Some(mutant))
            .into_iter()
            .find(|r| !r.passed)
            .map(|r| r.seed)
    })
}

/// A proptest runner for `cases` generated fault plans. Its generator is seeded from
/// `WEIR_PROPTEST_SEED` (default 0), so a run generates the same plans on every machine; set
/// another seed to explore other plans.
pub fn plan_runner(cases: u32, max_shrink_iters: u32) -> TestRunner {
    let seed = env_u64("WEIR_PROPTEST_SEED", 0);
    eprintln!("fault plans from WEIR_PROPTEST_SEED={seed}");
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        max_shrink_iters,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

/// Runs `WEIR_PROPTEST_CASES` (default `default`) generated fault plans; each must pass.
pub fn generated_plans_pass(scenario: &str, topo: &Topology, duration_ms: u64, default: u64) {
    let cases = env_u64("WEIR_PROPTEST_CASES", default) as u32;
    let mut runner = plan_runner(cases, Config::default().max_shrink_iters);
    let result = runner.run(&FaultPlan::strategy(topo, duration_ms, 12), |plan| {
        let r = run(
            scenario,
            RunSpec {
                seed: 11,
                plan: Some(plan),
                mutant: None,
            },
        );
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
