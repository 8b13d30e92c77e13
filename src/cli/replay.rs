//! `weir replay`: run one seed again and print its timeline, violations and trace hash.

use super::sim::{resolve, run_one};
use clap::Args;
use std::process::ExitCode;
use weir_sim::fault::FaultPlan;
use weir_sim::scenario::RunSpec;

/// Without `--trace`, long timeline lines are cut to this many characters.
const LINE_CHARS_MAX: usize = 160;
/// Without `--trace`, at most this many violations are printed.
const VIOLATIONS_SHOWN: usize = 40;

fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{} ...", &s[..i]),
        None => s.to_string(),
    }
}

/// Arguments of `weir replay`.
#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// Scenario name.
    #[arg(long)]
    scenario: String,
    /// The seed.
    #[arg(long)]
    seed: u64,
    /// Print every client operation, not just faults and the final read.
    #[arg(long)]
    trace: bool,
    /// Run a deliberately broken variant of the system.
    #[arg(long)]
    mutant: Option<String>,
    /// A fault plan (JSON) to use instead of the seed's own.
    #[arg(long)]
    plan: Option<String>,
}

pub fn run(args: ReplayArgs) -> ExitCode {
    let scenario = match resolve(&args.scenario, args.mutant.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("weir replay: {e}");
            return ExitCode::from(2);
        }
    };
    let plan = match args
        .plan
        .as_deref()
        .map(serde_json::from_str::<FaultPlan>)
        .transpose()
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("weir replay: --plan is not a fault plan: {e}");
            return ExitCode::from(2);
        }
    };
    let r = run_one(
        scenario,
        &RunSpec {
            seed: args.seed,
            plan,
            mutant: args.mutant.clone(),
        },
    );
    println!("timeline (simulated ms):");
    for e in &r.trace {
        let client_op =
            !["nemesis", "drainer", "job", "metrics", "operator"].contains(&e.source.as_str());
        if args.trace {
            println!("{:>8}  {:<12} {}", e.at_ms, e.source, e.what);
        } else if !client_op {
            println!(
                "{:>8}  {:<12} {}",
                e.at_ms,
                e.source,
                clip(&e.what, LINE_CHARS_MAX)
            );
        }
    }
    if let Some(mix) = &r.mix {
        println!(
            "fault mix: {}",
            serde_json::to_string(mix).expect("serializes")
        );
    }
    println!(
        "ops: {} sends ({} ok, {} failed, {} unknown), {} records polled",
        r.ops.sends, r.ops.ok, r.ops.failed, r.ops.unknown, r.ops.polled
    );
    for (name, value) in &r.metrics {
        println!("{name}: {value}");
    }
    println!("sim {} ms, wall {} ms", r.sim_ms, r.wall_ms);
    if r.passed {
        println!("PASSED");
    } else {
        println!("FAILED with {} violations:", r.violations.len());
        let shown = if args.trace {
            r.violations.len()
        } else {
            VIOLATIONS_SHOWN
        };
        for v in r.violations.iter().take(shown) {
            println!("  {v}");
        }
        if r.violations.len() > shown {
            println!(
                "  ... and {} more (--trace shows all)",
                r.violations.len() - shown
            );
        }
    }
    println!("trace hash {}", r.trace_hash);
    if r.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
