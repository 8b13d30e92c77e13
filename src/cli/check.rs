//! `weir check`: the simulator's workloads and checkers against any Kafka-protocol cluster.

use clap::{Args, ValueEnum};
use std::process::ExitCode;
use weir_sim::live::{self, LiveSpec, Workload};

/// Longest workload phase accepted, in seconds. The checkers need the whole history in
/// memory; the queue workload records about a thousand operations a second, so an hour is a
/// few million of them.
const DURATION_MAX_S: u64 = 3600;

/// The workloads `weir check` runs.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum WorkloadArg {
    /// Unique values under keys: nothing acknowledged lost, nothing duplicated, offsets dense.
    Queue,
    /// Transactions: committed ones whole, aborted ones invisible, no G1a, G0 or G1c.
    Transactions,
}

/// The queue producers' acknowledgement level.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AcksArg {
    /// acks=all, idempotent.
    All,
    /// acks=1 from the leader alone, not idempotent.
    #[value(name = "1")]
    One,
}

/// Settings of `weir check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Bootstrap brokers, HOST:PORT, comma-separated.
    #[arg(long, required = true, value_delimiter = ',')]
    pub bootstrap: Vec<String>,
    /// The workload and its checkers.
    #[arg(long, value_enum)]
    pub workload: WorkloadArg,
    /// Length of the workload phase: `90s`, `2m`, `500ms`, or seconds.
    #[arg(long, default_value = "30s", value_parser = parse_duration_ms)]
    pub duration: u64,
    /// Acknowledgements the queue producers ask for.
    #[arg(long, value_enum, default_value = "all")]
    pub acks: AcksArg,
    /// Replicas of the run's topic; -1 takes the cluster's default.
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    pub replication_factor: i16,
    /// Seed of the workload's choices; the clock by default.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Parses `90s`, `2m`, `500ms` or a number of seconds into milliseconds.
fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let (number, unit_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1_000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else {
        (s, 1_000)
    };
    let n: u64 = number
        .parse()
        .map_err(|e| format!("{s:?}: not a duration ({e})"))?;
    let ms = n.saturating_mul(unit_ms);
    if ms == 0 || ms > DURATION_MAX_S * 1_000 {
        return Err(format!(
            "{s:?}: must be between 1 ms and {DURATION_MAX_S} s"
        ));
    }
    Ok(ms)
}

/// Runs the check; exits 1 when it finds anomalies.
pub fn run(args: CheckArgs) -> ExitCode {
    let epoch_ms = super::wall_ms();
    let seed = args.seed.unwrap_or(epoch_ms as u64);
    let spec = LiveSpec {
        bootstrap: args.bootstrap,
        workload: match args.workload {
            WorkloadArg::Queue => Workload::Queue,
            WorkloadArg::Transactions => Workload::Transactions,
        },
        duration_ms: args.duration,
        seed,
        acks: match args.acks {
            AcksArg::All => -1,
            AcksArg::One => 1,
        },
        replication_factor: args.replication_factor,
        epoch_ms,
        run_id: format!("{seed:x}"),
    };
    eprintln!(
        "weir check: {:?} workload for {} ms against {}, seed {seed}",
        spec.workload,
        spec.duration_ms,
        spec.bootstrap.join(",")
    );
    let report = match live::run(&spec) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("weir check: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("a report serialises")
        );
    } else {
        let o = report.ops;
        println!(
            "topic {}: {} sends ({} ok, {} failed, {} unknown), {} records polled",
            report.topic, o.sends, o.ok, o.failed, o.unknown, o.polled
        );
        if let Some((committed, aborted, unknown)) = report.txns {
            println!("transactions: {committed} committed, {aborted} aborted, {unknown} unknown");
        }
        if report.violations.is_empty() {
            println!("no anomalies found");
        } else {
            println!("{} anomalies:", report.violations.len());
            for v in &report.violations {
                println!("  {v}");
            }
        }
    }
    if report.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
