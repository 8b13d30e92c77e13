//! Subcommands.

mod bench;
mod broker;
mod check;
mod cluster;
mod job;
mod plot;
mod produce;
mod replay;
mod report;
mod sim;
mod sweep;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Weir: deterministic simulation and benchmarks for stream processing.
#[derive(Parser, Debug)]
#[command(name = "weir", version, about)]
pub struct Cli {
    /// Log more (repeat for more detail).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the simulator scenarios.
    Scenarios,
    /// Run a scenario over a range of seeds.
    Sim(sim::SimArgs),
    /// Run one seed again and show its timeline.
    Replay(replay::ReplayArgs),
    /// Serve the Kafka protocol on real sockets, with the file-backed log.
    Broker(broker::BrokerArgs),
    /// Start a local cluster of broker processes and restart any that dies.
    Cluster(cluster::ClusterArgs),
    /// Run a workload and its checkers against any Kafka-protocol cluster.
    Check(check::CheckArgs),
    /// Write a workload's generated events to a topic on any Kafka-protocol cluster.
    Produce(produce::ProduceArgs),
    /// Run a job on a local job manager and task manager against any Kafka-protocol cluster.
    Job(job::JobArgs),
    /// Benchmarks run from the command line: execution models compared, input files shared
    /// with peer engines.
    Bench(bench::BenchArgs),
    /// Write reports/framework-comparison.md from scratch.
    Report(report::ReportArgs),
}

impl Cli {
    /// Log level with no `-v`: simulated faults make the broker log warnings by design, so
    /// the simulator is quiet by default; a real broker logs what it does.
    fn quiet(&self) -> bool {
        !matches!(
            self.command,
            Some(Command::Broker(_)) | Some(Command::Cluster(_))
        )
    }
}

/// Sets up logging to stderr; `RUST_LOG` overrides the level.
pub fn init_logging(cli: &Cli) {
    let default = match cli.verbose + u8::from(!cli.quiet()) {
        0 => "error",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(SimTime)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Log timestamps in simulated milliseconds inside a simulation (where wall time means
/// nothing), and in wall-clock seconds since the start outside one.
struct SimTime;

impl tracing_subscriber::fmt::time::FormatTime for SimTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        match turmoil::sim_elapsed() {
            Some(t) => write!(w, "sim {:>8} ms", t.as_millis()),
            None => tracing_subscriber::fmt::time::SystemTime.format_time(w),
        }
    }
}

/// Wall-clock milliseconds since the Unix epoch (0 before it): real-mode commands start
/// their clocks and seeds from it.
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Today's date (UTC) as YYYY-MM-DD, for reports, as the system's `date` gives it.
fn today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%F"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "(date unknown)".into(), |d| d.trim().to_string())
}

/// Runs `work` to completion on `runtime` (or reports why the runtime could not start), and
/// turns its result into an exit code, printing the error under `command`'s name.
fn block_on<F>(
    command: &str,
    runtime: std::io::Result<tokio::runtime::Runtime>,
    work: F,
) -> ExitCode
where
    F: std::future::Future<Output = Result<(), String>>,
{
    let outcome = match runtime {
        Ok(r) => r.block_on(work),
        Err(e) => Err(format!("cannot start the runtime: {e}")),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir {command}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        None => sweep::run(),
        Some(Command::Scenarios) => {
            for s in weir_sim::scenario::all() {
                println!("{:<20} {}", s.name, s.description);
            }
            ExitCode::SUCCESS
        }
        Some(Command::Sim(args)) => sim::run(args),
        Some(Command::Replay(args)) => replay::run(args),
        Some(Command::Broker(args)) => broker::run(args),
        Some(Command::Cluster(args)) => cluster::run(args),
        Some(Command::Check(args)) => check::run(args),
        Some(Command::Produce(args)) => produce::run(args),
        Some(Command::Job(args)) => job::run(args),
        Some(Command::Bench(args)) => bench::run(args),
        Some(Command::Report(args)) => report::run(args),
    }
}
