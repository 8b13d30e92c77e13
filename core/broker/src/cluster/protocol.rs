//! The messages brokers send each other on the internal port.
//!
//! Errors travel as Kafka error codes, so that a broker can hand a controller's refusal straight
//! back to the client that caused it.

use super::metadata::PartitionImage;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A Kafka error code and a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodedError {
    /// Kafka error code.
    pub code: i16,
    /// What went wrong.
    pub message: String,
}

impl CodedError {
    /// An error with `code` (a Kafka error) and a message.
    pub fn new(code: kafka_protocol::error::ResponseError, message: impl Into<String>) -> Self {
        Self {
            code: code.code(),
            message: message.into(),
        }
    }

    /// The Kafka error, if the code is known.
    pub fn kafka(&self) -> Option<kafka_protocol::error::ResponseError> {
        kafka_protocol::error::ResponseError::try_from_code(self.code)
    }
}

/// A broker's periodic proof of life to the controller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Broker id.
    pub broker: i32,
    /// Chosen afresh each time the broker starts: a new one tells the controller the broker
    /// restarted, and so may have lost unsynced data.
    pub incarnation: u64,
    /// Host clients connect to.
    pub host: String,
    /// Port clients connect to.
    pub port: u16,
}

/// A partition leader asks the controller to change its ISR.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterPartition {
    /// The leader asking.
    pub broker: i32,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The leader epoch the leader holds.
    pub leader_epoch: i32,
    /// The partition epoch the request was computed from.
    pub partition_epoch: i32,
    /// The ISR wanted.
    pub isr: Vec<i32>,
}

/// A topic to create, forwarded to the controller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTopic {
    /// Name.
    pub name: String,
    /// Partitions.
    pub partitions: i32,
    /// Replicas per partition.
    pub replication_factor: i16,
    /// Replicas of each partition, if the client chose them.
    pub assignment: Option<Vec<Vec<i32>>>,
    /// Config overrides.
    pub overrides: BTreeMap<String, String>,
    /// Only check that the topic could be created.
    pub validate_only: bool,
}

/// One partition in a replica fetch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchPartition {
    /// Topic.
    pub topic: String,
    /// Topic id, so that a fetch never crosses a delete and re-create.
    pub topic_id: u128,
    /// Partition.
    pub partition: i32,
    /// The leader epoch the follower knows.
    pub leader_epoch: i32,
    /// The follower's log end, which it has made durable.
    pub fetch_offset: i64,
    /// Epoch of the follower's last batch, or -1 for an empty log.
    pub last_fetched_epoch: i32,
}

/// A follower's fetch from a leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaFetch {
    /// The follower.
    pub replica: i32,
    /// Longest the leader may hold the request for data, in milliseconds.
    pub max_wait_ms: u64,
    /// Cap on record bytes per partition.
    pub partition_max_bytes: u32,
    /// Cap on record bytes in the whole response.
    pub max_bytes: u32,
    /// Partitions.
    pub partitions: Vec<FetchPartition>,
}

/// What a leader answers for one partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FetchedPartition {
    /// Records from the fetch offset (possibly none).
    Records {
        /// Leader's high watermark.
        high_watermark: i64,
        /// Leader's log start.
        log_start: i64,
        /// Whole batches.
        records: Bytes,
    },
    /// The follower's log diverges: it must truncate to `end_offset` (or its own end of
    /// `epoch`, if smaller) and fetch again.
    Diverging {
        /// The largest epoch the leader has at or below the follower's last fetched epoch.
        epoch: i32,
        /// Where that epoch ends on the leader.
        end_offset: i64,
    },
    /// The fetch offset is below the leader's log start: the follower restarts from it.
    OutOfRange {
        /// Leader's log start.
        log_start: i64,
    },
    /// Some other error.
    Error(CodedError),
}

/// An internal request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// A Raft message (protobuf); answered with [`Response::Done`] once handed to the node.
    Raft(Bytes),
    /// A broker heartbeat; the controller answers [`Response::Heartbeat`].
    Heartbeat(Heartbeat),
    /// An ISR change; answered with [`Response::Partition`].
    AlterPartition(AlterPartition),
    /// Creates a topic; answered with [`Response::Done`].
    CreateTopic(CreateTopic),
    /// Deletes a topic; answered with [`Response::Done`].
    DeleteTopic {
        /// Name.
        name: String,
    },
    /// A block of producer ids; answered with [`Response::ProducerIds`].
    AllocateProducerIds {
        /// How many.
        count: i64,
    },
    /// A follower fetches; answered with [`Response::Fetched`].
    ReplicaFetch(ReplicaFetch),
    /// A transactional client request for the coordinator; answered with [`Response::Txn`].
    Txn(TxnRequest),
    /// Writes transaction markers into partitions this broker leads; answered with
    /// [`Response::Markers`].
    WriteMarkers(WriteMarkers),
}

/// A transactional request, as the coordinator (the active controller) takes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnRequest {
    /// InitProducerId with a transactional id.
    Init {
        /// Transactional id.
        id: String,
        /// Transaction timeout, in milliseconds.
        timeout_ms: i64,
        /// The producer id and epoch the client had, or -1 (to recover after an error).
        producer_id: i64,
        /// See `producer_id`.
        producer_epoch: i16,
    },
    /// AddPartitionsToTxn and AddOffsetsToTxn (a group adds its offsets).
    Add {
        /// Transactional id.
        id: String,
        /// Producer id.
        producer_id: i64,
        /// Producer epoch.
        producer_epoch: i16,
        /// Partitions to add.
        partitions: Vec<(String, i32)>,
        /// Groups whose offsets to add.
        groups: Vec<String>,
    },
    /// TxnOffsetCommit: offsets the transaction commits for a group.
    Offsets {
        /// Transactional id.
        id: String,
        /// Producer id.
        producer_id: i64,
        /// Producer epoch.
        producer_epoch: i16,
        /// Group id.
        group: String,
        /// The group generation and member id the committer holds (TxnOffsetCommit v3+),
        /// checked against the group so that a member fenced by a rebalance cannot commit.
        member: Option<(i32, String)>,
        /// The offsets.
        offsets: Vec<super::groups::CommittedOffset>,
    },
    /// EndTxn.
    End {
        /// Transactional id.
        id: String,
        /// Producer id.
        producer_id: i64,
        /// Producer epoch.
        producer_epoch: i16,
        /// Commit, or abort.
        commit: bool,
        /// Whether the client learns a new epoch from the answer (EndTxn v5+): the epoch is
        /// then bumped with the decision, fencing anything late from this transaction.
        bump: bool,
    },
}

/// Markers for one producer's transaction, for partitions the receiver leads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteMarkers {
    /// Producer id.
    pub producer_id: i64,
    /// The epoch of the transaction's records: only a transaction open at it is ended.
    pub txn_epoch: i16,
    /// The epoch the markers carry.
    pub producer_epoch: i16,
    /// Commit, or abort.
    pub commit: bool,
    /// The coordinator's epoch (its Raft term), so markers from a deposed one are refused.
    pub coordinator_epoch: i32,
    /// The partitions.
    pub partitions: Vec<(String, i32)>,
}

/// An internal response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The receiver is not the active controller; `leader` is the broker it believes is.
    NotController {
        /// Broker id of the controller, if known.
        leader: Option<i32>,
    },
    /// A heartbeat was accepted. The broker may take up its partitions once its metadata has
    /// applied `metadata_index`.
    Heartbeat {
        /// The controller's applied metadata index when it answered.
        metadata_index: u64,
    },
    /// A partition's state after a committed change.
    Partition(Result<PartitionImage, CodedError>),
    /// The request was carried out, or why not.
    Done(Result<(), CodedError>),
    /// The first id of a block.
    ProducerIds(Result<i64, CodedError>),
    /// A replica fetch's answer, one per requested partition, in order.
    Fetched(Vec<FetchedPartition>),
    /// A transactional request's answer: the producer id and epoch the client holds now.
    Txn(Result<(i64, i16), CodedError>),
    /// Markers written: an error code per requested partition, in order (0 when written).
    Markers(Vec<i16>),
}
