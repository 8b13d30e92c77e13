//! Control messages between the job manager, task managers and clients: JSON in
//! length-prefixed frames, each checked against a size limit before it is read.

use super::config::JobConfig;
use super::exchange::ChannelSource;
use super::metrics::{DropCounts, TaskSample};
use super::snapshot::{TaskId, TaskSnapshot};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::collections::BTreeMap;
use tokio::io::{AsyncRead, AsyncWrite};
use weir_wire::frame::{FrameError, read_frame, write_frame};

/// The job manager's port.
pub const JOB_MANAGER_PORT: u16 = 6123;

/// One input channel of a subtask: an upstream subpartition, and the head's input edge
/// (its place in the stage's input edges) that it carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputChannel {
    /// The stage's input edge.
    pub edge: u32,
    /// Where to read it.
    pub source: ChannelSource,
}

/// What one subtask is given to run; its stage is the one its id names, of the job's
/// topology.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskDeployment {
    /// The subtask.
    pub task: TaskId,
    /// Upstream subpartitions it reads, one channel each (none for a source stage).
    pub inputs: Vec<InputChannel>,
    /// Port its result partition binds, if the stage sends anything over the network.
    pub output_port: Option<u16>,
    /// Storm model: the port where this subtask's acknowledgements leave for the source
    /// subtasks (one subpartition each), if it is not a source.
    #[serde(default)]
    pub ack_port: Option<u16>,
    /// Storm model: the acknowledgement channels a source subtask reads, one per subtask
    /// downstream.
    #[serde(default)]
    pub ack_inputs: Vec<ChannelSource>,
    /// The checkpoint to restore, with this subtask's snapshot from it.
    pub restore: Option<(u64, TaskSnapshot)>,
    /// The restored checkpoint is a savepoint: a job that ran on after it may have moved its
    /// transactional ids on, so sinks do not insist on committing its transactions again.
    pub restore_savepoint: bool,
}

/// Task manager or client to job manager.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToJobManager {
    /// A task manager offers its slots; `host` is where its tasks' partitions are reachable.
    Register {
        /// Its name.
        name: String,
        /// Host name or address.
        host: String,
        /// Subtasks it runs at once.
        slots: u32,
    },
    /// A task manager is alive; its tasks' figures.
    Heartbeat {
        /// The latest samples of its tasks.
        samples: Vec<TaskSample>,
    },
    /// A subtask took its snapshot for a checkpoint.
    Ack {
        /// Attempt.
        attempt: u64,
        /// Checkpoint.
        checkpoint_id: u64,
        /// Subtask.
        task: TaskId,
        /// What it saved.
        snapshot: TaskSnapshot,
    },
    /// A sink subtask committed its transactions up to a checkpoint.
    Committed {
        /// Attempt.
        attempt: u64,
        /// Checkpoint.
        checkpoint_id: u64,
        /// Subtask.
        task: TaskId,
    },
    /// Micro-batch: a source subtask fixed where its share of a batch ends.
    Planned {
        /// Attempt.
        attempt: u64,
        /// The batch's checkpoint.
        checkpoint_id: u64,
        /// The source subtask.
        task: TaskId,
        /// Each partition's end offset (exclusive); an ended partition has none.
        ends: BTreeMap<i32, i64>,
    },
    /// A subtask committed on its own: a transaction (Kafka Streams model) or a source's
    /// offsets (Storm model).
    SubtaskCommitted {
        /// Attempt.
        attempt: u64,
        /// Subtask.
        task: TaskId,
        /// From the commit's start to the broker's answer.
        commit_ms: u64,
        /// Its input has ended and this commit covers the last of its work.
        drained: bool,
        /// Rows its windows have dropped as late so far in this attempt, all covered by this
        /// commit.
        late_dropped: u64,
    },
    /// A subtask failed.
    Failed {
        /// Attempt.
        attempt: u64,
        /// Subtask.
        task: TaskId,
        /// Why.
        reason: String,
    },
    /// A client asks for the job's status.
    Status,
    /// A client asks for a savepoint.
    TriggerSavepoint,
    /// A client asks for a savepoint and then for the job to stop, once the savepoint's
    /// output is committed; the reply names the savepoint to resume from.
    StopWithSavepoint,
}

/// Job manager to task manager.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToTaskManager {
    /// Registration accepted.
    Welcome,
    /// Answer to a heartbeat.
    HeartbeatAck,
    /// Run these subtasks of `attempt`; subtasks of older attempts stop first.
    Deploy {
        /// Attempt.
        attempt: u64,
        /// The job.
        config: Box<JobConfig>,
        /// Subtasks for this task manager.
        tasks: Vec<TaskDeployment>,
    },
    /// Stop every subtask of `attempt` and older.
    Cancel {
        /// Attempt.
        attempt: u64,
    },
    /// Micro-batch: source subtask `task` reads up to `ends` (from the offset log), then
    /// injects the barrier of `checkpoint_id`.
    RunBatch {
        /// Attempt.
        attempt: u64,
        /// The batch's checkpoint.
        checkpoint_id: u64,
        /// The source subtask.
        task: TaskId,
        /// Each partition's end offset (exclusive).
        ends: BTreeMap<i32, i64>,
    },
    /// Source subtask `task`: inject the barrier of `checkpoint_id` (micro-batch: fix where
    /// the batch ends and report it).
    Trigger {
        /// Attempt.
        attempt: u64,
        /// Checkpoint.
        checkpoint_id: u64,
        /// The source subtask.
        task: TaskId,
    },
    /// Checkpoint `checkpoint_id` is complete: commit.
    Complete {
        /// Attempt.
        attempt: u64,
        /// Checkpoint.
        checkpoint_id: u64,
    },
}

/// The state of a job, as [`ToJobManager::Status`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    /// Waiting for enough task slots.
    Scheduling,
    /// Subtasks deployed.
    Running,
    /// Waiting to restart after a failure.
    Restarting,
    /// Input ended and every output committed.
    Finished,
    /// Restarts exhausted, or checkpoint storage failed.
    Failed,
    /// Stopped with a savepoint; a job manager started from it resumes the job.
    Stopped,
}

/// Job manager to client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToClient {
    /// The job's status.
    Status {
        /// Its state.
        state: JobState,
        /// The current attempt.
        attempt: u64,
        /// The newest completed checkpoint.
        last_checkpoint: Option<u64>,
        /// Restarts so far.
        restarts: u64,
        /// Why the job failed, if it did.
        failure: Option<String>,
        /// Records dropped, by reason.
        #[serde(default)]
        dropped: DropCounts,
    },
    /// Where a savepoint was written, or why none was.
    Savepoint(Result<String, String>),
}

/// Why a control message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// Framing or i/o.
    #[error("control connection: {0}")]
    Frame(#[from] FrameError),
    /// Not a message of the expected kind.
    #[error("control message: {0}")]
    Decode(#[from] serde_json::Error),
    /// Writing failed.
    #[error("control connection: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one message of at most `limit` bytes.
pub async fn read_message<T: DeserializeOwned, R: AsyncRead + Unpin>(
    r: &mut R,
    limit: usize,
) -> Result<T, RpcError> {
    let body = read_frame(r, limit).await?;
    Ok(serde_json::from_slice(&body)?)
}

/// Writes one message.
pub async fn write_message<T: Serialize, W: AsyncWrite + Unpin>(
    w: &mut W,
    message: &T,
) -> Result<(), RpcError> {
    let body = serde_json::to_vec(message).expect("control messages serialize");
    write_frame(w, &body).await?;
    Ok(())
}

/// Sends one request to the job manager at `addr` and waits for its answer (status or
/// savepoint), for clients such as `weir job`.
pub async fn ask(
    net: weir_seams::net::Net,
    addr: &str,
    request: &ToJobManager,
    limit: usize,
) -> Result<ToClient, RpcError> {
    let mut stream = net.connect(addr).await?;
    write_message(&mut stream, request).await?;
    read_message(&mut stream, limit).await
}
