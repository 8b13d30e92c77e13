//! A task manager: offers slots to the job manager, runs the subtasks it is given, forwards
//! checkpoint triggers and completions to them, and reports their figures in heartbeats.
//!
//! A task manager that loses its job manager (the connection breaks, or nothing arrives for
//! `heartbeat_timeout_ms`) stops every subtask and registers again: the job manager restarts
//! the job from its last checkpoint anyway, and subtasks left running would only be zombies.

use super::metrics::TaskSample;
use super::rpc::{RpcError, ToJobManager, ToTaskManager, read_message, write_message};
use super::snapshot::TaskId;
use super::table::Tables;
use super::task::{self, TaskCommand, TaskLinks};
use super::throttle::Throttle;
use crate::api::Job;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use weir_seams::clock::Clock;
use weir_seams::net::Net;
use weir_wire::frame::write_frame;

/// Messages queued from subtasks to the job manager before they wait.
const OUTBOX_MESSAGES_MAX: usize = 256;
/// Commands queued for one subtask; a trigger that does not fit is dropped (that checkpoint
/// times out), and a lost completion is covered by the next one.
const COMMANDS_MAX: usize = 16;
/// Wait between attempts to reach the job manager.
const RECONNECT_MS: u64 = 500;

/// Settings of a task manager.
#[derive(Clone, Debug)]
pub struct TaskManagerConfig {
    /// Its name, unique in the cluster.
    pub name: String,
    /// The host its subtasks' result partitions are reached at.
    pub host: String,
    /// The job manager, "host:port".
    pub job_manager: String,
    /// Subtasks it runs at once (at most 32: each gets a port).
    pub slots: u32,
    /// Network.
    pub net: Net,
    /// Processing time.
    pub clock: Clock,
    /// How often it sends a heartbeat.
    pub heartbeat_interval_ms: u64,
    /// Silence from the job manager after which it gives up on it.
    pub heartbeat_timeout_ms: u64,
    /// Largest control message, in bytes.
    pub control_frame_bytes_max: usize,
    /// Delay per row its subtasks process (a fault; zero unless injected).
    pub throttle: Throttle,
    /// The job's code: a task manager runs the subtasks of the job it was built with.
    pub job: Rc<Job>,
    /// The tables its subtasks can upsert into.
    pub tables: Tables,
}

/// Receives every heartbeat's samples (the simulator records them on its timeline).
pub type SampleHook = Rc<dyn Fn(&str, &[TaskSample])>;

struct Running {
    attempt: u64,
    commands: mpsc::Sender<TaskCommand>,
    abort: AbortHandle,
    sample: Arc<Mutex<TaskSample>>,
}

/// Runs a task manager until the process ends, reconnecting whenever it loses the job manager.
pub async fn run_task_manager(config: TaskManagerConfig, hook: Option<SampleHook>) {
    assert!(
        (1..=32).contains(&config.slots),
        "a task manager has 1 to 32 slots"
    );
    loop {
        match session(&config, hook.as_ref()).await {
            Ok(()) => tracing::info!(tm = config.name, "job manager closed the session"),
            Err(e) => tracing::info!(tm = config.name, error = %e, "lost the job manager"),
        }
        tokio::time::sleep(Duration::from_millis(RECONNECT_MS)).await;
    }
}

/// One registration with the job manager; every subtask stops when it ends.
async fn session(config: &TaskManagerConfig, hook: Option<&SampleHook>) -> Result<(), RpcError> {
    let stream = config.net.connect(&config.job_manager).await?;
    let (mut reader, mut writer) = tokio::io::split(stream);
    write_message(
        &mut writer,
        &ToJobManager::Register {
            name: config.name.clone(),
            host: config.host.clone(),
            slots: config.slots,
        },
    )
    .await?;
    // Dropping the set aborts the reader and every subtask.
    let mut set: JoinSet<()> = JoinSet::new();
    let (inbox_tx, mut inbox) = mpsc::channel::<Result<ToTaskManager, RpcError>>(COMMANDS_MAX);
    let limit = config.control_frame_bytes_max;
    set.spawn_local(async move {
        loop {
            let message = read_message(&mut reader, limit).await;
            let failed = message.is_err();
            if inbox_tx.send(message).await.is_err() || failed {
                return;
            }
        }
    });
    let (outbox_tx, mut outbox) = mpsc::channel::<ToJobManager>(OUTBOX_MESSAGES_MAX);
    let mut tasks: BTreeMap<TaskId, Running> = BTreeMap::new();
    let mut heartbeat = tokio::time::interval(Duration::from_millis(config.heartbeat_interval_ms));
    let silence = Duration::from_millis(config.heartbeat_timeout_ms);
    let mut last_heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            message = inbox.recv() => {
                let message = message.ok_or(RpcError::Io(std::io::ErrorKind::BrokenPipe.into()))??;
                last_heard = tokio::time::Instant::now();
                match message {
                    ToTaskManager::Welcome | ToTaskManager::HeartbeatAck => {}
                    ToTaskManager::Deploy { attempt, config: job_config, tasks: deployments } => {
                        stop(&mut tasks, attempt.saturating_sub(1));
                        let job_config = Arc::new(*job_config);
                        for deployment in deployments {
                            let id = deployment.task;
                            let (commands_tx, commands) = mpsc::channel(COMMANDS_MAX);
                            // Named from the start, so the task reports even while it sets up.
                            let sample = Arc::new(Mutex::new(TaskSample {
                                task: Some(id),
                                attempt,
                                ..TaskSample::default()
                            }));
                            let links = TaskLinks {
                                net: config.net,
                                clock: config.clock,
                                attempt,
                                config: Arc::clone(&job_config),
                                commands,
                                to_job_manager: outbox_tx.clone(),
                                sample: Arc::clone(&sample),
                                throttle: config.throttle.clone(),
                                job: Rc::clone(&config.job),
                                tables: config.tables.clone(),
                            };
                            let report = outbox_tx.clone();
                            let abort = set.spawn_local(async move {
                                if let Err(reason) = task::run(deployment, links).await {
                                    tracing::warn!(task = %id, attempt, reason, "subtask failed");
                                    let _ = report.send(ToJobManager::Failed { attempt, task: id, reason }).await;
                                }
                            });
                            tasks.insert(id, Running { attempt, commands: commands_tx, abort, sample });
                        }
                    }
                    ToTaskManager::Cancel { attempt } => stop(&mut tasks, attempt),
                    ToTaskManager::Trigger { attempt, checkpoint_id, task } => {
                        if let Some(r) = tasks.get(&task).filter(|r| r.attempt == attempt) {
                            let _ = r.commands.try_send(TaskCommand::Trigger(checkpoint_id));
                        }
                    }
                    ToTaskManager::RunBatch { attempt, checkpoint_id, task, ends } => {
                        if let Some(r) = tasks.get(&task).filter(|r| r.attempt == attempt) {
                            let _ = r.commands.try_send(TaskCommand::RunBatch(checkpoint_id, ends));
                        }
                    }
                    ToTaskManager::Complete { attempt, checkpoint_id } => {
                        for r in tasks.values().filter(|r| r.attempt == attempt) {
                            let _ = r.commands.try_send(TaskCommand::Complete(checkpoint_id));
                        }
                    }
                }
            }
            Some(message) = outbox.recv() => send(&mut writer, &message, silence, limit).await?,
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > silence {
                    return Err(RpcError::Io(std::io::ErrorKind::TimedOut.into()));
                }
                let samples: Vec<TaskSample> = tasks
                    .values()
                    .map(|r| r.sample.lock().unwrap_or_else(|e| e.into_inner()).clone())
                    .filter(|s| s.task.is_some())
                    .collect();
                if let Some(hook) = hook {
                    hook(&config.name, &samples);
                }
                send(&mut writer, &ToJobManager::Heartbeat { samples }, silence, limit).await?;
            }
            Some(_) = set.join_next(), if !set.is_empty() => {
                tasks.retain(|_, r| !r.abort.is_finished());
            }
        }
    }
}

/// Writes one message to the job manager. A write that stalls for `silence` (a partition
/// that holds what the task manager sends) counts as losing the job manager: waiting on would
/// keep the task manager from noticing, and its subtasks from stopping. A snapshot too large
/// for the job manager to read goes as the subtask's failure instead, saying why: sent as it
/// is, the job manager would drop the connection and the checkpoint would only time out.
async fn send<W: tokio::io::AsyncWrite + Unpin>(
    writer: &mut W,
    message: &ToJobManager,
    silence: Duration,
    limit: usize,
) -> Result<(), RpcError> {
    let mut body = serde_json::to_vec(message).expect("control messages serialize");
    if body.len() > limit {
        let ToJobManager::Ack {
            attempt,
            checkpoint_id,
            task,
            ..
        } = message
        else {
            return Err(RpcError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "a control message of {} bytes is over the limit of {limit} bytes",
                    body.len()
                ),
            )));
        };
        let failed = ToJobManager::Failed {
            attempt: *attempt,
            task: *task,
            reason: format!(
                "the snapshot for checkpoint {checkpoint_id} is {} bytes, over the control frame \
                 limit of {limit} bytes (control_frame_bytes_max)",
                body.len()
            ),
        };
        tracing::warn!(task = %task, attempt, checkpoint_id, bytes = body.len(), limit, "snapshot over the control frame limit");
        body = serde_json::to_vec(&failed).expect("control messages serialize");
    }
    tokio::time::timeout(silence, write_frame(writer, &body))
        .await
        .map_err(|_| RpcError::Io(std::io::ErrorKind::TimedOut.into()))?
        .map_err(RpcError::Io)
}

/// Stops every subtask of `attempt` or older.
fn stop(tasks: &mut BTreeMap<TaskId, Running>, attempt: u64) {
    tasks.retain(|_, r| {
        let old = r.attempt <= attempt;
        if old {
            r.abort.abort();
        }
        !old
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::snapshot::TaskSnapshot;

    /// Sends `message` within `limit` bytes and reads back what the job manager would get.
    async fn sent(message: &ToJobManager, limit: usize) -> Result<ToJobManager, RpcError> {
        let (mut tm, mut jm) = tokio::io::duplex(64 * 1024);
        send(&mut tm, message, Duration::from_secs(5), limit).await?;
        read_message(&mut jm, limit).await
    }

    #[tokio::test]
    async fn a_snapshot_over_the_frame_limit_fails_its_subtask_and_says_why() {
        let task = TaskId {
            stage: 1,
            subtask: 0,
        };
        let snapshot = TaskSnapshot {
            operators: BTreeMap::from([("window".to_string(), vec![7u8; 4_096])]),
            ..TaskSnapshot::default()
        };
        let ack = ToJobManager::Ack {
            attempt: 3,
            checkpoint_id: 9,
            task,
            snapshot,
        };
        assert_eq!(sent(&ack, 1 << 20).await.unwrap(), ack);
        match sent(&ack, 1_024).await.unwrap() {
            ToJobManager::Failed {
                attempt: 3,
                task: t,
                reason,
            } => {
                assert_eq!(t, task);
                assert!(reason.contains("checkpoint 9"), "{reason}");
                assert!(reason.contains("control_frame_bytes_max"), "{reason}");
            }
            other => panic!("expected the subtask's failure, got {other:?}"),
        }
        // Anything else over the limit is an error of the connection, not sent.
        let heartbeat = ToJobManager::Heartbeat {
            samples: vec![TaskSample::default(); 64],
        };
        assert!(sent(&heartbeat, 64).await.is_err());
    }
}
