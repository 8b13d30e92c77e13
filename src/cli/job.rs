//! `weir job`: runs one of Weir's jobs on a local job manager and task manager, over real
//! sockets and files, against any Kafka-protocol cluster.
//!
//! Progress (the job's events: deployments, checkpoints, failovers) goes to stdout, one line
//! each. The job reads committed input and writes its output exactly once (two-phase commit over
//! broker transactions). Ctrl-C stops it with a savepoint, whose name the command prints;
//! `--from-savepoint` resumes from it. With `--end-marker`, the input is bounded: the job
//! finishes once every input partition has delivered the marker and the last output is
//! committed. A job that upserts into a table (`order-pipeline`) writes it to an embedded SQLite
//! database, `tables.sqlite` in the checkpoint directory unless `--table-db` names another, or
//! to PostgreSQL when `--table-url` gives a `postgres://` URL.

use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use weir_client::{ClientConfig, Cluster, NewTopic};
use weir_engine::runtime::graph::Stage;
use weir_engine::runtime::rpc::{JOB_MANAGER_PORT, ask};
use weir_engine::runtime::table::postgres::PostgresTable;
use weir_engine::runtime::table::sqlite::SqliteTable;
use weir_engine::runtime::{
    CheckpointConfig, ExecutionModel, JobConfig, JobEvent, JobManagerConfig, JobState, SinkMode,
    Tables, TaskManagerConfig, Throttle, ToClient, ToJobManager, run_job_manager, run_task_manager,
};
use weir_seams::clock::Clock;
use weir_seams::disk::Disk;
use weir_seams::net::Net;
use weir_workloads::jobs::{self, Job, Settings};

/// Subtasks one task manager runs at most: each takes a port of its attempt's block.
const SLOTS_MAX: u32 = 32;
/// How often the command asks the job manager for the job's state, in milliseconds.
const STATUS_MS: u64 = 500;
/// How long a stop may take: a checkpoint and its commit, in seconds.
const STOP_TIMEOUT_S: u64 = 120;

/// Settings of `weir job`.
#[derive(Args, Debug)]
pub struct JobArgs {
    /// The job: order-aggregates, order-pipeline, order-sessions, click-analytics, or
    /// nexmark-q0, q1, q2, q5, q7 or q8.
    pub name: String,
    /// Bootstrap brokers, HOST:PORT, comma-separated.
    #[arg(long, required = true, value_delimiter = ',')]
    pub bootstrap: Vec<String>,
    /// Directory of the job's checkpoints and savepoints.
    #[arg(long, default_value = "weir-checkpoints")]
    pub checkpoint_dir: PathBuf,
    /// Subtasks of every operator.
    #[arg(long, default_value_t = 2)]
    pub parallelism: u32,
    /// A savepoint to resume from, as a stopped run printed it.
    #[arg(long)]
    pub from_savepoint: Option<String>,
    /// The input topic, which must exist: by default the job's workload, `orders`, `clicks`
    /// or `nexmark`.
    #[arg(long)]
    pub input_topic: Option<String>,
    /// A record value that ends an input partition: the job finishes once all have ended.
    #[arg(long)]
    pub end_marker: Option<String>,
    /// How far the watermark trails the largest event time seen, in milliseconds: by default
    /// 10 minutes for click-analytics and 5 s for the others.
    #[arg(long)]
    pub out_of_orderness_ms: Option<i64>,
    /// Time between checkpoints, in milliseconds; output is committed at each.
    #[arg(long, default_value_t = 2_000)]
    pub checkpoint_interval_ms: u64,
    /// The SQLite database of the tables a job upserts into (order-pipeline's `orders`): by
    /// default `tables.sqlite` in the checkpoint directory.
    #[arg(long, conflicts_with = "table_url")]
    pub table_db: Option<PathBuf>,
    /// A PostgreSQL database for those tables instead, as
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE`.
    #[arg(long)]
    pub table_url: Option<String>,
    /// Port the job manager listens on (127.0.0.1).
    #[arg(long, default_value_t = JOB_MANAGER_PORT)]
    pub job_manager_port: u16,
    /// Execution model: pipelined (checkpoint barriers through a running job), micro-batch
    /// (a batch per trigger, its offsets logged before it is read), kafka-streams (a broker
    /// transaction per commit interval, windows in changelog topics) or storm (XOR-acked
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
    /// milliseconds; by default the out-of-orderness.
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
}

/// The execution models `weir job` runs.
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

/// Runs `weir job` until the job finishes, stops or fails.
pub fn run(args: JobArgs) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    super::block_on("job", runtime, run_job(args))
}

async fn run_job(args: JobArgs) -> Result<(), String> {
    let job = named(&args.name)?;
    if args.parallelism == 0 {
        return Err("--parallelism must be at least 1".into());
    }
    let input_topic = args
        .input_topic
        .clone()
        .unwrap_or_else(|| job.input_topic().to_string());
    let cluster = Cluster::new(ClientConfig::new(args.bootstrap.clone(), Net::Tokio));
    let partitions = cluster
        .partitions(&input_topic)
        .await
        .map_err(|e| format!("input topic {input_topic}: {e}"))?
        .len();
    let partitions = i32::try_from(partitions).map_err(|_| "too many partitions")?;
    let graph = job.graph(&Settings {
        input_topic: input_topic.clone(),
        input_partitions: partitions,
        parallelism: args.parallelism,
        out_of_orderness_ms: args
            .out_of_orderness_ms
            .unwrap_or_else(|| job.out_of_orderness_ms()),
        end_marker: args.end_marker.clone(),
        sink_mode: SinkMode::ExactlyOnce,
    });
    let stages = graph.stages().map_err(|e| e.to_string())?;
    let slots: u32 = stages.iter().map(|s: &Stage| s.parallelism).sum();
    if slots > SLOTS_MAX {
        return Err(format!(
            "the job needs {slots} slots, one task manager has {SLOTS_MAX}: lower --parallelism"
        ));
    }
    for topic in job.outputs() {
        let output = NewTopic::new(topic, -1, -1);
        super::produce::ensure_topic(&cluster, &args.bootstrap, &output).await?;
    }
    let tables = tables(job, &args).await?;
    if args.model == ModelArg::MicroBatch && args.trigger_ms == 0 {
        return Err("--trigger-ms must be at least 1".into());
    }
    if args.commit_interval_ms == Some(0) || args.max_spout_pending == 0 {
        return Err("--commit-interval-ms and --max-spout-pending must be at least 1".into());
    }
    let out_of_orderness_ms = args
        .out_of_orderness_ms
        .unwrap_or_else(|| job.out_of_orderness_ms());
    let job = JobConfig {
        model: match args.model {
            ModelArg::Pipelined => ExecutionModel::Pipelined,
            ModelArg::MicroBatch => ExecutionModel::MicroBatch {
                trigger_ms: args.trigger_ms,
                batch_offsets_max: args.batch_offsets_max,
            },
            ModelArg::KafkaStreams => ExecutionModel::KafkaStreams {
                commit_interval_ms: args.commit_interval_ms.unwrap_or(100),
                grace_ms: args
                    .grace_ms
                    .unwrap_or_else(|| u64::try_from(out_of_orderness_ms).unwrap_or(0)),
                replication_factor: args.internal_replication_factor,
            },
            ModelArg::Storm => ExecutionModel::Storm {
                message_timeout_ms: args.message_timeout_ms,
                max_spout_pending: args.max_spout_pending,
                commit_interval_ms: args.commit_interval_ms.unwrap_or(1_000),
            },
        },
        checkpoint: CheckpointConfig {
            interval_ms: args.checkpoint_interval_ms,
            ..CheckpointConfig::default()
        },
        ..JobConfig::new(graph, args.bootstrap.clone())
    };
    let limit = job.control_frame_bytes_max;
    let jm_addr = format!("127.0.0.1:{}", args.job_manager_port);
    let job_manager = run_job_manager(
        JobManagerConfig {
            listen: jm_addr.clone(),
            net: Net::Tokio,
            job: job.clone(),
            savepoint: args.from_savepoint.clone(),
        },
        Disk::real(&args.checkpoint_dir),
        Some(Rc::new(|e: &JobEvent| println!("{e:?}"))),
    );
    let task_manager = run_task_manager(
        TaskManagerConfig {
            name: "local".into(),
            host: "127.0.0.1".into(),
            job_manager: jm_addr.clone(),
            slots,
            net: Net::Tokio,
            clock: Clock::starting_at(super::wall_ms()),
            heartbeat_interval_ms: job.heartbeat_interval_ms,
            heartbeat_timeout_ms: job.heartbeat_timeout_ms,
            control_frame_bytes_max: limit,
            throttle: Throttle::default(),
            functions: jobs::functions(),
            tables,
        },
        None,
    );
    tokio::select! {
        Err(e) = job_manager => Err(format!("job manager: {e}")),
        () = task_manager => Err("the task manager stopped".into()),
        r = supervise(&jm_addr, limit) => r,
    }
}

/// The tables `job` upserts into: in PostgreSQL with `--table-url`, else in the SQLite
/// database of `--table-db`.
async fn tables(job: Job, args: &JobArgs) -> Result<Tables, String> {
    let Some(name) = job.table() else {
        return Ok(Tables::default());
    };
    if let Some(url) = &args.table_url {
        let table = PostgresTable::connect(url, name)
            .await
            .map_err(|e| format!("--table-url: {e}"))?;
        println!("table {name}: PostgreSQL");
        return Ok(Tables::default().with(name, Arc::new(table)));
    }
    let path = args
        .table_db
        .clone()
        .unwrap_or_else(|| args.checkpoint_dir.join("tables.sqlite"));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let table = SqliteTable::open(&path, name).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("table {name}: SQLite database {}", path.display());
    Ok(Tables::default().with(name, Arc::new(table)))
}

/// The catalog job called `name`, or an error listing them all.
fn named(name: &str) -> Result<Job, String> {
    Job::named(name).ok_or_else(|| {
        let names: Vec<&str> = Job::all().into_iter().map(Job::name).collect();
        format!("no job {name:?}; the jobs are: {}", names.join(", "))
    })
}

/// Watches the job until it finishes, stops or fails, and stops it with a savepoint on
/// Ctrl-C.
async fn supervise(jm: &str, limit: usize) -> Result<(), String> {
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            r = &mut ctrl_c => {
                r.map_err(|e| format!("cannot listen for Ctrl-C: {e}"))?;
                eprintln!("weir job: stopping with a savepoint");
                let stop = ask(Net::Tokio, jm, &ToJobManager::StopWithSavepoint, limit);
                return match tokio::time::timeout(Duration::from_secs(STOP_TIMEOUT_S), stop).await {
                    Ok(Ok(ToClient::Savepoint(Ok(name)))) => {
                        println!("stopped with savepoint {name}");
                        Ok(())
                    }
                    Ok(Ok(ToClient::Savepoint(Err(why)))) => Err(format!("the stop failed: {why}")),
                    Ok(other) => Err(format!("the stop failed: {other:?}")),
                    Err(_) => Err(format!("the stop took more than {STOP_TIMEOUT_S} s")),
                };
            }
            () = tokio::time::sleep(Duration::from_millis(STATUS_MS)) => {
                let Ok(ToClient::Status { state, failure, .. }) =
                    ask(Net::Tokio, jm, &ToJobManager::Status, limit).await
                else {
                    continue;
                };
                match state {
                    JobState::Finished => {
                        println!("finished");
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
