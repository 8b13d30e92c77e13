//! `weir` with no arguments: a sweep over every scenario with a modest number of seeds.

use super::sim::{default_jobs, run_seeds};
use std::process::ExitCode;
use std::time::Instant;

/// Seeds per scenario in the default sweep; `WEIR_SEEDS` overrides.
const SWEEP_SEEDS: u64 = 20;

pub fn run() -> ExitCode {
    let seeds = std::env::var("WEIR_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SWEEP_SEEDS);
    println!("Weir default sweep: every scenario, seeds 0..{seeds} (set WEIR_SEEDS to change)\n");
    println!(
        "{:<20} {:>6} {:>7} {:>7} {:>10} {:>10} {:>9}",
        "scenario", "seeds", "passed", "failed", "sim s", "ops", "wall s"
    );
    let mut any_failed = false;
    for s in weir_sim::scenario::all() {
        let t = Instant::now();
        let reports = run_seeds(s, 0..seeds, None, default_jobs(), &|_| {});
        let failed: Vec<_> = reports.iter().filter(|r| !r.passed).collect();
        any_failed |= !failed.is_empty();
        println!(
            "{:<20} {:>6} {:>7} {:>7} {:>10.0} {:>10} {:>9.1}",
            s.name,
            reports.len(),
            reports.len() - failed.len(),
            failed.len(),
            reports
                .iter()
                .map(|r| r.sim_ms as f64 / 1000.0)
                .sum::<f64>(),
            reports
                .iter()
                .map(|r| r.ops.sends + r.ops.polled)
                .sum::<u64>(),
            t.elapsed().as_secs_f64()
        );
        for r in failed {
            println!(
                "  seed {} failed: {}\n    replay: {}",
                r.seed,
                r.violations.first().map_or("", |v| v.as_str()),
                r.replay
            );
        }
    }
    if any_failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
