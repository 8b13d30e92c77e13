//! `weir job`: runs one of Weir's catalog jobs on a local job manager and task manager, over
//! real sockets and files, against any Kafka-protocol cluster. It is what a user's own job
//! binary does through `weir_engine::launch`, with the catalog's job built from its flags.
//!
//! Progress (the job's events: deployments, checkpoints, failovers) goes to stdout, one line
//! each. The job reads committed input and writes its output exactly once (two-phase commit over
//! broker transactions). Ctrl-C stops it with a savepoint, whose name the command prints;
//! `--from-savepoint` resumes from it. With `--end-marker`, the input is bounded: the job
//! finishes once every input partition has delivered the marker and the last output is
//! committed. The last line counts the records the job dropped, by reason. A job that upserts
//! into a table (`order-pipeline`) writes it to an embedded SQLite database, `tables.sqlite` in
//! the checkpoint directory unless `--table-db` names another, or to PostgreSQL when
//! `--table-url` gives a `postgres://` URL.

use clap::Args;
use std::process::ExitCode;
use std::rc::Rc;
use weir_engine::DeliveryGuarantee;
use weir_engine::launch::{self, RunArgs};
use weir_workloads::jobs::{Job, Settings};

/// Settings of `weir job`.
#[derive(Args, Debug)]
pub struct JobArgs {
    /// The job: order-aggregates, order-pipeline, order-sessions, click-analytics, or
    /// nexmark-q0, q1, q2, q5, q7 or q8.
    pub name: String,
    /// Subtasks of every operator.
    #[arg(long, default_value_t = 2)]
    pub parallelism: u32,
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
    /// How the job runs.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs `weir job` until the job finishes, stops or fails.
pub fn run(mut args: JobArgs) -> ExitCode {
    let job = match build(&mut args) {
        Ok(job) => job,
        Err(e) => {
            eprintln!("weir job: {e}");
            return ExitCode::FAILURE;
        }
    };
    launch::block_on(async move {
        launch::run_local(Rc::new(job), &args.run)
            .await
            .map_err(|e| format!("weir job: {e}"))
    })
}

/// The catalog's job that `args` names, at its settings.
fn build(args: &mut JobArgs) -> Result<weir_engine::Job, String> {
    let job = Job::named(&args.name).ok_or_else(|| {
        let names: Vec<&str> = Job::all().into_iter().map(Job::name).collect();
        format!("no job {:?}; the jobs are: {}", args.name, names.join(", "))
    })?;
    if args.parallelism == 0 {
        return Err("--parallelism must be at least 1".into());
    }
    if args.run.runtime.bootstrap.is_empty() {
        return Err("--bootstrap names no broker".into());
    }
    let out_of_orderness_ms = args
        .out_of_orderness_ms
        .unwrap_or_else(|| job.out_of_orderness_ms());
    // Kafka Streams closes windows by stream time: by default, after the same disorder.
    args.run
        .runtime
        .grace_ms
        .get_or_insert(u64::try_from(out_of_orderness_ms).unwrap_or(0));
    let settings = Settings {
        input_topic: args
            .input_topic
            .clone()
            .unwrap_or_else(|| job.input_topic().to_string()),
        parallelism: args.parallelism,
        out_of_orderness_ms,
        end_marker: args.end_marker.clone(),
        guarantee: DeliveryGuarantee::ExactlyOnce,
    };
    job.build(&settings).map_err(|e| e.to_string())
}
