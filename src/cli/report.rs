//! `weir report`: writes `reports/framework-comparison.md` from scratch. It runs the execution
//! models' comparison in the simulator (deterministic: the same seeds give the same figures),
//! draws its charts as SVG, and adds what the Flink peer run and `cargo bench` left behind, if
//! they ran, saying so when they did not.

use super::bench::{CompareArgs, RealRun, compare};
use super::plot;
use clap::Args;
use serde::Deserialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use weir_sim::compare::ModelFigures;

/// Files under the criterion directory read at most: one per bench, and there are dozens.
const CRITERION_FILES_MAX: usize = 10_000;

/// Settings of `weir report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Seeds of the simulated comparison, as START..END.
    #[arg(long, default_value = "0..20")]
    seeds: String,
    /// Directory the report and its charts go to.
    #[arg(long, default_value = "reports")]
    out: PathBuf,
    /// Where the Flink peer run left `flink-peer.json`.
    #[arg(long, default_value = "target/peers")]
    peers: PathBuf,
    /// Where `cargo bench` left criterion's results.
    #[arg(long, default_value = "target/criterion")]
    criterion: PathBuf,
    /// Where `weir bench real --json` left the figures from this machine.
    #[arg(long, default_value = "target/bench-real/models-real.json")]
    real: PathBuf,
}

/// Runs `weir report`.
pub fn run(args: ReportArgs) -> ExitCode {
    match write_report(&args) {
        Ok(path) => {
            eprintln!("wrote {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weir report: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_report(args: &ReportArgs) -> Result<PathBuf, String> {
    let figures = compare(&CompareArgs {
        seeds: args.seeds.clone(),
        json: None,
    })?;
    let charts = args.out.join("figures");
    std::fs::create_dir_all(&charts)
        .map_err(|e| format!("cannot create {}: {e}", charts.display()))?;
    plot::latency(
        &figures,
        "Result latency seen by a read_committed reader (simulated ms)",
        &charts.join("models-latency.svg"),
    )?;
    plot::bars(
        &figures,
        "Time from a failover to the next commit, p50 (simulated ms)",
        "ms",
        |f| f.recovery_ms.p50 as f64,
        &charts.join("models-recovery.svg"),
    )?;
    plot::bars(
        &figures,
        "Checkpoint, batch or commit duration, p50 (simulated ms)",
        "ms",
        |f| f.checkpoint_ms.p50 as f64,
        &charts.join("models-checkpoint.svg"),
    )?;
    let mut md = String::new();
    header(&mut md, &args.seeds);
    md.push_str(&models_table(&figures));
    discussion(&mut md, &figures);
    on_this_machine(&mut md, &args.real, &charts)?;
    flink_peer(&mut md, &args.peers.join("flink-peer.json"));
    criterion_summary(&mut md, &args.criterion)?;
    let path = args.out.join("framework-comparison.md");
    std::fs::write(&path, md).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}, {}", std::env::consts::OS)
}

fn header(md: &mut String, seeds: &str) {
    let today = super::today();
    let _ = write!(
        md,
        "# Execution models compared\n\n\
         Regenerate with `weir report --seeds {seeds}` (then `benches/peers/flink.sh` and \
         `cargo bench` add their sections when run first). Date: {today}. Machine: {}.\n\n\
         ## The folklore, and what Weir measures instead\n\n\
         The table usually quoted:\n\n\
         | Framework | Latency | Throughput |\n| --- | --- | --- |\n\
         | Kafka Streams | Low | High |\n| Flink | Very Low | Very High |\n\
         | Spark Streaming | Medium | Very High |\n| Storm | Low | Medium |\n\n\
         Weir runs the same jobs under each engine's execution model, with the same input and the \
         same faults. Four jobs run, each from a broker topic to a broker topic. \
         `order-totals` is `eos-pipeline`'s job: a keyed 1-second tumbling count and sum. Its \
         event time is simulated time and its windows are short, so a 20-second run closes many \
         of them and its latency has many samples. `order-aggregates` keeps valid orders above \
         100.00 and counts and sums them per customer in 5-minute tumbling windows. \
         `nexmark-q5` (hot items: the auctions with the most bids per sliding window, two \
         windowed stages) and `nexmark-q7` (the highest bid per window) run on generated \
         Nexmark events. These three run over generated events whose event time runs far ahead \
         of simulated time, so their latency is not comparable, but their correctness, \
         recoveries and commits are.\n\n\
         | model | stands for | commits | state after a failure | promise |\n| --- | --- | --- | --- | --- |\n\
         | pipelined | Flink | a checkpoint every 1 s; the sink's transaction commits when it completes | the last completed checkpoint | exactly once |\n\
         | micro-batch | Spark Structured Streaming | a batch per 1 s trigger, its range in an offset log first; its checkpoint is its commit | the last completed batch; a logged batch re-runs its range | exactly once |\n\
         | kafka-streams | Kafka Streams (`exactly_once_v2`) | each subtask, every 100 ms (the default): output, changelog and offsets in one transaction | each subtask's changelog and its group's offsets | exactly once for what it does not drop as late |\n\
         | storm | Storm | sources commit offsets below their open tuple trees every 1 s; sinks write without transactions | nothing: what was not acknowledged is replayed | at least once |\n\n\
         Kafka Streams closes a window when its subtask's stream time (the largest event time \
         it has read) passes the window's end by the grace period; here the grace equals the \
         bound on disorder the other models' watermarks allow. Storm's windows hold their \
         tuples unacknowledged until they fire (its message timeout, 30 s, outlasts them).\n\n\
         ### In the simulator\n\n\
         Each model runs seeds `{seeds}` twice: once with no faults, and once under the fault \
         plan each seed draws. The plan strikes every model alike: crashes, partitions, pauses, \
         latency and disk faults, then a heal at 20 s. Time is simulated. CPU is free; the \
         network takes 1–5 ms per message (more under latency faults) and a disk sync up to \
         8 ms. Input of `order-totals`: about 100 records per simulated second for 20 s, 16 keys, \
         up to 200 ms out of order, with the watermark (Kafka Streams: the grace) 500 ms \
         behind.\n\n\
         - **latency**: from a result's event time (its window's end) to the moment a \
         read_committed reader outside the faults first sees it, in an hdrhistogram over every \
         result of every seed;\n\
         - **runs passed**: runs (seeds) whose output passed the exactly-once check (Storm promises \
         less, so the check measures how far it falls short);\n\
         - **dup / lost / wrong**: results the checker found committed twice, never, or with \
         figures the input does not give (a window that lost rows, or counted some twice);\n\
         - **late**: input rows the windows dropped as late;\n\
         - **recovery**: from a failover to the next completed checkpoint (Kafka Streams and \
         Storm: the next commit of any subtask);\n\
         - **commit**: a checkpoint from trigger to completion (micro-batch: the batch's whole \
         run; Kafka Streams: one subtask's transaction commit; Storm: one source's offset \
         commit);\n\
         - **inputs/s**: input records over the simulated time to the job's end. The feeder \
         paces the input, so this shows how long faults delay the finish, not a peak rate.\n\n",
        machine()
    );
}

/// The comparison as a markdown table.
pub fn models_table(figures: &[ModelFigures]) -> String {
    let mut md = String::from(
        "| job | model | faults | runs passed | latency p50 / p99 / p99.9 / max (ms) | dup / lost / wrong | late | recovery p50 / max (ms), count | commit p50 / max (ms) | inputs/s |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for f in figures {
        let latency = f.latency_ms.as_ref().map_or_else(
            || "not measured".to_string(),
            |l| format!("{} / {} / {} / {}", l.p50, l.p99, l.p999, l.max),
        );
        let r = &f.recovery_ms;
        let c = &f.checkpoint_ms;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {}/{} | {latency} | {} / {} / {} | {} | {} / {}, {} | {} / {} | {:.1} |",
            f.job,
            f.model,
            f.schedule,
            f.passed,
            f.seeds,
            f.duplicates,
            f.losses,
            f.wrong,
            f.late_dropped,
            r.p50,
            r.max,
            r.count,
            c.p50,
            c.max,
            f.inputs_per_s
        );
    }
    md.push('\n');
    md
}

fn discussion(md: &mut String, figures: &[ModelFigures]) {
    md.push_str(
        "![latency](figures/models-latency.svg)\n\n\
         ![recovery](figures/models-recovery.svg)\n\n\
         ![checkpoint](figures/models-checkpoint.svg)\n\n\
         ### What the simulated figures show\n\n",
    );
    latency_ratios(md, figures);
    shortfalls(md, figures);
    let kept: Vec<&str> = weir_sim::compare::models()
        .into_iter()
        .map(|m| m.name)
        .filter(|m| {
            figures
                .iter()
                .filter(|f| f.model == *m)
                .all(ModelFigures::exactly_once)
        })
        .collect();
    let _ = writeln!(
        md,
        "- Exactly once in every run, with and without faults: {}.",
        if kept.is_empty() {
            "no model".to_string()
        } else {
            kept.join(", ")
        }
    );
    md.push_str(
        "- With exactly-once output, no result can become visible before the commit that \
         covers it. The floor on latency is therefore the commit interval plus the time the \
         watermark (or the grace) trails the events, not the processing time. The pipelined \
         and micro-batch models commit every second, Kafka Streams every 100 ms. The \
         micro-batch model also waits for its trigger before it reads a record, and advances \
         the watermark once per batch, from the batch before. Storm's sink writes without a \
         transaction, so a result is visible as soon as it is written: the lowest latency, \
         paid for with duplicates after a failure.\n\
         - Kafka Streams has no watermark that waits for the slowest input: a subtask's stream \
         time is the largest event time it has read, from whichever upstream subtask. After a \
         restart the upstream subtasks resume from different offsets, and rows that come \
         behind stream time by more than the grace are dropped (the table's late column). \
         The `kafka-streams` scenario runs the same job with a grace longer than the input, \
         where no row can be late, to check the transactions and the changelog alone. The \
         same drift happens without faults when the upstream subtasks read at different \
         paces in event time, as `order-aggregates`' generated input does.\n\
         - The tails under faults come from recovery. A result whose transaction was aborted \
         appears only after the job restarts and commits it again.\n\n",
    );
}

/// Each model's `order-totals` latency against the pipelined model's, per schedule.
fn latency_ratios(md: &mut String, figures: &[ModelFigures]) {
    let latency = |model: &str, schedule: &str| {
        figures
            .iter()
            .find(|f| f.model == model && f.schedule == schedule && f.latency_ms.is_some())
            .and_then(|f| f.latency_ms.as_ref())
    };
    for schedule in ["none", "shared faults"] {
        let Some(p) = latency("pipelined", schedule) else {
            continue;
        };
        for other in ["micro-batch", "kafka-streams", "storm"] {
            if let Some(m) = latency(other, schedule) {
                let _ = writeln!(
                    md,
                    "- `order-totals`, faults: {schedule}. {other} median latency is {} ms \
                     against {} ms pipelined (×{:.2}); p99 {} ms against {} ms (×{:.2}).",
                    m.p50,
                    p.p50,
                    ratio(m.p50, p.p50),
                    m.p99,
                    p.p99,
                    ratio(m.p99, p.p99),
                );
            }
        }
    }
}

/// A line for every run set that was not exactly once.
fn shortfalls(md: &mut String, figures: &[ModelFigures]) {
    for f in figures.iter().filter(|f| !f.exactly_once()) {
        let _ = writeln!(
            md,
            "- `{}` under {} ({}): {} of {} runs exactly once; {} results duplicated, {} \
             lost, {} wrong; {} input rows dropped as late.",
            f.job,
            f.model,
            f.schedule,
            f.passed,
            f.seeds,
            f.duplicates,
            f.losses,
            f.wrong,
            f.late_dropped
        );
    }
}

/// The comparison `weir bench real` ran on this machine, if it did.
fn on_this_machine(md: &mut String, path: &Path, charts: &Path) -> Result<(), String> {
    md.push_str("## On this machine\n\n");
    let run: RealRun = match read_json(path) {
        Ok(run) => run,
        Err(why) => {
            let _ = write!(
                md,
                "Not run here: {why}. Run `weir bench real --json {}` on an idle machine, \
                 then `weir report`.\n\n",
                path.display()
            );
            return Ok(());
        }
    };
    plot::latency(
        &run.figures,
        "Result latency seen by a read_committed reader (wall-clock ms)",
        &charts.join("models-real-latency.svg"),
    )?;
    let _ = write!(
        md,
        "From `{}`, run on {}. The simulator's jobs, on real sockets, files and processes, \
         with wall-clock time: one `weir broker` child process (one replica per partition), \
         and in one process on one thread the job manager, one task manager, the feeder, a \
         read_committed probe (`order-totals`, whose event time is the wall clock) and the \
         checker (the simulator's oracle). The other jobs' generated event time runs ahead of \
         the clock, so only their correctness, recoveries, commits and throughput compare. Three \
         schedules per model:\n\n\
         - **none**: the feeder writes at a fixed rate, stamping each input with the wall \
         clock less up to 200 ms; latency is from a result's window end to the probe first \
         seeing it;\n\
         - **shared faults**: the same, while at a quarter, half and three quarters of the \
         feed the task manager crashes (its subtasks and connections dropped at once), the \
         broker is killed with SIGKILL and started again on its files, and the job manager \
         crashes and starts again from its checkpoint directory, each down for one second. \
         Recovery runs from a crash to the next completed checkpoint or subtask commit. Real \
         sockets cannot be cut one way or disks torn from here: those faults are the \
         simulator's;\n\
         - **backlog**: the whole input is written first, then the job starts; inputs/s is the \
         input over the time from the job's start to its end, deployment included.\n\n",
        run.command, run.date
    );
    md.push_str(&models_table(&run.figures));
    md.push_str("![latency on this machine](figures/models-real-latency.svg)\n\n");
    latency_ratios(md, &run.figures);
    let backlog = |job: &str, model: &str| {
        run.figures
            .iter()
            .find(|f| f.job == job && f.model == model && f.schedule == "backlog")
            .map(|f| f.inputs_per_s)
    };
    let mut jobs: Vec<&str> = run.figures.iter().map(|f| f.job.as_str()).collect();
    jobs.dedup();
    for job in jobs {
        let Some(p) = backlog(job, "pipelined") else {
            continue;
        };
        for other in ["micro-batch", "kafka-streams", "storm"] {
            if let Some(o) = backlog(job, other) {
                let _ = writeln!(
                    md,
                    "- Backlog of `{job}`: {other} read {o:.0} inputs/s against {p:.0} \
                     pipelined (×{:.2}).",
                    o / p.max(f64::MIN_POSITIVE)
                );
            }
        }
    }
    shortfalls(md, &run.figures);
    md.push_str(
        "- Kafka Streams' figures come with its dropped rows: with a grace equal to the job's \
         bound on disorder (500 ms for `order-totals`), rows that reach a window subtask through \
         the repartition topic further behind the fastest upstream subtask in event time are \
         late. A backlog read as fast as each source \
         goes, or a restart that resumes the sources at different offsets, drives them apart.\n\
         - Storm runs with `max_spout_pending` raised to the whole input. At 1 000, a source's \
         first fetches over a backlog or after a restart came from one of its partitions alone; \
         the other partition, unread, held its watermark back, no window fired, no tuple tree \
         completed, and the job never finished.\n\
         - One run per model and schedule on a shared 2-core machine: read the ratios, not the \
         absolute figures, and rerun with `--rounds` for more.\n\n",
    );
    Ok(())
}

fn ratio(a: u64, b: u64) -> f64 {
    a as f64 / b.max(1) as f64
}

#[derive(Deserialize)]
struct PeerEngine {
    events: u64,
    windows: u64,
    job_s: f64,
    events_per_s: f64,
}

#[derive(Deserialize)]
struct PeerRun {
    flink: PeerEngine,
    weir: PeerEngine,
    weir_over_flink: f64,
}

fn flink_peer(md: &mut String, path: &Path) {
    md.push_str("## Against Apache Flink, on this machine\n\n");
    let run: Option<PeerRun> = read_json(path).ok();
    match run {
        Some(r) => {
            let _ = write!(
                md,
                "From `benches/peers/flink.sh` (details and caveats in \
                 [flink-peer.md](flink-peer.md)). Both engines ran the same keyed 5-minute \
                 tumbling count and sum over the same CSV file, at parallelism 1.\n\n\
                 | engine | events | windows | job runtime | events/s |\n| --- | --- | --- | --- | --- |\n\
                 | Flink | {} | {} | {:.2} s | {:.0} |\n| Weir | {} | {} | {:.2} s | {:.0} |\n\n\
                 **Weir / Flink throughput: {:.2}**, measured in the same run.\n\n",
                r.flink.events,
                r.flink.windows,
                r.flink.job_s,
                r.flink.events_per_s,
                r.weir.events,
                r.weir.windows,
                r.weir.job_s,
                r.weir.events_per_s,
                r.weir_over_flink
            );
        }
        None => {
            let _ = write!(
                md,
                "Not run here: no {} (run `benches/peers/flink.sh` first).\n\n",
                path.display()
            );
        }
    }
}

#[derive(Deserialize)]
struct BenchId {
    full_id: String,
    throughput: Option<Throughput>,
}

#[derive(Deserialize)]
enum Throughput {
    Elements(u64),
    Bytes(u64),
    BytesDecimal(u64),
    ElementsAndBytes { elements: u64 },
}

#[derive(Deserialize)]
struct Estimates {
    mean: Estimate,
}

#[derive(Deserialize)]
struct Estimate {
    point_estimate: f64,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Every `new/benchmark.json` under `dir`, with its estimates, sorted by bench id.
fn criterion_results(dir: &Path) -> Result<Vec<(BenchId, f64)>, String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0usize;
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            seen += 1;
            if seen > CRITERION_FILES_MAX {
                return Err(format!(
                    "more than {CRITERION_FILES_MAX} files under {}",
                    dir.display()
                ));
            }
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.ends_with("new/benchmark.json") {
                let id: BenchId = read_json(&path)?;
                let est: Estimates = read_json(&path.with_file_name("estimates.json"))?;
                found.push((id, est.mean.point_estimate));
            }
        }
    }
    found.sort_by(|a, b| a.0.full_id.cmp(&b.0.full_id));
    Ok(found)
}

fn criterion_summary(md: &mut String, dir: &Path) -> Result<(), String> {
    md.push_str("## Hot paths (`cargo bench`)\n\n");
    let results = criterion_results(dir)?;
    if results.is_empty() {
        let _ = writeln!(
            md,
            "Not run here: nothing under {} (run `cargo bench` first).",
            dir.display()
        );
        return Ok(());
    }
    let _ = write!(
        md,
        "Criterion's mean time per iteration, from the results under `{}` (its HTML reports \
         are there too). These figures come from separate runs on a shared machine, so compare \
         them only within a row's own bench.\n\n\
         | bench | mean per iteration | throughput |\n| --- | --- | --- |\n",
        dir.display()
    );
    for (id, ns) in results {
        let per_s = 1e9 / ns.max(f64::MIN_POSITIVE);
        let throughput = match id.throughput {
            Some(Throughput::Elements(n) | Throughput::ElementsAndBytes { elements: n }) => {
                format!("{:.0} elements/s", n as f64 * per_s)
            }
            Some(Throughput::Bytes(n) | Throughput::BytesDecimal(n)) => {
                format!("{:.1} MiB/s", n as f64 * per_s / (1024.0 * 1024.0))
            }
            None => String::new(),
        };
        let _ = writeln!(md, "| `{}` | {} | {throughput} |", id.full_id, duration(ns));
    }
    Ok(())
}

fn duration(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}
