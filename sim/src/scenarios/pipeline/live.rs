//! A pipeline job on this machine: real sockets, files, processes and wall-clock time, checked
//! by the same oracle as in the simulator.
//!
//! One `weir broker` runs as a child process on its own data directory. In this process, on one
//! thread, run the job manager (checkpoints in a directory), one task manager, a feeder, a probe
//! and the observer:
//!
//! - **Paced input**: the feeder writes at a fixed rate, then an end marker per partition. For
//!   `order-totals` it writes keyed amounts stamped with the wall clock (trailing it by at most
//!   [`DISORDER_MS`]), and a probe follows the output under read_committed from the start and
//!   records how long after its window's end each result became visible. A catalog job gets its
//!   generated workload, whose event time runs ahead of the clock, so its latency is not
//!   measured.
//! - **Backlog**: the feeder writes the whole input as fast as the broker takes it, and only
//!   then does the job start; its throughput is the input over the time from its start to its
//!   end.
//!
//! The shared fault schedule strikes at fixed fractions of the feeding phase: the task manager
//! crashes (its subtasks and connections dropped at once) and starts again a second later; the
//! broker is killed with SIGKILL and started again on its data directory; the job manager
//! crashes and starts again from its checkpoint directory. Partitions and disk faults need the
//! simulator: nothing here can cut a real socket one way or tear a real write.

use super::{
    DISORDER_MS, INPUT_PARTITIONS, OUTPUT_PARTITIONS, Observed, PipelineJob, build_job,
    check_output, end_input, job_config, read_committed, wait_finished,
};
use crate::env::{Recorder, now_ms, start_live_clock};
use crate::scenarios::common::{
    RETRY_MS, client_on, create_topic, note, producer_config, sleep_ms,
};
use crate::scenarios::eos_pipeline;
use bytes::Bytes;
use rand::Rng;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use weir_client::{
    Cluster, Consumer, ConsumerConfig, Delivery, Isolation, OffsetReset, Producer, Record,
};
use weir_engine::runtime::{
    ExecutionModel, JobEvent, JobManagerConfig, Tables, TaskManagerConfig, Throttle,
    run_job_manager, run_task_manager,
};
use weir_seams::clock::Clock;
use weir_seams::disk::Disk;
use weir_seams::net::Net;
use weir_seams::rng;

/// Keys the feeder draws from.
const KEYS: u32 = 16;
/// Subtasks the one task manager runs at once: every subtask of the job.
const SLOTS: u32 = 8;
/// Deliveries the feeder waits on at most before it waits for the oldest.
const IN_FLIGHT_MAX: usize = 10_000;
/// How long a crashed process stays down, in milliseconds.
const DOWN_MS: u64 = 1_000;
/// How long a broker has to start serving, in milliseconds.
const BROKER_START_MS: u64 = 30_000;
/// How often the observer asks the job manager for the job's state, in milliseconds.
const STATUS_MS: u64 = 50;
/// When the faults strike, as fractions of the feeding phase.
const FAULTS_AT: [f64; 3] = [0.25, 0.5, 0.75];

/// One run on this machine.
#[derive(Clone, Debug)]
pub struct LiveSpec {
    /// A `weir` binary, which serves the broker.
    pub weir: PathBuf,
    /// The run's directory for the broker's data, the checkpoints and the logs; whatever a
    /// run before left in it is removed first.
    pub dir: PathBuf,
    /// The job.
    pub job: PipelineJob,
    /// The execution model.
    pub model: ExecutionModel,
    /// Inputs per second of the paced feed; the backlog holds as many as the feed would.
    pub inputs_per_s: u32,
    /// Length of the feed, in milliseconds.
    pub feed_ms: u64,
    /// Write the whole input before the job starts, and time the job (no latency then).
    pub backlog: bool,
    /// Run the shared fault schedule.
    pub faults: bool,
    /// Seed of the feeder's keys, amounts and disorder.
    pub seed: u64,
    /// How long the job has to finish once the input has ended, in milliseconds.
    pub finish_bound_ms: u64,
}

/// What one run found.
pub struct LiveRun {
    /// Every anomaly the checker found; empty when the output was exactly once (or, for a
    /// model that promises less, at least once).
    pub violations: Vec<String>,
    /// The run's measurements; its times are wall-clock ms since the run began.
    pub observed: Observed,
    /// When the job started (paced runs: with the feed), in ms since the run began.
    pub job_started_ms: u64,
    /// The faults struck, with when.
    pub faults: Vec<(u64, &'static str)>,
}

/// Runs `spec` to the end of its check.
pub fn run(spec: &LiveSpec) -> Result<LiveRun, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, run_live(spec))
}

/// Wall-clock milliseconds since the Unix epoch: the event time the feeder stamps.
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A free port on 127.0.0.1, as the OS hands it out.
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// The broker child process.
struct BrokerProcess {
    weir: PathBuf,
    dir: PathBuf,
    addr: String,
    child: Option<Child>,
    starts: u32,
}

impl BrokerProcess {
    /// Starts it on its data directory and waits until it serves.
    async fn start(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "the broker is already running");
        self.starts += 1;
        let log_path = self.dir.join(format!("broker-{}.log", self.starts));
        let log = std::fs::File::create(&log_path).map_err(|e| format!("{log_path:?}: {e}"))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&self.weir)
            .arg("broker")
            .args(["--listen", &self.addr])
            .arg("--data-dir")
            .arg(self.dir.join("broker"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {:?} broker: {e}", self.weir))?;
        self.child = Some(child);
        let until = now_ms() + BROKER_START_MS;
        while now_ms() < until {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if text.contains("listening on") {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("the broker exited ({status}); see {log_path:?}"));
            }
            sleep_ms(50).await;
        }
        Err(format!(
            "the broker did not serve within {BROKER_START_MS} ms; see {log_path:?}"
        ))
    }

    /// SIGKILL: what it held in memory is gone; what it had written to its files stays.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The job's processes in this one: they crash by being aborted, which drops their subtasks
/// and connections at once, as a killed process's would be.
struct JobProcesses {
    job_manager: JobManagerConfig,
    task_manager: TaskManagerConfig,
    checkpoint_dir: PathBuf,
    observed: Rc<RefCell<Observed>>,
    rec: Rc<RefCell<Recorder>>,
    jm: Option<tokio::task::JoinHandle<()>>,
    tm: Option<tokio::task::JoinHandle<()>>,
}

impl JobProcesses {
    fn start_job_manager(&mut self) {
        let (config, dir) = (self.job_manager.clone(), self.checkpoint_dir.clone());
        let observed = Rc::clone(&self.observed);
        let hook = Rc::new(move |e: &JobEvent| observed.borrow_mut().on_event(e));
        self.jm = Some(tokio::task::spawn_local(async move {
            loop {
                // Only a start can fail (its port still held, its directory unreadable): try
                // again, as a supervisor would.
                let Err(e) =
                    run_job_manager(config.clone(), Disk::real(&dir), Some(hook.clone())).await;
                tracing::warn!(error = %e, "job manager could not start; retrying");
                sleep_ms(200).await;
            }
        }));
    }

    fn start_task_manager(&mut self) {
        let config = TaskManagerConfig {
            clock: Clock::starting_at(wall_ms()),
            ..self.task_manager.clone()
        };
        let (observed, rec) = (Rc::clone(&self.observed), Rc::clone(&self.rec));
        let hook = Rc::new(
            move |_: &str, samples: &[weir_engine::runtime::metrics::TaskSample]| {
                observed.borrow_mut().on_samples(&rec, samples);
            },
        );
        self.tm = Some(tokio::task::spawn_local(run_task_manager(
            config,
            Some(hook),
        )));
    }

    fn crash_job_manager(&mut self) {
        if let Some(h) = self.jm.take() {
            h.abort();
        }
    }

    fn crash_task_manager(&mut self) {
        if let Some(h) = self.tm.take() {
            h.abort();
        }
    }
}

impl Drop for JobProcesses {
    fn drop(&mut self) {
        self.crash_job_manager();
        self.crash_task_manager();
    }
}

async fn run_live(spec: &LiveSpec) -> Result<LiveRun, String> {
    assert!(spec.inputs_per_s > 0 && spec.feed_ms > 0, "a run has input");
    start_live_clock();
    // A broker or job manager that found an earlier run's data would resume that run.
    if spec.dir.exists() {
        std::fs::remove_dir_all(&spec.dir).map_err(|e| format!("{:?}: {e}", spec.dir))?;
    }
    std::fs::create_dir_all(&spec.dir).map_err(|e| format!("{:?}: {e}", spec.dir))?;
    let mut broker = BrokerProcess {
        weir: spec.weir.clone(),
        dir: spec.dir.clone(),
        addr: format!("127.0.0.1:{}", free_port()?),
        child: None,
        starts: 0,
    };
    broker.start().await?;
    let cluster = Cluster::new(client_on("bench", [broker.addr.clone()], Net::Tokio));
    let topics_by = now_ms() + BROKER_START_MS;
    let kind = &spec.job;
    create_topic(&cluster, kind.input_topic(), INPUT_PARTITIONS, 1, topics_by).await;
    for output in kind.outputs() {
        create_topic(&cluster, output, OUTPUT_PARTITIONS, 1, topics_by).await;
    }
    let built = build_job(kind);
    let mut job = job_config(&built, &[], eos_pipeline::PIPELINE.exchange, None);
    job.bootstrap = vec![broker.addr.clone()];
    let inputs = u64::from(spec.inputs_per_s) * spec.feed_ms / 1_000;
    job.model = on_one_broker(spec.model, inputs);
    let jm_addr = format!("127.0.0.1:{}", free_port()?);
    let rec = Rc::new(RefCell::new(Recorder::default()));
    let observed = Rc::new(RefCell::new(Observed::default()));
    let mut processes = JobProcesses {
        task_manager: TaskManagerConfig {
            name: "tm".into(),
            host: "127.0.0.1".into(),
            job_manager: jm_addr.clone(),
            slots: SLOTS,
            net: Net::Tokio,
            clock: Clock::starting_at(wall_ms()),
            heartbeat_interval_ms: job.heartbeat_interval_ms,
            heartbeat_timeout_ms: job.heartbeat_timeout_ms,
            control_frame_bytes_max: job.control_frame_bytes_max,
            throttle: Throttle::default(),
            job: built,
            tables: Tables::default(),
        },
        job_manager: JobManagerConfig {
            listen: jm_addr.clone(),
            net: Net::Tokio,
            job: job.clone(),
            savepoint: None,
        },
        checkpoint_dir: spec.dir.join("checkpoints"),
        observed: Rc::clone(&observed),
        rec: Rc::clone(&rec),
        jm: None,
        tm: None,
    };
    let done = Rc::new(Cell::new(false));
    let job_started_ms;
    let mut faults = Vec::new();
    if spec.backlog {
        feed(&cluster, spec, inputs, false).await?;
        job_started_ms = now_ms();
        processes.start_job_manager();
        processes.start_task_manager();
    } else {
        job_started_ms = now_ms();
        processes.start_job_manager();
        processes.start_task_manager();
        let probe = matches!(kind, PipelineJob::OrderTotals).then(|| {
            tokio::task::spawn_local(probe(
                broker.addr.clone(),
                Rc::clone(&observed),
                Rc::clone(&done),
            ))
        });
        let feeding = feed(&cluster, spec, inputs, true);
        let striking = async {
            if spec.faults {
                strike(spec, &mut broker, &mut processes, &mut faults).await
            } else {
                Ok(())
            }
        };
        let (fed, struck) = tokio::join!(feeding, striking);
        fed?;
        struck?;
        drop(probe);
    }
    let deadline = now_ms() + spec.finish_bound_ms;
    let finished = wait_finished(
        Net::Tokio,
        &jm_addr,
        job.control_frame_bytes_max,
        (deadline, "in time"),
        STATUS_MS,
    )
    .await;
    done.set(true);
    let mut violations = Vec::new();
    match finished {
        Ok(()) => {
            observed.borrow_mut().finished_at_ms = Some(now_ms());
            let drained = read_committed(&rec, &cluster, kind, deadline + 30_000).await?;
            observed.borrow_mut().inputs = drained.inputs_len();
            let at_least_once = matches!(spec.model, ExecutionModel::Storm { .. });
            let (windows, found) = check_output(kind, at_least_once, &drained);
            if windows == 0 {
                violations.push("liveness: the input holds no rows".into());
            }
            violations.extend(found);
        }
        Err(why) => violations.push(format!("liveness: {why}")),
    }
    drop(processes);
    broker.kill();
    note(&rec, "bench", "run over".into());
    let observed = std::mem::take(&mut *observed.borrow_mut());
    Ok(LiveRun {
        violations,
        observed,
        job_started_ms,
        faults,
    })
}

/// `model` as it runs against one broker with `inputs` in all.
fn on_one_broker(model: ExecutionModel, inputs: u64) -> ExecutionModel {
    match model {
        // The internal topics get one replica.
        ExecutionModel::KafkaStreams {
            commit_interval_ms,
            grace_ms,
            ..
        } => ExecutionModel::KafkaStreams {
            commit_interval_ms,
            grace_ms,
            replication_factor: 1,
        },
        // A source whose open trees reach the bound stops reading, and its first fetches
        // after a restart or over a backlog can come from one partition alone: its other
        // partition then holds its watermark back, no window fires, no tree completes, and
        // the job stalls. Bounded by the whole input, it cannot.
        ExecutionModel::Storm {
            message_timeout_ms,
            max_spout_pending,
            commit_interval_ms,
        } => ExecutionModel::Storm {
            message_timeout_ms,
            max_spout_pending: max_spout_pending.max(u32::try_from(inputs).unwrap_or(u32::MAX)),
            commit_interval_ms,
        },
        model => model,
    }
}

/// Writes `inputs` keyed amounts, at the spec's rate when `paced` (else as fast as the broker
/// takes them), then an end marker on every partition.
async fn feed(
    cluster: &Arc<Cluster>,
    spec: &LiveSpec,
    inputs: u64,
    paced: bool,
) -> Result<(), String> {
    let producer = loop {
        match Producer::new(
            Arc::clone(cluster),
            producer_config(120_000),
            Clock::starting_at(wall_ms()),
        )
        .await
        {
            Ok(p) => break p,
            Err(e) if now_ms() > BROKER_START_MS => return Err(format!("no producer: {e}")),
            Err(_) => sleep_ms(RETRY_MS).await,
        }
    };
    let topic = spec.job.input_topic();
    let mut rng = rng::derive(spec.seed, "live-feeder");
    let mut generated = match spec.job.generator() {
        Some((workload, config)) => Some(workload.events(spec.seed, &config, inputs)?),
        None => None,
    };
    let mut in_flight: VecDeque<Delivery> = VecDeque::new();
    let (started, started_wall_ms) = (now_ms(), wall_ms());
    let mut failed = 0u64;
    for sent in 0..inputs {
        // Input `sent` is due `sent / rate` seconds after the start.
        let due_ms = sent * 1_000 / u64::from(spec.inputs_per_s);
        // Paced, an input happens when it is sent; in a backlog, when it would have been
        // paced, so that a window holds as many inputs as in the paced runs.
        let happened_ms = if paced {
            sleep_ms((started + due_ms).saturating_sub(now_ms())).await;
            wall_ms()
        } else {
            started_wall_ms + i64::try_from(due_ms).expect("a feed is shorter than an hour")
        };
        let (key, value, ts) = match &mut generated {
            Some(events) => {
                let e = events
                    .next()
                    .expect("the generator yields every input asked for");
                (Bytes::from(e.key), Bytes::from(e.value), e.timestamp_ms)
            }
            None => {
                let key = format!("customer-{:02}", rng.random_range(0..KEYS));
                let amount: i64 = rng.random_range(1..=100);
                let ts = happened_ms - rng.random_range(0..=DISORDER_MS);
                (Bytes::from(key), Bytes::from(amount.to_string()), ts)
            }
        };
        let record = Record {
            timestamp: Some(ts),
            ..Record::new(topic, Some(key), value)
        };
        let delivery = producer
            .send(record)
            .await
            .map_err(|e| format!("send: {e}"))?;
        in_flight.push_back(delivery);
        if in_flight.len() >= IN_FLIGHT_MAX {
            let oldest = in_flight.pop_front().expect("the queue is full");
            failed += u64::from(oldest.wait().await.is_err());
        }
    }
    for d in in_flight {
        failed += u64::from(d.wait().await.is_err());
    }
    if failed > 0 {
        tracing::warn!(failed, "inputs without an acknowledgement");
    }
    end_input(&producer, topic, wall_ms).await;
    producer.close().await;
    Ok(())
}

/// The shared fault schedule: the task manager, the broker and the job manager crash in turn
/// and come back after [`DOWN_MS`].
async fn strike(
    spec: &LiveSpec,
    broker: &mut BrokerProcess,
    processes: &mut JobProcesses,
    faults: &mut Vec<(u64, &'static str)>,
) -> Result<(), String> {
    let at = |i: usize| (spec.feed_ms as f64 * FAULTS_AT[i]) as u64;
    let observed = Rc::clone(&processes.observed);
    // Recovery runs from the crash to the next completed checkpoint or commit.
    let crashed = |what: &'static str, faults: &mut Vec<(u64, &'static str)>| {
        let now = now_ms();
        faults.push((now, what));
        observed.borrow_mut().failed_at_ms.get_or_insert(now);
    };
    sleep_ms(at(0).saturating_sub(now_ms())).await;
    crashed("task manager crashed", faults);
    processes.crash_task_manager();
    sleep_ms(DOWN_MS).await;
    processes.start_task_manager();
    sleep_ms(at(1).saturating_sub(now_ms())).await;
    crashed("broker killed (SIGKILL)", faults);
    broker.kill();
    sleep_ms(DOWN_MS).await;
    broker.start().await?;
    sleep_ms(at(2).saturating_sub(now_ms())).await;
    crashed("job manager crashed", faults);
    processes.crash_job_manager();
    sleep_ms(DOWN_MS).await;
    processes.start_job_manager();
    Ok(())
}

/// Follows the output under read_committed until `done`, noting how long after its window's
/// end each result became visible.
async fn probe(broker: String, observed: Rc<RefCell<Observed>>, done: Rc<Cell<bool>>) {
    let cluster = Cluster::new(client_on("probe", [broker], Net::Tokio));
    let mut consumer = Consumer::new(
        cluster,
        ConsumerConfig {
            fetch_max_wait_ms: 50,
            isolation: Isolation::ReadCommitted,
            auto_offset_reset: OffsetReset::Earliest,
            ..ConsumerConfig::default()
        },
    );
    let outputs = PipelineJob::OrderTotals.outputs();
    consumer.assign(
        outputs
            .iter()
            .flat_map(|t| (0..OUTPUT_PARTITIONS).map(move |p| (t.to_string(), p))),
    );
    while !done.get() {
        match consumer.poll(Duration::from_millis(50)).await {
            Ok(records) => {
                let now = wall_ms();
                let mut o = observed.borrow_mut();
                for r in records {
                    o.visible_after_ms
                        .push(u64::try_from(now - r.timestamp).unwrap_or(0));
                }
            }
            Err(_) => sleep_ms(RETRY_MS).await,
        }
    }
}
