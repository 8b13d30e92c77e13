//! The job manager: schedules a job's subtasks on task managers, coordinates checkpoints, and
//! restarts the job from its last completed checkpoint when anything fails.
//!
//! ```text
//! Scheduling --enough slots--> Running --failure--> Restarting --backoff--> Scheduling
//!                                 |                      \--attempts_max--> Failed
//!                                 |--input ended, final checkpoint committed--> Finished
//!                                 \--stop asked, savepoint committed--> Stopped
//! ```
//!
//! Failover is global: a failed subtask, a task manager that goes silent or re-registers,
//! or a checkpoint storage error cancels every subtask of the attempt, and the next attempt
//! restores the newest completed checkpoint. Every stage here is joined to the next by an
//! all-to-all exchange, so a restart of only the failed region would restart everything anyway.
//!
//! A checkpoint completes once every subtask acknowledged it and it is durable on the job
//! manager's disk; only then are the sinks told to commit. The attempt number is saved before
//! each deployment, so a restarted job manager never reuses one: subtasks, their ports and
//! their messages are all told apart by it.

use super::config::{ExecutionModel, JobConfig, RuntimeMutation};
use super::exchange::ChannelSource;
use super::metrics::{CheckpointStats, DropCounts, TaskSample};
use super::rpc::{
    InputChannel, JobState, RpcError, TaskDeployment, ToClient, ToJobManager, ToTaskManager,
    read_message, write_message,
};
use super::snapshot::{
    BatchPlan, CheckpointStore, CompletedCheckpoint, JobMeta, TaskId, TaskSnapshot,
};
use crate::graph::{Stage, VertexKind};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use weir_seams::disk::Disk;
use weir_seams::net::Net;
use weir_wire::frame::FrameError;

/// How often the job manager checks timers (heartbeats, triggers, timeouts, restarts).
const TICK_MS: u64 = 50;
/// Messages queued to one connection before the job manager waits.
const OUTBOX_MESSAGES_MAX: usize = 256;
/// Messages queued from all connections to the job manager.
const INBOX_MESSAGES_MAX: usize = 1024;
/// First port of subtasks' result partitions; each attempt takes the next block of 32.
const EXCHANGE_PORT_BASE: u16 = 20_000;
/// Attempts before the port blocks wrap around.
const PORT_BLOCKS: u64 = 256;
/// Storm model: first port of subtasks' acknowledgement partitions, past every block of
/// result partitions.
const ACK_PORT_BASE: u16 = EXCHANGE_PORT_BASE + (PORT_BLOCKS * 32) as u16;
/// How often a completion is sent again while the job waits for its sinks to commit.
const COMPLETE_RESEND_MS: u64 = 1_000;

/// Settings of a job manager.
#[derive(Clone, Debug)]
pub struct JobManagerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Network.
    pub net: Net,
    /// The job it runs.
    pub job: JobConfig,
    /// A savepoint to start from when the job has no checkpoint yet, or was stopped; the
    /// stopped run's checkpoints are then deleted.
    pub savepoint: Option<String>,
}

/// Something that happened to the job, for logs and the simulator's timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum JobEvent {
    /// An attempt was deployed, restoring a checkpoint or not.
    Deployed {
        /// The attempt.
        attempt: u64,
        /// The checkpoint it restores.
        restored: Option<u64>,
    },
    /// A checkpoint completed.
    CheckpointCompleted(CheckpointStats),
    /// Micro-batch: a batch started, its range logged (or, re-run, read from the log).
    BatchStarted {
        /// The checkpoint that ends it.
        checkpoint_id: u64,
        /// The completed checkpoint it starts from.
        after: Option<u64>,
        /// Each source subtask's end offset per partition.
        ends: BTreeMap<String, BTreeMap<i32, i64>>,
        /// It re-runs a logged batch.
        replayed: bool,
    },
    /// A subtask committed on its own (Kafka Streams and Storm models).
    SubtaskCommitted {
        /// The attempt.
        attempt: u64,
        /// The subtask.
        task: TaskId,
        /// From the commit's start to the broker's answer.
        commit_ms: u64,
        /// Rows its windows have dropped as late so far in the attempt.
        late_dropped: u64,
    },
    /// A checkpoint was given up.
    CheckpointAbandoned {
        /// Its id.
        id: u64,
        /// Why.
        why: String,
    },
    /// The running attempt failed and will be restarted.
    Failover {
        /// The attempt that failed.
        attempt: u64,
        /// Why.
        reason: String,
    },
    /// A savepoint was written.
    Savepoint(String),
    /// Input ended and every output is committed.
    Finished,
    /// The job stopped after committing the output of this savepoint.
    Stopped {
        /// The savepoint to resume from.
        savepoint: String,
    },
    /// The job failed for good.
    Failed(String),
}

/// Receives the job's events.
pub type EventHook = Rc<dyn Fn(&JobEvent)>;

enum Inbound {
    Opened(u64, mpsc::Sender<Outbound>),
    Message(u64, ToJobManager),
    Closed(u64),
}

enum Outbound {
    Tm(ToTaskManager),
    Client(ToClient),
}

struct Tm {
    conn: u64,
    host: String,
    slots: u32,
    last_seen: Instant,
}

struct Pending {
    id: u64,
    started: Instant,
    /// Micro-batch: where each source subtask's share of the batch ends, as reported.
    plans: BTreeMap<TaskId, BTreeMap<i32, i64>>,
    /// Micro-batch: the batch is logged and its sources read.
    running: bool,
    acks: BTreeMap<TaskId, TaskSnapshot>,
    savepoint_for: Vec<u64>,
    /// Clients that asked to stop once this checkpoint, a savepoint, is committed.
    stop_for: Vec<u64>,
}

/// A checkpoint the job waits for every sink to commit, and what it does then: finish (its
/// input ended), or stop with a savepoint and answer the clients that asked.
struct Finishing {
    checkpoint_id: u64,
    stop: Option<(String, Vec<u64>)>,
}

struct JobManager {
    job: JobConfig,
    store: CheckpointStore,
    hook: Option<EventHook>,
    meta: JobMeta,
    state: JobState,
    failure: Option<String>,
    stages: Vec<Stage>,
    conns: BTreeMap<u64, mpsc::Sender<Outbound>>,
    tms: BTreeMap<String, Tm>,
    placement: BTreeMap<TaskId, String>,
    latest: Option<CompletedCheckpoint>,
    /// `latest` came from a savepoint, not from this job's own checkpoints.
    latest_is_savepoint: bool,
    pending: Option<Pending>,
    savepoint_waiters: Vec<u64>,
    stop_waiters: Vec<u64>,
    next_trigger: Instant,
    restart_at: Option<Instant>,
    consecutive_failures: u32,
    restarts: u64,
    running_since: Instant,
    finishing: Option<Finishing>,
    /// Checkpoints that failed since the last one completed.
    failed_checkpoints: u32,
    committed: BTreeSet<TaskId>,
    last_complete_sent: Instant,
    samples: BTreeMap<TaskId, TaskSample>,
    /// Task managers dropped while they ran subtasks, and the time by which their own
    /// heartbeat timeout has stopped those subtasks. No attempt deploys before then (unless
    /// the task manager registers again, which ends its old session): a subtask left running
    /// would be a zombie that fences the new attempt's transactions.
    lost: BTreeMap<String, Instant>,
    /// Micro-batch: the offset log's last batch.
    batch_plan: Option<BatchPlan>,
}

/// Runs the job manager for `config.job`, keeping its checkpoints on `disk`, until the
/// process ends. Fails only if it cannot listen or read its own disk at start.
pub async fn run_job_manager(
    config: JobManagerConfig,
    disk: Disk,
    hook: Option<EventHook>,
) -> Result<Infallible, String> {
    config.job.topology.validate().map_err(|e| e.to_string())?;
    let stages = config.job.topology.stages();
    let store = CheckpointStore::open(disk)
        .await
        .map_err(|e| e.to_string())?;
    let listener = config
        .net
        .bind(&config.listen)
        .await
        .map_err(|e| format!("listen on {}: {e}", config.listen))?;
    let mut meta = store.meta().map_err(|e| e.to_string())?;
    let mut jm = JobManager {
        job: config.job.clone(),
        store,
        hook,
        meta: JobMeta::default(),
        state: JobState::Scheduling,
        failure: None,
        stages,
        conns: BTreeMap::new(),
        tms: BTreeMap::new(),
        placement: BTreeMap::new(),
        latest: None,
        latest_is_savepoint: false,
        pending: None,
        savepoint_waiters: Vec::new(),
        stop_waiters: Vec::new(),
        next_trigger: Instant::now(),
        restart_at: Some(Instant::now()),
        consecutive_failures: 0,
        restarts: 0,
        running_since: Instant::now(),
        finishing: None,
        failed_checkpoints: 0,
        committed: BTreeSet::new(),
        last_complete_sent: Instant::now(),
        samples: BTreeMap::new(),
        lost: BTreeMap::new(),
        batch_plan: None,
    };
    if meta.stopped.is_some() {
        if config.savepoint.is_some() {
            // Checkpoints go first: a crash before the flag is cleared then finds no checkpoint
            // and starts from the savepoint again.
            jm.store
                .clear_checkpoints()
                .await
                .map_err(|e| e.to_string())?;
            meta.stopped = None;
            jm.store.save_meta(&meta).await.map_err(|e| e.to_string())?;
        } else {
            jm.state = JobState::Stopped;
        }
    }
    let ignore_savepoint = config.job.mutation == Some(RuntimeMutation::SavepointIgnored);
    match jm.store.latest_checkpoint() {
        Ok(Some(c)) => jm.latest = Some(c),
        Ok(None) => {
            if let Some(name) = config.savepoint.as_ref().filter(|_| !ignore_savepoint) {
                match jm.store.savepoint(name) {
                    Ok(s) => {
                        jm.latest = Some(s);
                        jm.latest_is_savepoint = true;
                    }
                    Err(e) => jm.fail(format!("savepoint {name}: {e}")),
                }
            }
        }
        Err(e) => jm.fail(e.to_string()),
    }
    match jm.store.batch_plan() {
        Ok(plan) => jm.batch_plan = plan,
        Err(e) => jm.fail(e.to_string()),
    }
    if let Some(c) = &jm.latest {
        meta.next_checkpoint_id = meta.next_checkpoint_id.max(c.id + 1);
    }
    if meta.finished {
        jm.state = JobState::Finished;
    }
    jm.meta = meta;
    let (inbound_tx, mut inbound) = mpsc::channel(INBOX_MESSAGES_MAX);
    let mut connections = JoinSet::new();
    let limit = config.job.control_frame_bytes_max;
    connections.spawn(accept_loop(listener, inbound_tx, limit));
    let mut tick = tokio::time::interval(Duration::from_millis(TICK_MS));
    loop {
        tokio::select! {
            Some(event) = inbound.recv() => match event {
                Inbound::Opened(conn, tx) => {
                    jm.conns.insert(conn, tx);
                }
                Inbound::Message(conn, message) => jm.on_message(conn, message).await,
                Inbound::Closed(conn) => jm.on_closed(conn),
            },
            _ = tick.tick() => jm.on_tick().await,
        }
    }
}

async fn accept_loop(
    listener: weir_seams::net::Listener,
    inbound: mpsc::Sender<Inbound>,
    limit: usize,
) {
    let mut conns = JoinSet::new();
    let mut next_conn = 0u64;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        next_conn += 1;
        let conn = next_conn;
        let (mut reader, mut writer) = tokio::io::split(stream);
        let (tx, mut outbox) = mpsc::channel::<Outbound>(OUTBOX_MESSAGES_MAX);
        if inbound.send(Inbound::Opened(conn, tx)).await.is_err() {
            return;
        }
        conns.spawn(async move {
            while let Some(message) = outbox.recv().await {
                let written = match message {
                    Outbound::Tm(m) => write_message(&mut writer, &m).await,
                    Outbound::Client(m) => write_message(&mut writer, &m).await,
                };
                if written.is_err() {
                    return;
                }
            }
        });
        let inbound = inbound.clone();
        conns.spawn(async move {
            loop {
                let message: Result<ToJobManager, RpcError> =
                    read_message(&mut reader, limit).await;
                let message = match message {
                    Ok(m) => m,
                    Err(e) => {
                        // A frame over the limit (a snapshot too large to acknowledge) ends
                        // the connection like a dead peer does; say which it was. Clients
                        // close theirs after every answer.
                        if matches!(e, RpcError::Frame(FrameError::Closed)) {
                            tracing::debug!(conn, "control connection closed by its peer");
                        } else {
                            tracing::warn!(conn, error = %e, "control connection failed");
                        }
                        let _ = inbound.send(Inbound::Closed(conn)).await;
                        return;
                    }
                };
                if inbound.send(Inbound::Message(conn, message)).await.is_err() {
                    return;
                }
            }
        });
        while conns.try_join_next().is_some() {}
    }
}

impl JobManager {
    /// Records the job dropped, by reason: up to the latest completed checkpoint, whose counts
    /// cover exactly the input its output holds; under the models without checkpoints, what
    /// the current attempt's subtasks last reported.
    fn dropped(&self) -> DropCounts {
        let mut total = DropCounts::default();
        match &self.latest {
            Some(c) if !self.job.model.uncoordinated() => {
                for t in c.tasks.values() {
                    total.merge(&t.drops.clone().into());
                }
            }
            _ => {
                for s in self.samples.values() {
                    total.merge(&s.drops);
                }
            }
        }
        total
    }

    /// Whether stage `stage` reads a source (and so takes triggers and plans batches).
    fn is_source(&self, stage: u32) -> bool {
        let head = self.stages[stage as usize].vertices[0];
        matches!(
            self.job.topology.vertices[head as usize].kind,
            VertexKind::Source { .. }
        )
    }

    fn event(&self, e: JobEvent) {
        tracing::info!(event = ?e, "job");
        if let Some(hook) = &self.hook {
            hook(&e);
        }
    }

    fn fail(&mut self, why: String) {
        self.state = JobState::Failed;
        self.failure = Some(why.clone());
        self.event(JobEvent::Failed(why));
    }

    fn send(&self, conn: u64, message: Outbound) {
        if let Some(tx) = self.conns.get(&conn) {
            // A full outbox means a stuck peer; its heartbeat timeout ends it.
            let _ = tx.try_send(message);
        }
    }

    fn send_tm(&self, tm: &str, message: ToTaskManager) {
        if let Some(t) = self.tms.get(tm) {
            self.send(t.conn, Outbound::Tm(message));
        }
    }

    /// Task managers running subtasks of the current attempt.
    fn busy_tms(&self) -> BTreeSet<String> {
        self.placement.values().cloned().collect()
    }

    async fn on_message(&mut self, conn: u64, message: ToJobManager) {
        let tm_of_conn = self
            .tms
            .iter()
            .find(|(_, t)| t.conn == conn)
            .map(|(n, _)| n.clone());
        if let Some(name) = &tm_of_conn
            && let Some(t) = self.tms.get_mut(name)
        {
            t.last_seen = Instant::now();
        }
        match message {
            ToJobManager::Register { name, host, slots } => {
                self.lost.remove(&name);
                let replaced = self.tms.insert(
                    name.clone(),
                    Tm {
                        conn,
                        host,
                        slots: slots.min(32),
                        last_seen: Instant::now(),
                    },
                );
                self.send(conn, Outbound::Tm(ToTaskManager::Welcome));
                if replaced.is_some() && self.busy_tms().contains(&name) {
                    self.failover(format!("task manager {name} registered again"));
                }
            }
            ToJobManager::Heartbeat { samples } => {
                for s in samples {
                    if let Some(task) = s.task
                        && s.attempt == self.meta.attempt
                    {
                        self.samples.insert(task, s);
                    }
                }
                self.send(conn, Outbound::Tm(ToTaskManager::HeartbeatAck));
            }
            ToJobManager::Ack {
                attempt,
                checkpoint_id,
                task,
                snapshot,
            } => {
                if attempt == self.meta.attempt
                    && let Some(p) = &mut self.pending
                    && p.id == checkpoint_id
                {
                    p.acks.insert(task, snapshot);
                    if p.acks.len() == self.placement.len() {
                        self.complete_pending().await;
                    }
                }
            }
            ToJobManager::Committed {
                attempt,
                checkpoint_id,
                task,
            } => {
                if attempt == self.meta.attempt
                    && self
                        .finishing
                        .as_ref()
                        .is_some_and(|f| checkpoint_id >= f.checkpoint_id)
                {
                    self.committed.insert(task);
                    self.check_finished().await;
                }
            }
            ToJobManager::SubtaskCommitted {
                attempt,
                task,
                commit_ms,
                drained,
                late_dropped,
            } => {
                if attempt == self.meta.attempt {
                    self.event(JobEvent::SubtaskCommitted {
                        attempt,
                        task,
                        commit_ms,
                        late_dropped,
                    });
                    if drained {
                        self.committed.insert(task);
                        self.check_finished().await;
                    }
                }
            }
            ToJobManager::Planned {
                attempt,
                checkpoint_id,
                task,
                ends,
            } => {
                let sources = self
                    .placement
                    .keys()
                    .filter(|t| self.is_source(t.stage))
                    .count();
                if attempt == self.meta.attempt
                    && let Some(p) = &mut self.pending
                    && p.id == checkpoint_id
                    && !p.running
                {
                    p.plans.insert(task, ends);
                    if p.plans.len() == sources {
                        self.log_batch().await;
                    }
                }
            }
            ToJobManager::Failed {
                attempt,
                task,
                reason,
            } => {
                if attempt == self.meta.attempt {
                    self.failover(format!("subtask {task} failed: {reason}"));
                }
            }
            ToJobManager::Status => {
                let status = ToClient::Status {
                    state: self.state,
                    attempt: self.meta.attempt,
                    last_checkpoint: self.latest.as_ref().map(|c| c.id),
                    restarts: self.restarts,
                    failure: self.failure.clone(),
                    dropped: self.dropped(),
                };
                self.send(conn, Outbound::Client(status));
            }
            // Stopping is idempotent: a client whose answer was lost asks again.
            ToJobManager::StopWithSavepoint if let Some(savepoint) = self.meta.stopped.clone() => {
                self.send(conn, Outbound::Client(ToClient::Savepoint(Ok(savepoint))));
            }
            ToJobManager::TriggerSavepoint | ToJobManager::StopWithSavepoint
                if self.state != JobState::Running =>
            {
                self.refuse(vec![conn], &format!("the job is {:?}", self.state));
            }
            ToJobManager::TriggerSavepoint | ToJobManager::StopWithSavepoint
                if self.job.model.uncoordinated() =>
            {
                let why = "under the Kafka Streams and Storm models subtasks commit on their \
                           own, with no checkpoint to save: there are no savepoints";
                self.refuse(vec![conn], why);
            }
            ToJobManager::TriggerSavepoint => self.savepoint_waiters.push(conn),
            ToJobManager::StopWithSavepoint => self.stop_waiters.push(conn),
        }
    }

    fn on_closed(&mut self, conn: u64) {
        self.conns.remove(&conn);
        self.savepoint_waiters.retain(|c| *c != conn);
        self.stop_waiters.retain(|c| *c != conn);
        let lost: Vec<String> = self
            .tms
            .iter()
            .filter(|(_, t)| t.conn == conn)
            .map(|(n, _)| n.clone())
            .collect();
        for name in lost {
            self.drop_tm(&name, format!("lost task manager {name}"));
        }
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        let timeout = Duration::from_millis(self.job.heartbeat_timeout_ms);
        let silent: Vec<String> = self
            .tms
            .iter()
            .filter(|(_, t)| now > t.last_seen + timeout)
            .map(|(n, _)| n.clone())
            .collect();
        for name in silent {
            self.drop_tm(&name, format!("task manager {name} missed its heartbeats"));
        }
        match self.state {
            JobState::Scheduling | JobState::Restarting => {
                if self.restart_at.is_some_and(|t| now >= t) {
                    self.state = JobState::Scheduling;
                    self.try_deploy().await;
                }
            }
            JobState::Running => {
                if now
                    >= self.running_since + Duration::from_millis(self.job.restart.reset_after_ms)
                {
                    self.consecutive_failures = 0;
                }
                self.checkpoint_timers(now);
                if let Some(f) = &self.finishing
                    && now >= self.last_complete_sent + Duration::from_millis(COMPLETE_RESEND_MS)
                {
                    self.broadcast_complete(f.checkpoint_id);
                }
            }
            JobState::Finished | JobState::Failed | JobState::Stopped => {}
        }
    }

    fn checkpoint_timers(&mut self, now: Instant) {
        if let Some(p) = &self.pending
            && now >= p.started + Duration::from_millis(self.job.checkpoint.timeout_ms)
        {
            let id = p.id;
            let missing: Vec<String> = self
                .placement
                .keys()
                .filter(|t| !p.acks.contains_key(t))
                .map(ToString::to_string)
                .collect();
            let p = self.pending.take().expect("pending");
            let why = format!("checkpoint {id} timed out");
            self.refuse(p.savepoint_for, &why);
            self.refuse(p.stop_for, &why);
            self.next_trigger = now;
            self.event(JobEvent::CheckpointAbandoned {
                id,
                why: format!("timed out waiting for subtasks {}", missing.join(", ")),
            });
            self.failed_checkpoints += 1;
            if self.failed_checkpoints > self.job.checkpoint.tolerable_failures {
                self.failover(format!(
                    "{} checkpoints in a row failed",
                    self.failed_checkpoints
                ));
                return;
            }
        }
        if self.job.model.uncoordinated() {
            // Each subtask commits on its own; nothing is coordinated.
            return;
        }
        let due = now >= self.next_trigger
            || !self.savepoint_waiters.is_empty()
            || !self.stop_waiters.is_empty();
        if self.pending.is_none() && self.finishing.is_none() && due {
            let id = self.meta.next_checkpoint_id;
            self.meta.next_checkpoint_id += 1;
            self.pending = Some(Pending {
                id,
                started: now,
                plans: BTreeMap::new(),
                running: false,
                acks: BTreeMap::new(),
                savepoint_for: std::mem::take(&mut self.savepoint_waiters),
                stop_for: std::mem::take(&mut self.stop_waiters),
            });
            if let Some(plan) = self.logged_batch() {
                self.run_batch(id, plan.ends, true);
                return;
            }
            let attempt = self.meta.attempt;
            for (task, tm) in &self.placement {
                if self.is_source(task.stage) {
                    self.send_tm(
                        tm,
                        ToTaskManager::Trigger {
                            attempt,
                            checkpoint_id: id,
                            task: *task,
                        },
                    );
                }
            }
        }
    }

    /// Micro-batch: the logged batch that starts from the latest checkpoint, if there is one
    /// (the job failed, or the checkpoint was abandoned, after it was logged): the next batch
    /// must read the same range.
    fn logged_batch(&self) -> Option<BatchPlan> {
        let after = self.latest.as_ref().map(|c| c.id);
        self.batch_plan
            .as_ref()
            .filter(|p| p.after == after)
            .filter(|_| self.job.mutation != Some(RuntimeMutation::OffsetLogIgnored))
            .cloned()
    }

    /// Micro-batch: every source reported where the pending batch ends; logs the batch
    /// durably, then lets the sources read it.
    async fn log_batch(&mut self) {
        let Some(p) = &self.pending else { return };
        let plan = BatchPlan {
            after: self.latest.as_ref().map(|c| c.id),
            checkpoint_id: p.id,
            ends: p
                .plans
                .iter()
                .map(|(t, ends)| (t.to_string(), ends.clone()))
                .collect(),
        };
        if let Err(e) = self.store.save_batch_plan(&plan).await {
            self.failover(format!("the offset log could not be written: {e}"));
            return;
        }
        let id = plan.checkpoint_id;
        let ends = plan.ends.clone();
        self.batch_plan = Some(plan);
        self.run_batch(id, ends, false);
    }

    /// Micro-batch: tells each source where its share of batch `checkpoint_id` ends.
    fn run_batch(
        &mut self,
        checkpoint_id: u64,
        ends: BTreeMap<String, BTreeMap<i32, i64>>,
        replayed: bool,
    ) {
        let Some(p) = &mut self.pending else { return };
        p.running = true;
        let attempt = self.meta.attempt;
        for (task, tm) in &self.placement {
            if self.is_source(task.stage) {
                let mine = ends.get(&task.to_string()).cloned().unwrap_or_default();
                self.send_tm(
                    tm,
                    ToTaskManager::RunBatch {
                        attempt,
                        checkpoint_id,
                        task: *task,
                        ends: mine,
                    },
                );
            }
        }
        self.event(JobEvent::BatchStarted {
            checkpoint_id,
            after: self.latest.as_ref().map(|c| c.id),
            ends,
            replayed,
        });
    }

    /// When the checkpoint after one that started at `started` and ends `now` is due.
    fn next_trigger_after(&self, started: Instant, now: Instant) -> Instant {
        match self.job.model {
            ExecutionModel::Pipelined
            | ExecutionModel::KafkaStreams { .. }
            | ExecutionModel::Storm { .. } => {
                now + Duration::from_millis(self.job.checkpoint.interval_ms)
            }
            ExecutionModel::MicroBatch { trigger_ms, .. } => {
                (started + Duration::from_millis(trigger_ms)).max(now)
            }
        }
    }

    async fn complete_pending(&mut self) {
        let p = self.pending.take().expect("a checkpoint is pending");
        let input_ended = p.acks.values().all(|s| s.input_ended);
        let checkpoint = CompletedCheckpoint {
            id: p.id,
            attempt: self.meta.attempt,
            tasks: p
                .acks
                .into_iter()
                .map(|(t, s)| (t.to_string(), s))
                .collect(),
        };
        let saved = self
            .store
            .save_checkpoint(&checkpoint, self.job.checkpoint.retained_max)
            .await;
        let now = Instant::now();
        self.next_trigger = self.next_trigger_after(p.started, now);
        if let Err(e) = saved {
            let why = format!("checkpoint {}: {e}", p.id);
            self.refuse(p.savepoint_for, &why);
            self.refuse(p.stop_for, &why);
            self.failover(format!("checkpoint {} could not be stored: {e}", p.id));
            return;
        }
        let mut stop = None;
        if !p.savepoint_for.is_empty() || !p.stop_for.is_empty() {
            match self.store.save_savepoint(&checkpoint).await {
                Ok(name) => {
                    self.event(JobEvent::Savepoint(name.clone()));
                    for conn in p.savepoint_for {
                        self.send(
                            conn,
                            Outbound::Client(ToClient::Savepoint(Ok(name.clone()))),
                        );
                    }
                    if !p.stop_for.is_empty() {
                        stop = Some((name, p.stop_for));
                    }
                }
                Err(e) => {
                    let why = format!("savepoint {}: {e}", p.id);
                    self.refuse(p.savepoint_for, &why);
                    self.refuse(p.stop_for, &why);
                }
            }
        }
        self.event(JobEvent::CheckpointCompleted(CheckpointStats {
            id: checkpoint.id,
            duration_ms: (now - p.started).as_millis() as u64,
            size_bytes: checkpoint.size_bytes(),
        }));
        let id = checkpoint.id;
        self.failed_checkpoints = 0;
        self.latest = Some(checkpoint);
        self.latest_is_savepoint = false;
        // A stop replaces a finish not yet committed: the savepoint holds the ended input, and
        // a run resumed from it finishes at once.
        if stop.is_some() || (input_ended && self.finishing.is_none()) {
            self.finishing = Some(Finishing {
                checkpoint_id: id,
                stop,
            });
        }
        self.broadcast_complete(id);
    }

    fn broadcast_complete(&mut self, checkpoint_id: u64) {
        self.last_complete_sent = Instant::now();
        let attempt = self.meta.attempt;
        for tm in self.busy_tms() {
            self.send_tm(
                &tm,
                ToTaskManager::Complete {
                    attempt,
                    checkpoint_id,
                },
            );
        }
    }

    async fn check_finished(&mut self) {
        // Every subtask that writes a topic (its sink or a side output) must have committed;
        // under Storm, every source, whose trees complete only once the sinks have written.
        let vertices = &self.job.topology.vertices;
        let storm = matches!(self.job.model, ExecutionModel::Storm { .. });
        let writes = |t: &TaskId| {
            if storm {
                return self.is_source(t.stage);
            }
            self.stages[t.stage as usize]
                .vertices
                .iter()
                .any(|v| matches!(vertices[*v as usize].kind, VertexKind::Sink(_)))
        };
        let writers = self.placement.keys().filter(|t| writes(t)).count();
        if self.committed.iter().filter(|t| writes(t)).count() < writers {
            return;
        }
        let stop = self.finishing.as_ref().and_then(|f| f.stop.as_ref());
        let mut meta = self.meta.clone();
        match stop {
            Some((name, _)) => meta.stopped = Some(name.clone()),
            None => meta.finished = true,
        }
        if let Err(e) = self.store.save_meta(&meta).await {
            // Not durable yet: the next commit report tries again.
            tracing::warn!(error = %e, "could not record the job as finished or stopped");
            return;
        }
        self.meta = meta;
        let attempt = self.meta.attempt;
        for tm in self.busy_tms() {
            self.send_tm(&tm, ToTaskManager::Cancel { attempt });
        }
        self.placement.clear();
        match self.finishing.take().and_then(|f| f.stop) {
            Some((savepoint, waiters)) => {
                self.state = JobState::Stopped;
                for conn in waiters {
                    let reply = ToClient::Savepoint(Ok(savepoint.clone()));
                    self.send(conn, Outbound::Client(reply));
                }
                self.event(JobEvent::Stopped { savepoint });
            }
            None => {
                self.state = JobState::Finished;
                let why = "the job finished";
                let waiting = std::mem::take(&mut self.savepoint_waiters);
                self.refuse(waiting, why);
                let waiting = std::mem::take(&mut self.stop_waiters);
                self.refuse(waiting, why);
                self.event(JobEvent::Finished);
            }
        }
    }

    /// Tells clients waiting for a savepoint or a stop why they will not get it.
    fn refuse(&self, conns: Vec<u64>, why: &str) {
        for conn in conns {
            let reply = ToClient::Savepoint(Err(why.to_string()));
            self.send(conn, Outbound::Client(reply));
        }
    }

    /// Forgets task manager `name`. If it ran subtasks of the current attempt, it is told to
    /// cancel them (if the link still works), the job fails over, and the next attempt waits
    /// out the task manager's own heartbeat timeout, after which it has stopped them itself.
    fn drop_tm(&mut self, name: &str, reason: String) {
        let busy = self.busy_tms().contains(name);
        if busy {
            self.send_tm(
                name,
                ToTaskManager::Cancel {
                    attempt: self.meta.attempt,
                },
            );
            let lease_ms = self.job.heartbeat_timeout_ms + 2 * self.job.heartbeat_interval_ms;
            self.lost.insert(
                name.to_string(),
                Instant::now() + Duration::from_millis(lease_ms),
            );
        }
        if let Some(t) = self.tms.remove(name) {
            self.conns.remove(&t.conn);
        }
        if busy {
            self.failover(reason);
        }
    }

    fn failover(&mut self, reason: String) {
        if self.state != JobState::Running && self.state != JobState::Scheduling {
            return;
        }
        let attempt = self.meta.attempt;
        for tm in self.busy_tms() {
            self.send_tm(&tm, ToTaskManager::Cancel { attempt });
        }
        self.placement.clear();
        self.samples.clear();
        if let Some(p) = self.pending.take() {
            let why = format!("checkpoint {} lost to a failover", p.id);
            self.refuse(p.savepoint_for, &why);
            self.refuse(p.stop_for, &why);
        }
        if let Some((_, waiters)) = self.finishing.take().and_then(|f| f.stop) {
            self.refuse(waiters, "the stop was interrupted by a failover");
        }
        self.failed_checkpoints = 0;
        self.committed.clear();
        self.event(JobEvent::Failover {
            attempt,
            reason: reason.clone(),
        });
        self.consecutive_failures += 1;
        self.restarts += 1;
        if self.consecutive_failures > self.job.restart.attempts_max {
            self.fail(format!(
                "{} restarts in a row; the last failure: {reason}",
                self.job.restart.attempts_max
            ));
            return;
        }
        self.state = JobState::Restarting;
        let wait = self.job.restart.backoff_ms(self.consecutive_failures);
        self.restart_at = Some(Instant::now() + Duration::from_millis(wait));
    }

    /// Deploys the next attempt if the live task managers have slots for every subtask and no
    /// lost one may still run subtasks of an earlier attempt.
    async fn try_deploy(&mut self) {
        let now = Instant::now();
        self.lost.retain(|_, stopped_by| *stopped_by > now);
        if !self.lost.is_empty() {
            return;
        }
        let tasks: Vec<TaskId> = self
            .stages
            .iter()
            .enumerate()
            .flat_map(|(s, stage)| {
                (0..stage.parallelism).map(move |i| TaskId {
                    stage: s as u32,
                    subtask: i,
                })
            })
            .collect();
        // Slots by index first, then task manager: subtasks spread over the task managers.
        let max_slots = self.tms.values().map(|t| t.slots).max().unwrap_or(0);
        let slots: Vec<(String, u32)> = (0..max_slots)
            .flat_map(|slot| {
                self.tms
                    .iter()
                    .filter(move |(_, t)| slot < t.slots)
                    .map(move |(n, _)| (n.clone(), slot))
            })
            .collect();
        if slots.len() < tasks.len() {
            return;
        }
        let restore = self.latest.as_ref();
        if let Some(c) = restore {
            let expected: BTreeSet<String> = tasks.iter().map(ToString::to_string).collect();
            let saved: BTreeSet<String> = c.tasks.keys().cloned().collect();
            if expected != saved {
                self.fail(format!(
                    "checkpoint {} holds subtasks {saved:?}; the job has {expected:?} (rescaling is not supported)",
                    c.id
                ));
                return;
            }
        }
        let mut meta = self.meta.clone();
        meta.attempt += 1;
        if let Err(e) = self.store.save_meta(&meta).await {
            tracing::warn!(error = %e, "could not record the next attempt; retrying");
            self.restart_at = Some(Instant::now() + Duration::from_millis(500));
            return;
        }
        self.meta = meta;
        let attempt = self.meta.attempt;
        let block = EXCHANGE_PORT_BASE + ((attempt % PORT_BLOCKS) * 32) as u16;
        let placed: BTreeMap<TaskId, (String, u32)> = tasks.iter().copied().zip(slots).collect();
        let address = |t: &TaskId| {
            let (tm, slot) = &placed[t];
            format!("{}:{}", self.tms[tm].host, block + *slot as u16)
        };
        let storm = matches!(self.job.model, ExecutionModel::Storm { .. });
        let ack_block = ACK_PORT_BASE + ((attempt % PORT_BLOCKS) * 32) as u16;
        let mut per_tm: BTreeMap<String, Vec<TaskDeployment>> = BTreeMap::new();
        let topology = &self.job.topology;
        let is_source = |stage: u32| self.is_source(stage);
        let (sources, _) = topology.source_offsets(&self.stages);
        // The stage each vertex belongs to, to find where an edge's upstream subtasks run.
        let stage_of: BTreeMap<u32, u32> = self
            .stages
            .iter()
            .enumerate()
            .flat_map(|(s, stage)| stage.vertices.iter().map(move |v| (*v, s as u32)))
            .collect();
        for (task, (tm, slot)) in &placed {
            let stage = &self.stages[task.stage as usize];
            let mut inputs = Vec::new();
            for (k, e) in stage.inputs.iter().enumerate() {
                let from = topology.edges[*e as usize].from;
                let upstream = stage_of[&from];
                let (offsets, _) = topology.output_offsets(&self.stages[upstream as usize]);
                let at = self.stages[upstream as usize]
                    .outputs
                    .iter()
                    .position(|o| o == e)
                    .expect("an input edge is an output of the stage that feeds it");
                for (u, sub) in topology.channels(*e, task.subtask) {
                    inputs.push(InputChannel {
                        edge: k as u32,
                        source: ChannelSource {
                            addr: address(&TaskId {
                                stage: upstream,
                                subtask: u,
                            }),
                            subpartition: offsets[at] + sub,
                        },
                    });
                }
            }
            let sends = !stage.outputs.is_empty();
            per_tm.entry(tm.clone()).or_default().push(TaskDeployment {
                task: *task,
                inputs,
                output_port: sends.then_some(block + *slot as u16),
                ack_port: (storm && !is_source(task.stage)).then_some(ack_block + *slot as u16),
                ack_inputs: match sources[task.stage as usize] {
                    Some(offset) if storm => placed
                        .iter()
                        .filter(|(t, _)| !is_source(t.stage))
                        .map(|(_, (tm, slot))| ChannelSource {
                            addr: format!("{}:{}", self.tms[tm].host, ack_block + *slot as u16),
                            subpartition: offset + task.subtask,
                        })
                        .collect(),
                    _ => Vec::new(),
                },
                restore: restore.and_then(|c| Some((c.id, c.task(*task)?.clone()))),
                restore_savepoint: self.latest_is_savepoint,
            });
        }
        for (tm, deployments) in per_tm {
            self.send_tm(
                &tm,
                ToTaskManager::Deploy {
                    attempt,
                    config: Box::new(self.job.clone()),
                    tasks: deployments,
                },
            );
        }
        self.placement = placed.into_iter().map(|(t, (tm, _))| (t, tm)).collect();
        self.state = JobState::Running;
        self.restart_at = None;
        self.running_since = Instant::now();
        self.next_trigger = self.next_trigger_after(self.running_since, self.running_since);
        self.event(JobEvent::Deployed {
            attempt,
            restored: restore.map(|c| c.id),
        });
    }
}
