//! Settings of a distributed job: checkpoints, restarts, heartbeats and the broker it reads
//! and writes. Every limit carries its unit in its name.

use super::exchange::ExchangeConfig;
use crate::graph::Topology;
use crate::operator::OperatorMutation;
use serde::{Deserialize, Serialize};

/// How barriers are aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Alignment {
    /// A task stops reading a channel once its barrier arrived, until every channel's has.
    Aligned,
    /// A task snapshots at the first barrier and saves the rows that arrive on the other
    /// channels before their barriers (in-flight data) with the snapshot.
    Unaligned,
}

/// How the job moves records from its sources to its sinks, and when it commits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecutionModel {
    /// Sources read continuously; a checkpoint barrier every `checkpoint.interval_ms` cuts the
    /// stream, and the sinks commit when it completes (the model of Flink).
    #[default]
    Pipelined,
    /// Micro-batches, one per trigger (the model of Spark Structured Streaming). At each trigger
    /// the sources fix the batch's end offsets, the job manager writes them to its offset log,
    /// and only then do the sources read up to them and end the batch with a barrier; the
    /// batch's completed checkpoint is its commit. A batch re-run after a failure reads the
    /// logged range again. Watermarks advance once per batch, from the batch before.
    MicroBatch {
        /// Time from one batch's start to the next one's, at least.
        trigger_ms: u64,
        /// Offsets one source subtask reads in a batch at most, over all its partitions
        /// (Spark's `maxOffsetsPerTrigger`, per subtask): a backlog is read in batches of this
        /// size, one per trigger, so that no batch's state outgrows what a checkpoint can hold.
        batch_offsets_max: u64,
    },
    /// Consume-transform-produce (the model of Kafka Streams with `exactly_once_v2`). Each
    /// subtask reads its partitions, and every `commit_interval_ms` commits one broker
    /// transaction holding its output, the changes to its state (in a changelog topic) and its
    /// input offsets (committed to the job's consumer group). A keyed edge goes through a
    /// repartition topic instead of the network. Nothing is coordinated across subtasks: a
    /// restarted subtask restores its state by reading its changelog and resumes from its
    /// group's committed offsets. Windows close when the subtask's stream time (the largest
    /// event time it has read) passes their end by `grace_ms`.
    KafkaStreams {
        /// Time between one transaction's commit and the next.
        commit_interval_ms: u64,
        /// How far stream time must pass a window's end before the window closes.
        grace_ms: u64,
        /// Replicas of the repartition and changelog topics.
        replication_factor: i16,
    },
    /// Record at a time with per-tuple acknowledgements (the model of Storm). Each record a
    /// source emits roots a tree of tuples; every operator acknowledges the tuples it took in,
    /// naming the tuples it emitted from them, and the source learns that a tree is complete
    /// when the XOR of every edge id reported for it returns to zero. A tree not complete
    /// within `message_timeout_ms` is replayed. Sources commit the offset below which every
    /// record's tree completed, every `commit_interval_ms`; sinks write without transactions.
    /// Nothing is checkpointed: windows live in memory, and a restart replays what was not
    /// acknowledged. At least once.
    Storm {
        /// A tree not complete this long after its record was emitted is replayed.
        message_timeout_ms: u64,
        /// Trees a source subtask keeps open at most before it stops reading.
        max_spout_pending: u32,
        /// Time between a source's offset commits.
        commit_interval_ms: u64,
    },
}

impl ExecutionModel {
    /// Whether subtasks commit on their own, with no checkpoints for the job manager to
    /// coordinate (Kafka Streams, Storm).
    pub fn uncoordinated(&self) -> bool {
        matches!(
            self,
            ExecutionModel::KafkaStreams { .. } | ExecutionModel::Storm { .. }
        )
    }
}

/// Checkpointing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointConfig {
    /// Time from one checkpoint's end to the next one's trigger.
    pub interval_ms: u64,
    /// A checkpoint not complete this long after its trigger is abandoned.
    pub timeout_ms: u64,
    /// Completed checkpoints kept on disk; older ones are deleted.
    pub retained_max: usize,
    /// Barrier handling.
    pub alignment: Alignment,
    /// Checkpoints in a row that may time out or fail before the job restarts: a checkpoint
    /// that cannot finish means a task is stuck, and only a restart frees it.
    pub tolerable_failures: u32,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            interval_ms: 1_000,
            timeout_ms: 10_000,
            retained_max: 3,
            alignment: Alignment::Aligned,
            tolerable_failures: 2,
        }
    }
}

/// Restarts after a failure: an exponential backoff, reset after a stable period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartStrategy {
    /// Wait before the first restart.
    pub backoff_initial_ms: u64,
    /// Longest wait.
    pub backoff_max_ms: u64,
    /// Restarts in a row (without a stable period between) before the job fails for good.
    pub attempts_max: u32,
    /// Running this long without a failure resets the backoff and the count.
    pub reset_after_ms: u64,
}

impl Default for RestartStrategy {
    fn default() -> Self {
        Self {
            backoff_initial_ms: 200,
            backoff_max_ms: 5_000,
            attempts_max: 100,
            reset_after_ms: 10_000,
        }
    }
}

impl RestartStrategy {
    /// The wait before restart number `n` (1-based) in a row.
    pub fn backoff_ms(&self, n: u32) -> u64 {
        let doublings = n.saturating_sub(1).min(20);
        self.backoff_initial_ms
            .saturating_mul(1 << doublings)
            .min(self.backoff_max_ms)
    }
}

/// A deliberate defect, built in so that the scenarios can show their checkers catch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RuntimeMutation {
    /// The exactly-once sink commits at the barrier instead of when the checkpoint completes.
    CommitBeforeComplete,
    /// Sources forward the barrier, read on, and only then save their offsets.
    OffsetsAfterBarrier,
    /// Micro-batch: a batch re-run after a failure is planned afresh instead of reading the
    /// range the offset log holds for it.
    OffsetLogIgnored,
    /// Micro-batch: sources plan each batch to the end of their input, ignoring
    /// `batch_offsets_max`.
    BatchUnbounded,
    /// Kafka Streams model: windows' changes are left out of the changelog, so a restarted
    /// subtask restores none of its open windows.
    ChangelogSkipped,
    /// Storm model: sources commit the offset they have read up to, past records whose trees
    /// are still open, so a restart does not replay them.
    CommitPastOpenTrees,
    /// Result partitions queue without limit instead of waiting for credit-freed buffers.
    UnboundedBuffers,
    /// A job manager resuming a stopped job from a savepoint drops the stopped run's
    /// checkpoints but starts from scratch instead of from the savepoint.
    SavepointIgnored,
    /// Time windows put a record whose timestamp is exactly a window start into the window
    /// before.
    WindowOffByOne,
    /// Operators and input gates with several inputs, and sources with several partitions,
    /// combine their watermarks with max instead of min.
    MaxWatermark,
}

impl RuntimeMutation {
    /// The defect it builds into the operators, if it is one of theirs.
    pub fn operator(self) -> Option<OperatorMutation> {
        match self {
            RuntimeMutation::WindowOffByOne => Some(OperatorMutation::WindowOffByOne),
            RuntimeMutation::MaxWatermark => Some(OperatorMutation::MaxWatermark),
            _ => None,
        }
    }
}

/// Everything the job manager needs to run a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobConfig {
    /// The job's shape; task managers run it from their own copy of the job's code.
    pub topology: Topology,
    /// Broker bootstrap addresses ("host:port").
    pub bootstrap: Vec<String>,
    /// Pipelined, micro-batch, Kafka Streams or Storm.
    #[serde(default)]
    pub model: ExecutionModel,
    /// Checkpoints.
    pub checkpoint: CheckpointConfig,
    /// Restarts.
    pub restart: RestartStrategy,
    /// Data exchange limits.
    pub exchange: ExchangeConfig,
    /// The sink's transaction timeout: it must outlast a checkpoint interval plus a recovery,
    /// or the broker aborts a pre-committed transaction before it can be committed.
    pub transaction_timeout_ms: i32,
    /// A task manager silent this long is taken for dead.
    pub heartbeat_timeout_ms: u64,
    /// How often task managers report, and tasks sample their metrics.
    pub heartbeat_interval_ms: u64,
    /// How long subtasks wait for a broker connection.
    pub broker_connect_timeout_ms: u64,
    /// How long subtasks wait for a broker's answer.
    pub broker_request_timeout_ms: u64,
    /// Largest control message, in bytes (a checkpoint acknowledgement carries state).
    pub control_frame_bytes_max: usize,
    /// A defect to build in; `None` outside mutant runs.
    pub mutation: Option<RuntimeMutation>,
}

impl JobConfig {
    /// A job with default settings.
    pub fn new(topology: Topology, bootstrap: Vec<String>) -> Self {
        Self {
            topology,
            bootstrap,
            model: ExecutionModel::default(),
            checkpoint: CheckpointConfig::default(),
            restart: RestartStrategy::default(),
            exchange: ExchangeConfig::default(),
            transaction_timeout_ms: 120_000,
            heartbeat_timeout_ms: 3_000,
            heartbeat_interval_ms: 250,
            broker_connect_timeout_ms: 10_000,
            broker_request_timeout_ms: 30_000,
            control_frame_bytes_max: 8 * 1024 * 1024,
            mutation: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let r = RestartStrategy {
            backoff_initial_ms: 100,
            backoff_max_ms: 1_000,
            ..RestartStrategy::default()
        };
        let waits: Vec<u64> = (1..=6).map(|n| r.backoff_ms(n)).collect();
        assert_eq!(waits, vec![100, 200, 400, 800, 1_000, 1_000]);
    }
}
