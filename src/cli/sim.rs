//! `weir sim`: run a scenario over a range of seeds, in parallel, and report.

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use weir_sim::report::RunReport;
use weir_sim::scenario::{RunSpec, Scenario, find};

/// Arguments of `weir sim`.
#[derive(Args, Debug)]
pub struct SimArgs {
    /// Scenario name (see `weir scenarios`).
    #[arg(long)]
    scenario: String,
    /// Seeds to run, as `A..B` (B excluded) or a single seed.
    #[arg(long, default_value = "0..10")]
    seeds: String,
    /// Print one JSON object per seed instead of a summary.
    #[arg(long)]
    json: bool,
    /// Run a deliberately broken variant of the system.
    #[arg(long)]
    mutant: Option<String>,
    /// Seeds run at once (default: one per core).
    #[arg(long)]
    jobs: Option<usize>,
}

/// Parses `A..B` or `N` into a seed range.
pub fn parse_seeds(s: &str) -> Result<std::ops::Range<u64>, String> {
    match s.split_once("..") {
        Some((a, b)) => {
            let a: u64 = a.trim().parse().map_err(|_| format!("bad seed {a:?}"))?;
            let b: u64 = b.trim().parse().map_err(|_| format!("bad seed {b:?}"))?;
            if b <= a {
                return Err(format!("empty seed range {s}"));
            }
            Ok(a..b)
        }
        None => {
            let n: u64 = s.trim().parse().map_err(|_| format!("bad seed {s:?}"))?;
            Ok(n..n + 1)
        }
    }
}

/// Finds a scenario and checks a mutant name against it.
pub fn resolve(scenario: &str, mutant: Option<&str>) -> Result<&'static Scenario, String> {
    let s = find(scenario)
        .ok_or_else(|| format!("unknown scenario {scenario:?}; see `weir scenarios`"))?;
    if let Some(m) = mutant
        && !s.mutants.iter().any(|(n, _)| *n == m)
    {
        let known: Vec<&str> = s.mutants.iter().map(|(n, _)| *n).collect();
        return Err(format!("{scenario} has no mutant {m:?}; it has {known:?}"));
    }
    Ok(s)
}

/// Runs `spec` and times it.
pub fn run_one(scenario: &Scenario, spec: &RunSpec) -> RunReport {
    let t = Instant::now();
    let mut r = (scenario.run)(spec);
    r.wall_ms = t.elapsed().as_millis() as u64;
    r
}

/// Runs every seed in `seeds` on `jobs` threads, calling `done` as each finishes.
pub fn run_seeds(
    scenario: &Scenario,
    seeds: std::ops::Range<u64>,
    mutant: Option<String>,
    jobs: usize,
    done: &(dyn Fn(&RunReport) + Sync),
) -> Vec<RunReport> {
    let next = AtomicU64::new(seeds.start);
    let out = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::SeqCst);
                    if seed >= seeds.end {
                        return;
                    }
                    let r = run_one(
                        scenario,
                        &RunSpec {
                            seed,
                            plan: None,
                            mutant: mutant.clone(),
                        },
                    );
                    done(&r);
                    out.lock().unwrap_or_else(|p| p.into_inner()).push(r);
                }
            });
        }
    });
    let mut v = out.into_inner().unwrap_or_else(|p| p.into_inner());
    v.sort_by_key(|r| r.seed);
    v
}

/// Default parallelism: one run per core.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub fn run(args: SimArgs) -> ExitCode {
    let (scenario, seeds) = match resolve(&args.scenario, args.mutant.as_deref())
        .and_then(|s| Ok((s, parse_seeds(&args.seeds)?)))
    {
        Ok(x) => x,
        Err(e) => {
            eprintln!("weir sim: {e}");
            return ExitCode::from(2);
        }
    };
    let total = seeds.end - seeds.start;
    let started = Instant::now();
    let bar = (!args.json && std::io::stderr().is_terminal()).then(|| {
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} seeds {msg} [{elapsed_precise}]")
                .expect("valid template"),
        );
        b
    });
    let failures = AtomicU64::new(0);
    let json = args.json;
    let reports = run_seeds(
        scenario,
        seeds,
        args.mutant.clone(),
        args.jobs.unwrap_or_else(default_jobs),
        &|r| {
            if !r.passed {
                failures.fetch_add(1, Ordering::SeqCst);
            }
            if json {
                println!("{}", serde_json::to_string(r).expect("reports serialize"));
            }
            if let Some(b) = &bar {
                b.inc(1);
                b.set_message(format!("{} failed", failures.load(Ordering::SeqCst)));
            }
        },
    );
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let failed: Vec<&RunReport> = reports.iter().filter(|r| !r.passed).collect();
    if !json {
        let sim_s: f64 = reports.iter().map(|r| r.sim_ms as f64 / 1000.0).sum();
        let ops: u64 = reports.iter().map(|r| r.ops.sends + r.ops.polled).sum();
        println!(
            "{}{}: {} seeds, {} passed, {} failed; {:.0} s simulated, {} operations, {:.1} s wall",
            scenario.name,
            args.mutant
                .as_deref()
                .map(|m| format!(" (mutant {m})"))
                .unwrap_or_default(),
            reports.len(),
            reports.len() - failed.len(),
            failed.len(),
            sim_s,
            ops,
            started.elapsed().as_secs_f64()
        );
    }
    for r in &failed {
        eprintln!(
            "seed {} FAILED ({} violations), first: {}",
            r.seed,
            r.violations.len(),
            r.violations.first().map_or("", |v| v.as_str())
        );
        eprintln!("  replay: {}", r.replay);
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
