//! `weir bench`: measurements run from the command line rather than from criterion.
//!
//! `compare` runs one job under each execution model in the simulator. `orders-csv` writes
//! the orders workload as a CSV file, and `window-csv` runs the stream engine's keyed
//! tumbling-window count and sum over such a file: together they let another engine (the
//! Flink peer in `benches/peers/flink.sh`) and Weir read the very same input.

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::io::IsTerminal;
use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use weir_engine::state::CountSum;
use weir_engine::{CollectSink, StreamEnv, WatermarkStrategy, WindowAssigner};
use weir_seams::clock::Clock;
use weir_sim::compare::ModelFigures;
use weir_workloads::generator::{GeneratorConfig, Workload};

/// The CSV columns, in order (the file has no header line, which Flink's CSV format would
/// read as a record).
const CSV_COLUMNS: &str = "customer_id,total_amount,event_ms";
/// Records the source hands the job at once.
/// Longest CSV line accepted, in bytes: a line is three short fields.
const LINE_BYTES_MAX: usize = 256;

/// Settings of `weir bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Write the orders workload to a CSV file: customer_id,total_amount,event_ms, no header.
    OrdersCsv(OrdersCsvArgs),
    /// Run a keyed tumbling-window count and sum over such a CSV file on one core and print
    /// the figures as one JSON line.
    WindowCsv(WindowCsvArgs),
    /// Run the eos-pipeline job under each execution model in the simulator, without faults
    /// and under a fault plan per seed that every model shares, and print the figures.
    Compare(CompareArgs),
    /// Run the same job under each execution model on this machine (a `weir broker` process,
    /// real sockets and files, wall clock): paced input without and with crashes of the task
    /// manager, the broker and the job manager, then a backlog; print the figures.
    Real(RealArgs),
}

/// Settings of `weir bench real`.
#[derive(Args, Debug)]
pub struct RealArgs {
    /// The jobs, comma-separated: order-totals (whose latency is measured: its event time is
    /// the wall clock) or catalog jobs without a table (order-aggregates, nexmark-q5, ...).
    #[arg(long, value_delimiter = ',', default_value = "order-totals")]
    pub jobs: Vec<String>,
    /// Only these models (pipelined, micro-batch, kafka-streams, storm), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,
    /// Inputs per second of the paced runs.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate: u32,
    /// Length of a paced feed, in milliseconds; the backlog holds as many inputs.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1_000..=3_600_000))]
    pub feed_ms: u64,
    /// Runs of each model on each schedule.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub rounds: u64,
    /// Seed of the feeder's keys, amounts and disorder.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Scratch directory for the broker's data and the checkpoints (a fresh temporary one by
    /// default).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Also write the figures to this JSON file (`weir report` reads it from
    /// target/bench-real/models-real.json).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Settings of `weir bench compare`.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Seeds, as START..END.
    #[arg(long, default_value = "0..20")]
    pub seeds: String,
    /// Also write the figures to this JSON file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Settings of `weir bench orders-csv`.
#[derive(Args, Debug)]
struct OrdersCsvArgs {
    /// The file to write.
    #[arg(long)]
    out: PathBuf,
    /// Number of events.
    #[arg(long)]
    events: u64,
    /// Seed of the generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Distinct customers.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Events per second of event time.
    #[arg(long, default_value_t = 1_000.0)]
    event_rate: f64,
    /// How far behind the event-time clock an event may be, in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    out_of_orderness_ms: i64,
}

/// Settings of `weir bench window-csv`.
#[derive(Args, Debug)]
struct WindowCsvArgs {
    /// The CSV file, as `orders-csv` writes it.
    #[arg(long)]
    input: PathBuf,
    /// Window length, in seconds.
    #[arg(long, default_value_t = 300)]
    window_s: u64,
    /// How far the watermark trails the largest event time seen, in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    out_of_orderness_ms: u64,
}

/// What `window-csv` measured.
#[derive(Debug, Serialize, Deserialize)]
struct WindowFigures {
    engine: &'static str,
    events: u64,
    windows: u64,
    /// Reading the file into memory, not part of the job.
    read_s: f64,
    /// The job: parsing, keying, windowing, aggregating, emitting.
    job_s: f64,
    events_per_s: f64,
}

/// Runs `weir bench`.
pub fn run(args: BenchArgs) -> ExitCode {
    let outcome = match args.command {
        BenchCommand::OrdersCsv(a) => orders_csv(&a),
        BenchCommand::WindowCsv(a) => window_csv(&a),
        BenchCommand::Compare(a) => compare(&a).map(|figures| {
            print!("{}", super::report::models_table(&figures));
        }),
        BenchCommand::Real(a) => real(&a).map(|figures| {
            print!("{}", super::report::models_table(&figures));
        }),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the models' comparison in the simulator, with progress on stderr, and writes the JSON
/// file if asked.
pub fn compare(a: &CompareArgs) -> Result<Vec<ModelFigures>, String> {
    let seeds = super::sim::parse_seeds(&a.seeds)?;
    let runs = (seeds.end - seeds.start) * weir_sim::compare::runs_per_seed();
    let bar = ProgressBar::new(runs).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} runs {msg} [{elapsed_precise}]")
            .map_err(|e| e.to_string())?,
    );
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let figures = weir_sim::compare::compare(seeds, &|done: &str| {
        bar.inc(1);
        bar.set_message(done.to_string());
    });
    bar.finish_and_clear();
    if let Some(path) = &a.json {
        let body = serde_json::to_vec_pretty(&figures).map_err(|e| e.to_string())?;
        std::fs::write(path, body).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(figures)
}

/// Runs the models' comparison on this machine, with each run's outcome on stderr, and writes
/// the JSON file if asked.
fn real(a: &RealArgs) -> Result<Vec<ModelFigures>, String> {
    let weir = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("weir-bench-real-{}", std::process::id())),
    };
    let comparison = weir_sim::compare::LiveComparison {
        weir,
        dir: dir.clone(),
        jobs: a.jobs.clone(),
        models: a.models.clone(),
        inputs_per_s: a.rate,
        feed_ms: a.feed_ms,
        rounds: a.rounds,
        seed: a.seed,
    };
    let figures = weir_sim::compare::compare_live(&comparison, &|done: &str| eprintln!("{done}"));
    if a.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let figures = figures?;
    if let Some(path) = &a.json {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        let body = serde_json::to_vec_pretty(&RealRun {
            // As a user types it, whatever the binary's path.
            command: std::iter::once("weir".to_string())
                .chain(std::env::args().skip(1))
                .collect::<Vec<_>>()
                .join(" "),
            date: super::today(),
            figures: figures.clone(),
        })
        .map_err(|e| e.to_string())?;
        std::fs::write(path, body).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(figures)
}

/// What `weir bench real --json` writes: the figures, and how and when they were made.
#[derive(Debug, Serialize, Deserialize)]
pub struct RealRun {
    /// The command line.
    pub command: String,
    /// The day it ran.
    pub date: String,
    /// The figures.
    pub figures: Vec<ModelFigures>,
}

#[derive(Deserialize)]
struct OrderValue {
    customer_id: String,
    total_amount: f64,
}

fn orders_csv(a: &OrdersCsvArgs) -> Result<(), String> {
    let config = GeneratorConfig {
        rate_per_s: a.event_rate,
        keys: a.keys,
        out_of_orderness_ms: a.out_of_orderness_ms,
        ..GeneratorConfig::default()
    };
    let events = Workload::Orders.events(a.seed, &config, a.events)?;
    let file = std::fs::File::create(&a.out)
        .map_err(|e| format!("cannot create {}: {e}", a.out.display()))?;
    let mut out = BufWriter::new(file);
    let io = |e: std::io::Error| format!("cannot write {}: {e}", a.out.display());
    for event in events {
        let order: OrderValue = serde_json::from_slice(&event.value)
            .map_err(|e| format!("a generated order does not parse: {e}"))?;
        writeln!(
            out,
            "{},{:.2},{}",
            order.customer_id, order.total_amount, event.timestamp_ms
        )
        .map_err(io)?;
    }
    out.flush().map_err(io)?;
    eprintln!(
        "wrote {} orders (seed {}, {} customers, {} events/s of event time, disorder up to {} ms) to {}",
        a.events,
        a.seed,
        a.keys,
        a.event_rate,
        a.out_of_orderness_ms,
        a.out.display()
    );
    Ok(())
}

/// One parsed CSV line (its event time is the record's timestamp).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Order {
    customer: String,
    total: f64,
}

/// The event time of a CSV line: its last field.
fn event_ms(line: &str) -> Option<i64> {
    line.rsplit(',').next()?.parse().ok()
}

/// Parses `customer_id,total_amount,event_ms`.
fn parse(line: &str) -> Result<Order, String> {
    let mut fields = line.split(',');
    let mut next = |name: &str| {
        fields
            .next()
            .ok_or_else(|| format!("no {name} in line {line:?}"))
    };
    let customer = next("customer_id")?.to_string();
    let total = next("total_amount")?
        .parse()
        .map_err(|e| format!("total_amount in line {line:?}: {e}"))?;
    next("event_ms")?
        .parse::<i64>()
        .map_err(|e| format!("event_ms in line {line:?}: {e}"))?;
    Ok(Order { customer, total })
}

fn window_csv(a: &WindowCsvArgs) -> Result<(), String> {
    let started = Instant::now();
    let file = std::fs::File::open(&a.input)
        .map_err(|e| format!("cannot open {}: {e}", a.input.display()))?;
    let mut lines = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| format!("cannot read {}: {e}", a.input.display()))?;
        if line.len() > LINE_BYTES_MAX {
            return Err(format!(
                "line {} is {} bytes; at most {LINE_BYTES_MAX} are accepted",
                n + 1,
                line.len()
            ));
        }
        lines.push(line);
    }
    // Malformed lines fail the run before it is timed: a bench must not skip input.
    for (n, line) in lines.iter().enumerate() {
        parse(line).map_err(|e| format!("line {}: {e} (the columns are {CSV_COLUMNS})", n + 1))?;
    }
    let events = lines.len() as u64;
    let read_s = started.elapsed().as_secs_f64();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let (sink, windows) = CollectSink::new();
    let job_started = Instant::now();
    runtime.block_on(async {
        let env = StreamEnv::new("window-csv");
        // Watermarks come from the source, so it reads each line's event time (its last
        // field) there; the map parses the whole line, as a CSV format would.
        let strategy = WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_millis(
            a.out_of_orderness_ms,
        ))
        .with_timestamp_assigner(|line: &String, _| {
            event_ms(line).expect("every line parsed before the run")
        });
        env.from_collection(lines, strategy)
            .map(|line: String| parse(&line).expect("every line parsed before the run"))
            .key_by(|o: &Order| o.customer.clone())
            .window(WindowAssigner::tumbling(Duration::from_secs(a.window_s)))
            .aggregate(CountSum::new(|o: &Order| o.total))
            .sink_to(sink);
        let job = env.build().map_err(|e| e.to_string())?;
        job.local(Clock::starting_at(0), None)?
            .run()
            .await
            .map_err(|e| format!("the job failed: {e}"))
    })?;
    let job_s = job_started.elapsed().as_secs_f64();
    let figures = WindowFigures {
        engine: "weir",
        events,
        windows: windows.len() as u64,
        read_s,
        job_s,
        events_per_s: events as f64 / job_s.max(f64::MIN_POSITIVE),
    };
    let line = serde_json::to_string(&figures).map_err(|e| e.to_string())?;
    println!("{line}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_parses_and_bad_lines_say_why() {
        let line = "customer-7,12.50,1700000000123";
        let o = parse(line).unwrap();
        assert_eq!((o.customer.as_str(), o.total), ("customer-7", 12.5));
        assert_eq!(event_ms(line), Some(1_700_000_000_123));
        assert!(
            parse("customer-7,abc,1")
                .unwrap_err()
                .contains("total_amount")
        );
        assert!(parse("customer-7,1.0").unwrap_err().contains("event_ms"));
    }
}
