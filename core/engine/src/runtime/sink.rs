//! The broker sink of a distributed job.
//!
//! Exactly-once is a two-phase commit over broker transactions. Rows go into the transaction
//! open since the last barrier. At a barrier the sink flushes it (pre-commit) and saves its
//! transactional id, producer id and epoch in the snapshot; it commits when the job manager
//! reports the checkpoint complete. A restored sink commits the transactions of the restored
//! checkpoint (a commit already made is a retry, and succeeds) and initialises every other id
//! of its pool, which aborts what an earlier attempt left open and fences its zombies.
//!
//! Each subtask owns a pool of [`TXN_POOL`] transactional ids: one transaction open, the
//! pre-committed ones waiting for their checkpoint, and the committed ones in quarantine. A
//! transaction committed when checkpoint c completes (its own, or one of an abandoned
//! checkpoint before c that c's snapshot still lists) keeps its id untouched until a checkpoint
//! newer than c completes: until then the job may restore c again and commit that transaction once
//! more, which succeeds only while the id's epoch is the one the commit left (a new
//! transaction on the id would move it on, and the second commit would be refused as fenced,
//! indistinguishable from a transaction the broker aborted).

use super::config::RuntimeMutation;
use super::metrics::LatencyStats;
use crate::operator::sink::SinkRow;
use kafka_protocol::error::ResponseError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use weir_client::{ClientError, Cluster, Delivery, Producer, ProducerConfig, Record};
use weir_seams::clock::Clock;

/// Transactional ids per sink subtask: one open, one or two pre-committed, one or two in
/// quarantine, and a spare for a completion that arrives late.
pub const TXN_POOL: usize = 6;
/// At-least-once: deliveries kept unchecked before the sink waits for the oldest.
const DELIVERIES_MAX: usize = 10_000;
/// Rows per transaction whose event time is kept to measure latency at commit.
const LATENCY_SAMPLES_MAX: usize = 1_024;

/// A pre-committed transaction, as a snapshot keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedTxn {
    /// The checkpoint it belongs to.
    pub checkpoint_id: u64,
    /// Index of its transactional id in the subtask's pool.
    pub slot: usize,
    /// Producer id and epoch that prepared it.
    pub producer_id: i64,
    /// Epoch.
    pub epoch: i16,
}

/// Why the sink failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SinkError {
    /// The broker refused or could not be reached for good.
    #[error("sink: {0}")]
    Client(#[from] ClientError),
    /// The transaction to pre-commit lost a send and can only abort.
    #[error("sink: pre-commit failed, the transaction must abort: {0}")]
    PreCommit(String),
    /// Every transactional id of the pool is in use.
    #[error("sink: all {TXN_POOL} transactional ids are busy; checkpoints are not completing")]
    PoolExhausted,
    /// A snapshot could not be read.
    #[error("sink state: {0}")]
    State(String),
}

/// Identifies one sink subtask's transactions.
#[derive(Clone, Debug)]
pub struct SinkIdentity {
    /// The job's name.
    pub job: String,
    /// The sink operator's uid.
    pub uid: String,
    /// The subtask.
    pub subtask: u32,
}

impl SinkIdentity {
    fn transactional_id(&self, slot: usize) -> String {
        format!("{}-{}-{}-{slot}", self.job, self.uid, self.subtask)
    }
}

/// A sink subtask.
pub(crate) enum BrokerSink {
    ExactlyOnce(Box<TxnSink>),
    AtLeastOnce {
        producer: Producer,
        topic: String,
        deliveries: Vec<Delivery>,
    },
}

pub(crate) struct TxnSink {
    cluster: Arc<Cluster>,
    identity: SinkIdentity,
    topic: String,
    clock: Clock,
    transaction_timeout_ms: i32,
    mutation: Option<RuntimeMutation>,
    /// The transaction rows go into, and its slot.
    open: Option<(usize, Producer)>,
    /// Pre-committed, by checkpoint id.
    prepared: BTreeMap<u64, (PreparedTxn, Producer)>,
    /// Initialised producers with nothing open, by slot.
    idle: BTreeMap<usize, Producer>,
    /// Committed transactions' producers by checkpoint id, kept off their ids until a newer
    /// checkpoint completes.
    quarantine: BTreeMap<u64, Vec<(usize, Producer)>>,
    /// Event times of the open transaction's rows (the first [`LATENCY_SAMPLES_MAX`]).
    open_ts: Vec<i64>,
    /// The same, per pre-committed transaction.
    prepared_ts: BTreeMap<u64, Vec<i64>>,
    latency: LatencyStats,
}

impl BrokerSink {
    /// Opens the sink; an exactly-once one first commits `restored`'s transactions (checkpoint
    /// id, sink state, whether it is a savepoint) and fences the rest of its pool.
    pub async fn open(
        cluster: Arc<Cluster>,
        identity: SinkIdentity,
        (topic, exactly_once): (&str, bool),
        (clock, transaction_timeout_ms): (Clock, i32),
        mutation: Option<RuntimeMutation>,
        restored: Option<(u64, &[u8], bool)>,
    ) -> Result<Self, SinkError> {
        if !exactly_once {
            let producer = Producer::new(cluster, ProducerConfig::default(), clock).await?;
            return Ok(BrokerSink::AtLeastOnce {
                producer,
                topic: topic.to_string(),
                deliveries: Vec::new(),
            });
        }
        let mut sink = TxnSink {
            cluster,
            identity,
            topic: topic.to_string(),
            clock,
            transaction_timeout_ms,
            mutation,
            open: None,
            prepared: BTreeMap::new(),
            idle: BTreeMap::new(),
            quarantine: BTreeMap::new(),
            open_ts: Vec::new(),
            prepared_ts: BTreeMap::new(),
            latency: LatencyStats::default(),
        };
        let mut kept = Vec::new();
        if let Some((_, bytes, savepoint)) = restored {
            let txns: Vec<PreparedTxn> =
                serde_json::from_slice(bytes).map_err(|e| SinkError::State(e.to_string()))?;
            for t in &txns {
                if t.slot >= TXN_POOL {
                    return Err(SinkError::State(format!("slot {} in the snapshot", t.slot)));
                }
                let p = sink.producer(t.slot).await?;
                match p.commit_prepared(t.producer_id, t.epoch).await {
                    Ok(()) => {
                        tracing::info!(
                            checkpoint = t.checkpoint_id,
                            slot = t.slot,
                            "restored sink committed its transaction"
                        );
                        kept.push((t.slot, p));
                    }
                    Err(e) if savepoint && e.code().is_some_and(fenced) => {
                        tracing::warn!(checkpoint = t.checkpoint_id, error = %e, "a savepoint's transaction was already ended");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let keep: Vec<usize> = kept.iter().map(|(s, _)| *s).collect();
        if let Some((checkpoint_id, _, _)) = restored {
            sink.quarantine.insert(checkpoint_id, kept);
        }
        for slot in (0..TXN_POOL).filter(|s| !keep.contains(s)) {
            let p = sink.producer(slot).await?;
            p.init_transactions().await?;
            sink.idle.insert(slot, p);
        }
        sink.begin()?;
        Ok(BrokerSink::ExactlyOnce(Box::new(sink)))
    }

    /// Writes a row (keyed: the topic's partitioner picks its partition by key).
    pub async fn write(&mut self, row: SinkRow) -> Result<(), SinkError> {
        let (producer, topic) = match self {
            BrokerSink::ExactlyOnce(s) => {
                if s.open_ts.len() < LATENCY_SAMPLES_MAX {
                    s.open_ts.push(row.ts);
                }
                let (_, p) = s.open.as_ref().expect("a transaction is always open");
                (p, s.topic.as_str())
            }
            BrokerSink::AtLeastOnce {
                producer, topic, ..
            } => (&*producer, topic.as_str()),
        };
        let record = Record {
            timestamp: Some(row.ts),
            ..Record::new(topic, row.key, row.value)
        };
        let delivery = producer.send(record).await?;
        if let BrokerSink::AtLeastOnce { deliveries, .. } = self {
            deliveries.push(delivery);
            if deliveries.len() >= DELIVERIES_MAX {
                let older: Vec<Delivery> = deliveries.drain(..DELIVERIES_MAX / 2).collect();
                for d in older {
                    d.wait().await?;
                }
            }
        }
        Ok(())
    }

    /// Pre-commits at barrier `checkpoint_id` and returns the snapshot of the sink.
    pub async fn pre_commit(&mut self, checkpoint_id: u64) -> Result<Vec<u8>, SinkError> {
        match self {
            BrokerSink::AtLeastOnce {
                producer,
                deliveries,
                ..
            } => {
                producer.flush().await;
                for d in deliveries.drain(..) {
                    d.wait().await?;
                }
                Ok(Vec::new())
            }
            BrokerSink::ExactlyOnce(s) => s.pre_commit(checkpoint_id).await,
        }
    }

    /// Commits the transactions of every checkpoint up to `checkpoint_id`.
    pub async fn on_complete(&mut self, checkpoint_id: u64) -> Result<u64, SinkError> {
        match self {
            BrokerSink::AtLeastOnce { .. } => Ok(0),
            BrokerSink::ExactlyOnce(s) => s.commit_through(checkpoint_id).await,
        }
    }

    /// Time from a row's event time to its commit (exactly-once only).
    pub fn latency(&self) -> LatencyStats {
        match self {
            BrokerSink::AtLeastOnce { .. } => LatencyStats::default(),
            BrokerSink::ExactlyOnce(s) => s.latency,
        }
    }
}

/// Whether `code` says the transactional id has moved past the given epoch.
fn fenced(code: ResponseError) -> bool {
    matches!(
        code,
        ResponseError::ProducerFenced | ResponseError::InvalidProducerEpoch
    )
}

impl TxnSink {
    async fn producer(&self, slot: usize) -> Result<Producer, SinkError> {
        let config = ProducerConfig {
            transactional_id: Some(self.identity.transactional_id(slot)),
            transaction_timeout_ms: self.transaction_timeout_ms,
            ..ProducerConfig::default()
        };
        Ok(Producer::new(Arc::clone(&self.cluster), config, self.clock).await?)
    }

    /// Opens the next transaction on an idle slot.
    fn begin(&mut self) -> Result<(), SinkError> {
        let slot = *self.idle.keys().next().ok_or(SinkError::PoolExhausted)?;
        let producer = self.idle.remove(&slot).expect("the slot is idle");
        producer.begin_transaction()?;
        self.open = Some((slot, producer));
        Ok(())
    }

    async fn pre_commit(&mut self, checkpoint_id: u64) -> Result<Vec<u8>, SinkError> {
        let (slot, producer) = self.open.take().expect("a transaction is always open");
        let rows_ts = std::mem::take(&mut self.open_ts);
        producer.flush().await;
        if let Some(why) = producer.transaction_error() {
            // A send of this transaction failed: it can only abort, so the checkpoint must not
            // count it as pre-committed. The task fails and the job restarts from before it.
            return Err(SinkError::PreCommit(why));
        }
        if !producer.transaction_has_work() {
            // Nothing to commit: the empty transaction ends here and the slot stays usable.
            producer.commit_transaction().await?;
            self.idle.insert(slot, producer);
        } else if self.mutation == Some(RuntimeMutation::CommitBeforeComplete) {
            producer.commit_transaction().await?;
            self.latency.record_since(&rows_ts, self.clock.now_ms());
            self.idle.insert(slot, producer);
        } else {
            self.prepared_ts.insert(checkpoint_id, rows_ts);
            let (producer_id, epoch) = producer.producer_id();
            let txn = PreparedTxn {
                checkpoint_id,
                slot,
                producer_id,
                epoch,
            };
            self.prepared.insert(checkpoint_id, (txn, producer));
        }
        let snapshot: Vec<&PreparedTxn> = self.prepared.values().map(|(t, _)| t).collect();
        let bytes = serde_json::to_vec(&snapshot).expect("transactions serialize");
        self.begin()?;
        Ok(bytes)
    }

    async fn commit_through(&mut self, checkpoint_id: u64) -> Result<u64, SinkError> {
        let mut commits = 0;
        while let Some(entry) = self.prepared.first_entry() {
            if *entry.key() > checkpoint_id {
                break;
            }
            let (txn, producer) = entry.remove();
            producer.commit_transaction().await?;
            let rows_ts = self
                .prepared_ts
                .remove(&txn.checkpoint_id)
                .unwrap_or_default();
            self.latency.record_since(&rows_ts, self.clock.now_ms());
            // Under `checkpoint_id`, not the transaction's own checkpoint: the snapshot of
            // `checkpoint_id` lists every transaction still pending at its barrier (those of
            // an abandoned checkpoint before it too), and restoring it commits them all again.
            self.quarantine
                .entry(checkpoint_id)
                .or_default()
                .push((txn.slot, producer));
            commits += 1;
        }
        // Checkpoints older than this one will never be restored again.
        while let Some(entry) = self.quarantine.first_entry() {
            if *entry.key() >= checkpoint_id {
                break;
            }
            for (slot, producer) in entry.remove() {
                self.idle.insert(slot, producer);
            }
        }
        Ok(commits)
    }
}
