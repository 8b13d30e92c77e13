//! A job's own binary, as a jar is for a Flink cluster: one entry point, [`main`], that acts as
//! the job manager, as a task manager, or as both in one process, by its arguments.
//!
//! ```text
//! my-job run         --bootstrap HOST:PORT [--checkpoint-dir DIR] [--from-savepoint SP] ...
//! my-job jobmanager  --bootstrap HOST:PORT --listen HOST:PORT [--checkpoint-dir DIR] ...
//! my-job taskmanager --job-manager HOST:PORT --host HOST [--slots N] [--name NAME]
//! my-job stop        --job-manager HOST:PORT       # stop with a savepoint, print its name
//! my-job status      --job-manager HOST:PORT
//! ```
//!
//! Every process builds the job from the same code; a task manager checks that the job manager
//! runs the job it was built with (the topology's fingerprint) before it runs any subtask.
//! Progress goes to stdout, one line per job event; `run` stops the job with a savepoint on
//! Ctrl-C, and ends printing the records the job dropped, by reason.

use crate::api::Job;
use crate::graph::{GraphError, SinkTarget, VertexKind};
use crate::runtime::rpc::{JOB_MANAGER_PORT, ask};
use crate::runtime::table::postgres::PostgresTable;
use crate::runtime::table::sqlite::SqliteTable;
use crate::runtime::{
    CheckpointConfig, ExecutionModel, JobConfig, JobEvent, JobManagerConfig, JobState, Tables,
    TaskManagerConfig, Throttle, ToClient, ToJobManager, run_job_manager, run_task_manager,
};
use clap::{Args, Parser, Subcommand, ValueEnum};
use kafka_protocol::error::ResponseError;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use weir_client::{Admin, ClientConfig, Cluster, NewTopic};
use weir_seams::clock::Clock;
use weir_seams::disk::Disk;
use weir_seams::net::Net;

/// Subtasks one task manager runs at most: each takes a port of its attempt's block.
pub const SLOTS_MAX: u32 = 32;
/// How often `run` asks the job manager for the job's state, in milliseconds.
const STATUS_MS: u64 = 500;
/// How long a stop may take: a checkpoint and its commit, in seconds.
const STOP_TIMEOUT_S: u64 = 120;
/// Largest control message, in bytes.
const CONTROL_FRAME_BYTES_MAX: usize = 8 * 1024 * 1024;

/// The command line of a job's binary.
#[derive(Parser, Debug)]
#[command(about = "A Weir stream job: its job manager, its task managers, or both")]
pub struct JobCli {
    /// What this process is.
    #[command(subcommand)]
    pub role: Role,
}

/// What a job's process is.
#[derive(Subcommand, Debug)]
pub enum Role {
    /// The job manager and one task manager, in this process.
    Run(RunArgs),
    /// The job manager alone; task managers connect to it.
    Jobmanager(JobManagerArgs),
    /// A task manager of a job manager.
    Taskmanager(TaskManagerArgs),
    /// Stops the job with a savepoint and prints its name.
    Stop(ControlArgs),
    /// Prints the job's state.
    Status(ControlArgs),
}

/// How the job runs: its brokers, checkpoints, model and tables.
#[derive(Args, Debug, Clone)]
pub struct RuntimeArgs {
    /// Bootstrap brokers, HOST:PORT, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub bootstrap: Vec<String>,
    /// Directory of the job's checkpoints and savepoints.
    #[arg(long, default_value = "weir-checkpoints")]
    pub checkpoint_dir: PathBuf,
    /// A savepoint to resume from, as a stopped run printed it.
    #[arg(long)]
    pub from_savepoint: Option<String>,
    /// Time between checkpoints, in milliseconds; output is committed at each.
    #[arg(long, default_value_t = 2_000)]
    pub checkpoint_interval_ms: u64,
    /// Execution model: pipelined (checkpoint barriers through a running job), micro-batch
    /// (a batch per trigger, its offsets logged before it is read), kafka-streams (a broker
    /// transaction per commit interval, state in changelog topics) or storm (XOR-acked
    /// tuple trees, replayed on timeout; at least once).
    #[arg(long, value_enum, default_value_t = ModelArg::Pipelined)]
    pub model: ModelArg,
    /// Micro-batch: time from one batch's start to the next one's, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    pub trigger_ms: u64,
    /// Micro-batch: offsets one source subtask reads in a batch at most (a backlog is read in
    /// batches of this size, one per trigger).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_offsets_max: u64,
    /// Kafka Streams: time between a subtask's transactions (default 100); Storm: between a
    /// source's offset commits (default 1 000), in milliseconds.
    #[arg(long)]
    pub commit_interval_ms: Option<u64>,
    /// Kafka Streams: how far stream time must pass a window's end before it closes, in
    /// milliseconds (default 5 000).
    #[arg(long)]
    pub grace_ms: Option<u64>,
    /// Kafka Streams: replicas of the repartition and changelog topics; -1 takes the
    /// broker's default.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub internal_replication_factor: i16,
    /// Storm: a record's tree not complete this long after it was emitted is replayed, in
    /// milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub message_timeout_ms: u64,
    /// Storm: records whose trees a source subtask keeps open at most.
    #[arg(long, default_value_t = 1_000)]
    pub max_spout_pending: u32,
    /// The SQLite database of the tables the job upserts into: by default `tables.sqlite` in
    /// the checkpoint directory.
    #[arg(long, conflicts_with = "table_url")]
    pub table_db: Option<PathBuf>,
    /// A PostgreSQL database for those tables instead, as
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE`.
    #[arg(long)]
    pub table_url: Option<String>,
}

/// `run`: the job manager and a task manager in one process.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The job's settings.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Port the job manager listens on (127.0.0.1).
    #[arg(long, default_value_t = JOB_MANAGER_PORT)]
    pub job_manager_port: u16,
}

/// `jobmanager`.
#[derive(Args, Debug, Clone)]
pub struct JobManagerArgs {
    /// The job's settings.
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Address to listen on.
    #[arg(long, default_value_t = format!("0.0.0.0:{JOB_MANAGER_PORT}"))]
    pub listen: String,
}

/// `taskmanager`.
#[derive(Args, Debug, Clone)]
pub struct TaskManagerArgs {
    /// The job manager, HOST:PORT.
    #[arg(long)]
    pub job_manager: String,
    /// The host this task manager's subtasks are reached at by the others.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Its name, unique among the job's task managers.
    #[arg(long, default_value = "tm")]
    pub name: String,
    /// Subtasks it runs at once.
    #[arg(long, default_value_t = 4)]
    pub slots: u32,
    /// Where the tables the job upserts into are (as for the job manager).
    #[command(flatten)]
    pub tables: TableArgs,
}

/// Where tables are, for a task manager started on its own.
#[derive(Args, Debug, Clone)]
pub struct TableArgs {
    /// The SQLite database of the job's tables.
    #[arg(long = "table-db", default_value = "tables.sqlite")]
    pub db: PathBuf,
    /// A PostgreSQL database for them instead.
    #[arg(long = "table-url")]
    pub url: Option<String>,
}

/// `stop` and `status`.
#[derive(Args, Debug, Clone)]
pub struct ControlArgs {
    /// The job manager, HOST:PORT.
    #[arg(long, default_value_t = format!("127.0.0.1:{JOB_MANAGER_PORT}"))]
    pub job_manager: String,
}

/// The execution models.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModelArg {
    /// Sources read continuously; checkpoint barriers cut the stream.
    Pipelined,
    /// A batch per trigger; the batch's checkpoint commits it.
    MicroBatch,
    /// Consume-transform-produce with a transaction per commit interval.
    KafkaStreams,
    /// Record at a time with per-tuple acknowledgements; at least once.
    Storm,
}

impl RuntimeArgs {
    /// The job's runtime settings.
    pub fn config(&self, job: &Job) -> Result<JobConfig, String> {
        if self.bootstrap.is_empty() && !job.topology().input_topics().is_empty() {
            return Err("--bootstrap names no broker, and the job reads topics".into());
        }
        if self.model == ModelArg::MicroBatch && self.trigger_ms == 0 {
            return Err("--trigger-ms must be at least 1".into());
        }
        if self.commit_interval_ms == Some(0) || self.max_spout_pending == 0 {
            return Err("--commit-interval-ms and --max-spout-pending must be at least 1".into());
        }
        let model = match self.model {
            ModelArg::Pipelined => ExecutionModel::Pipelined,
            ModelArg::MicroBatch => ExecutionModel::MicroBatch {
                trigger_ms: self.trigger_ms,
                batch_offsets_max: self.batch_offsets_max,
            },
            ModelArg::KafkaStreams => ExecutionModel::KafkaStreams {
                commit_interval_ms: self.commit_interval_ms.unwrap_or(100),
                grace_ms: self.grace_ms.unwrap_or(5_000),
                replication_factor: self.internal_replication_factor,
            },
            ModelArg::Storm => ExecutionModel::Storm {
                message_timeout_ms: self.message_timeout_ms,
                max_spout_pending: self.max_spout_pending,
                commit_interval_ms: self.commit_interval_ms.unwrap_or(1_000),
            },
        };
        Ok(JobConfig {
            model,
            checkpoint: CheckpointConfig {
                interval_ms: self.checkpoint_interval_ms,
                ..CheckpointConfig::default()
            },
            control_frame_bytes_max: CONTROL_FRAME_BYTES_MAX,
            ..JobConfig::new(job.topology().clone(), self.bootstrap.clone())
        })
    }

    /// The tables the job upserts into: in PostgreSQL with `--table-url`, else in the SQLite
    /// database of `--table-db`.
    pub async fn tables(&self, job: &Job) -> Result<Tables, String> {
        let db = self
            .table_db
            .clone()
            .unwrap_or_else(|| self.checkpoint_dir.join("tables.sqlite"));
        open_tables(job, &db, self.table_url.as_deref()).await
    }
}

/// The job's table sinks' stores.
async fn open_tables(job: &Job, db: &std::path::Path, url: Option<&str>) -> Result<Tables, String> {
    let mut tables = Tables::default();
    for v in &job.topology().vertices {
        let VertexKind::Sink(SinkTarget::Table { table }) = &v.kind else {
            continue;
        };
        if let Some(url) = url {
            let store = PostgresTable::connect(url, table)
                .await
                .map_err(|e| format!("--table-url: {e}"))?;
            println!("table {table}: PostgreSQL");
            tables = tables.with(table, Arc::new(store));
            continue;
        }
        if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let store = SqliteTable::open(db, table).map_err(|e| format!("{}: {e}", db.display()))?;
        println!("table {table}: SQLite database {}", db.display());
        tables = tables.with(table, Arc::new(store));
    }
    Ok(tables)
}

/// Creates the topics the job writes unless they exist, with the brokers' defaults.
async fn ensure_outputs(job: &Job, bootstrap: &[String]) -> Result<(), String> {
    if bootstrap.is_empty() {
        return Ok(());
    }
    let admin = Admin::new(Cluster::new(ClientConfig::new(
        bootstrap.to_vec(),
        Net::Tokio,
    )));
    for topic in job.topology().output_topics() {
        match admin.create_topic(&NewTopic::new(topic, -1, -1)).await {
            Ok(()) => {}
            Err(e) if e.code() == Some(ResponseError::TopicAlreadyExists) => {}
            Err(e) => return Err(format!("cannot create output topic {topic}: {e}")),
        }
    }
    Ok(())
}

/// Subtasks the job needs, one slot each.
pub fn slots_needed(job: &Job) -> u32 {
    job.stages().iter().map(|s| s.parallelism).sum()
}

/// Wall-clock milliseconds since the Unix epoch: a real run's processing time starts there.
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The job manager of `job`, on real sockets and files.
fn job_manager(
    job: &Job,
    runtime: &RuntimeArgs,
    listen: &str,
) -> Result<impl std::future::Future<Output = Result<std::convert::Infallible, String>>, String> {
    let config = JobManagerConfig {
        listen: listen.to_string(),
        net: Net::Tokio,
        job: runtime.config(job)?,
        savepoint: runtime.from_savepoint.clone(),
    };
    Ok(run_job_manager(
        config,
        Disk::real(&runtime.checkpoint_dir),
        Some(Rc::new(|e: &JobEvent| println!("{e:?}"))),
    ))
}

/// A task manager of `job`.
fn task_manager(
    job: Rc<Job>,
    (name, host, job_manager): (&str, &str, &str),
    slots: u32,
    tables: Tables,
) -> TaskManagerConfig {
    let defaults = JobConfig::new(job.topology().clone(), Vec::new());
    TaskManagerConfig {
        name: name.to_string(),
        host: host.to_string(),
        job_manager: job_manager.to_string(),
        slots,
        net: Net::Tokio,
        clock: Clock::starting_at(wall_ms()),
        heartbeat_interval_ms: defaults.heartbeat_interval_ms,
        heartbeat_timeout_ms: defaults.heartbeat_timeout_ms,
        control_frame_bytes_max: CONTROL_FRAME_BYTES_MAX,
        throttle: Throttle::default(),
        job,
        tables,
    }
}

/// Runs `job`'s job manager and one task manager in this process until the job finishes,
/// stops or fails; Ctrl-C stops it with a savepoint.
pub async fn run_local(job: Rc<Job>, args: &RunArgs) -> Result<(), String> {
    let slots = slots_needed(&job);
    if slots > SLOTS_MAX {
        return Err(format!(
            "the job needs {slots} slots, one task manager has {SLOTS_MAX}: lower its parallelism"
        ));
    }
    ensure_outputs(&job, &args.runtime.bootstrap).await?;
    let tables = args.runtime.tables(&job).await?;
    let jm_addr = format!("127.0.0.1:{}", args.job_manager_port);
    let jm = job_manager(&job, &args.runtime, &jm_addr)?;
    let tm = task_manager(
        Rc::clone(&job),
        ("local", "127.0.0.1", &jm_addr),
        slots,
        tables,
    );
    tokio::select! {
        Err(e) = jm => Err(format!("job manager: {e}")),
        () = run_task_manager(tm, None) => Err("the task manager stopped".into()),
        r = supervise(&jm_addr) => r,
    }
}

/// Prints the records the job dropped, by reason.
fn print_dropped(dropped: &crate::runtime::metrics::DropCounts) {
    println!(
        "dropped: {} unparseable, {} invalid, {} late",
        dropped.unparseable, dropped.invalid, dropped.late
    );
}

/// Watches the job until it finishes, stops or fails, and stops it with a savepoint on
/// Ctrl-C.
async fn supervise(jm: &str) -> Result<(), String> {
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut dropped = Default::default();
    loop {
        tokio::select! {
            r = &mut ctrl_c => {
                r.map_err(|e| format!("cannot listen for Ctrl-C: {e}"))?;
                eprintln!("stopping with a savepoint");
                let outcome = stop(jm).await;
                print_dropped(&dropped);
                return outcome;
            }
            () = tokio::time::sleep(Duration::from_millis(STATUS_MS)) => {
                let Ok(ToClient::Status { state, failure, dropped: now, .. }) =
                    ask(Net::Tokio, jm, &ToJobManager::Status, CONTROL_FRAME_BYTES_MAX).await
                else {
                    continue;
                };
                dropped = now;
                match state {
                    JobState::Finished => {
                        println!("finished");
                        print_dropped(&dropped);
                        return Ok(());
                    }
                    JobState::Failed => return Err(format!("the job failed: {failure:?}")),
                    JobState::Stopped => {
                        return Err("the job was stopped earlier; resume it with --from-savepoint".into());
                    }
                    JobState::Scheduling | JobState::Running | JobState::Restarting => {}
                }
            }
        }
    }
}

/// Stops the job at `jm` with a savepoint and prints its name.
async fn stop(jm: &str) -> Result<(), String> {
    let stop = ask(
        Net::Tokio,
        jm,
        &ToJobManager::StopWithSavepoint,
        CONTROL_FRAME_BYTES_MAX,
    );
    match tokio::time::timeout(Duration::from_secs(STOP_TIMEOUT_S), stop).await {
        Ok(Ok(ToClient::Savepoint(Ok(name)))) => {
            println!("stopped with savepoint {name}");
            Ok(())
        }
        Ok(Ok(ToClient::Savepoint(Err(why)))) => Err(format!("the stop failed: {why}")),
        Ok(other) => Err(format!("the stop failed: {other:?}")),
        Err(_) => Err(format!("the stop took more than {STOP_TIMEOUT_S} s")),
    }
}

/// Runs `work` on a single-threaded runtime (a job's subtasks share one thread), turning its
/// result into an exit code.
pub fn block_on(work: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let outcome = match runtime {
        Ok(r) => tokio::task::LocalSet::new().block_on(&r, work),
        Err(e) => Err(format!("cannot start the runtime: {e}")),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The entry point of a job's binary: builds the job with `build` and runs the role the
/// command line names.
pub fn main(build: impl FnOnce() -> Result<Job, GraphError>) -> ExitCode {
    let cli = JobCli::parse();
    let job = match build() {
        Ok(job) => Rc::new(job),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    block_on(async move {
        match cli.role {
            Role::Run(args) => run_local(job, &args).await,
            Role::Jobmanager(args) => {
                let Err(e) = job_manager(&job, &args.runtime, &args.listen)?.await;
                Err(format!("job manager: {e}"))
            }
            Role::Taskmanager(args) => {
                let tables = open_tables(&job, &args.tables.db, args.tables.url.as_deref()).await?;
                let names = (
                    args.name.as_str(),
                    args.host.as_str(),
                    args.job_manager.as_str(),
                );
                run_task_manager(task_manager(job, names, args.slots, tables), None).await;
                Ok(())
            }
            Role::Stop(args) => stop(&args.job_manager).await,
            Role::Status(args) => {
                let status = ask(
                    Net::Tokio,
                    &args.job_manager,
                    &ToJobManager::Status,
                    CONTROL_FRAME_BYTES_MAX,
                )
                .await
                .map_err(|e| e.to_string())?;
                println!("{status:?}");
                Ok(())
            }
        }
    })
}
