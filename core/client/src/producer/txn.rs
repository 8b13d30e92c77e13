//! Transactions on the producer: init, begin, send (each new partition is added to the
//! transaction before its first record is queued), send offsets, commit and abort.
//!
//! A send that fails inside a transaction makes it abortable: commit then refuses, and the
//! caller aborts. Aborting re-initialises the producer, which bumps its epoch and restarts its
//! sequences, so nothing of the aborted transaction can land later. With EndTxn v5 the
//! coordinator bumps the epoch on every commit too, and the producer takes the new one.

use super::{Producer, Shared};
use crate::error::ClientError;
use crate::group::GroupMetadata;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, ApiKey, EndTxnRequest, EndTxnResponse, GroupId, ProducerId,
    TopicName, TransactionalId, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::time::Instant;

/// Attempts at one coordinator request before giving up.
const TXN_ATTEMPTS_MAX: u32 = 20;

/// The producer's view of its open transaction.
#[derive(Debug, Default)]
pub(super) struct TxnState {
    open: bool,
    partitions: BTreeSet<(String, i32)>,
    /// Whether offsets were added to the open transaction.
    offsets: bool,
    /// Why the open transaction can only abort.
    failed: Option<String>,
}

impl TxnState {
    /// Makes the open transaction abortable.
    pub(super) fn poison(&mut self, why: &str) {
        if self.open && self.failed.is_none() {
            self.failed = Some(why.to_string());
        }
    }
}

fn abortable(why: String) -> ClientError {
    ClientError::Kafka {
        code: ResponseError::InvalidTxnState,
        context: format!("the transaction must abort: {why}"),
    }
}

/// Whether a coordinator error is worth another attempt.
fn retry_coordinator(code: ResponseError) -> bool {
    matches!(
        code,
        ResponseError::CoordinatorNotAvailable
            | ResponseError::NotCoordinator
            | ResponseError::CoordinatorLoadInProgress
            | ResponseError::ConcurrentTransactions
            | ResponseError::RequestTimedOut
    )
}

impl Shared {
    fn txn_id(&self) -> Result<TransactionalId, ClientError> {
        self.transactional_id()
            .ok_or_else(|| ClientError::Invalid("the producer has no transactional.id".into()))
    }

    /// Sends a coordinator request to any broker, retrying transport and coordinator errors.
    async fn coordinator<Req, Resp>(
        &self,
        api: ApiKey,
        max_version: i16,
        req: &Req,
        code_of: impl Fn(&Resp) -> i16,
    ) -> Result<(Resp, i16), ClientError>
    where
        Req: Encodable + HeaderVersion,
        Resp: Decodable + HeaderVersion,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = async {
                let conn = self.cluster.any().await?;
                let v = conn.version(api)?.min(max_version);
                let resp: Resp = conn.send(api, v, req).await?;
                match ClientError::kafka(code_of(&resp), format!("{api:?}")) {
                    Some(e) => Err(e),
                    None => Ok((resp, v)),
                }
            }
            .await;
            match outcome {
                Err(e)
                    if attempt < TXN_ATTEMPTS_MAX
                        && e.code().map_or(e.is_retriable(), retry_coordinator) =>
                {
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// Adds `topic`-`partition` to the open transaction, once.
    pub(super) async fn add_to_txn(&self, topic: &str, partition: i32) -> Result<(), ClientError> {
        let (pid, epoch) = {
            let a = self.lock();
            if !a.txn.open {
                return Err(ClientError::Invalid("no transaction is open".into()));
            }
            if let Some(why) = &a.txn.failed {
                return Err(abortable(why.clone()));
            }
            if a.txn.partitions.contains(&(topic.to_string(), partition)) {
                return Ok(());
            }
            (a.producer_id, a.epoch)
        };
        let req = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(self.txn_id()?)
            .with_v3_and_below_producer_id(ProducerId(pid))
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(vec![
                AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(vec![partition]),
            ]);
        let first_code = |r: &AddPartitionsToTxnResponse| {
            r.results_by_topic_v3_and_below
                .iter()
                .flat_map(|t| &t.results_by_partition)
                .map(|p| p.partition_error_code)
                .find(|c| *c != 0)
                .unwrap_or(0)
        };
        self.coordinator(ApiKey::AddPartitionsToTxn, 3, &req, first_code)
            .await?;
        self.lock()
            .txn
            .partitions
            .insert((topic.to_string(), partition));
        Ok(())
    }

    /// Ends the open transaction with EndTxn, taking the epoch a v5 answer returns.
    async fn end_txn(&self, commit: bool) -> Result<(), ClientError> {
        let (pid, epoch) = {
            let a = self.lock();
            (a.producer_id, a.epoch)
        };
        let req = EndTxnRequest::default()
            .with_transactional_id(self.txn_id()?)
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(commit);
        let (resp, v) = self
            .coordinator(ApiKey::EndTxn, 5, &req, |r: &EndTxnResponse| r.error_code)
            .await?;
        let mut a = self.lock();
        if v >= 5 && resp.producer_epoch >= 0 {
            a.producer_id = resp.producer_id.0;
            a.epoch = resp.producer_epoch;
            for q in a.queues.values_mut() {
                q.next_sequence = 0;
            }
        }
        a.txn = TxnState::default();
        Ok(())
    }

    /// Takes a new epoch from the coordinator (aborting whatever this transactional id had
    /// open) and restarts every sequence.
    async fn reinit(&self, pid: i64, epoch: i16) -> Result<(), ClientError> {
        let mut attempt = 0;
        let (pid, epoch) = loop {
            attempt += 1;
            match self.init_producer_id(pid, epoch).await {
                Ok(ids) => break ids,
                Err(e)
                    if attempt < TXN_ATTEMPTS_MAX
                        && (e.is_retriable() || e.code().is_some_and(retry_coordinator)) =>
                {
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let mut a = self.lock();
        a.producer_id = pid;
        a.epoch = epoch;
        a.bump_needed = false;
        a.txn = TxnState::default();
        for q in a.queues.values_mut() {
            q.next_sequence = 0;
        }
        Ok(())
    }
}

impl Producer {
    /// Registers the transactional id with its coordinator: fences every earlier producer with
    /// the same id and ends whatever transaction it left open.
    pub async fn init_transactions(&self) -> Result<(), ClientError> {
        self.shared.txn_id()?;
        self.shared.reinit(-1, -1).await
    }

    /// Opens a transaction; records sent until it ends belong to it.
    pub fn begin_transaction(&self) -> Result<(), ClientError> {
        let mut a = self.shared.lock();
        if a.producer_id < 0 {
            return Err(ClientError::Invalid("init_transactions first".into()));
        }
        if a.txn.open {
            return Err(ClientError::Invalid("a transaction is already open".into()));
        }
        a.txn.open = true;
        Ok(())
    }

    /// Commits `offsets` (topic, partition, next offset) for `group` with the transaction. The
    /// coordinator refuses them if `group`'s member has been fenced by a rebalance; the
    /// transaction must then be aborted.
    pub async fn send_offsets_to_transaction(
        &self,
        offsets: &BTreeMap<(String, i32), i64>,
        group: &GroupMetadata,
    ) -> Result<(), ClientError> {
        let s = &self.shared;
        let (pid, epoch) = {
            let a = s.lock();
            if !a.txn.open {
                return Err(ClientError::Invalid("no transaction is open".into()));
            }
            (a.producer_id, a.epoch)
        };
        let group_id = GroupId(StrBytes::from_string(group.group_id.clone()));
        let add = AddOffsetsToTxnRequest::default()
            .with_transactional_id(s.txn_id()?)
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_group_id(group_id.clone());
        s.coordinator(
            ApiKey::AddOffsetsToTxn,
            3,
            &add,
            |r: &AddOffsetsToTxnResponse| r.error_code,
        )
        .await?;
        s.lock().txn.offsets = true;
        let mut topics: BTreeMap<&str, Vec<TxnOffsetCommitRequestPartition>> = BTreeMap::new();
        for ((t, p), o) in offsets {
            topics.entry(t).or_default().push(
                TxnOffsetCommitRequestPartition::default()
                    .with_partition_index(*p)
                    .with_committed_offset(*o)
                    .with_committed_leader_epoch(-1),
            );
        }
        let commit = TxnOffsetCommitRequest::default()
            .with_transactional_id(s.txn_id()?)
            .with_group_id(group_id)
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_generation_id(group.generation_id)
            .with_member_id(StrBytes::from_string(group.member_id.clone()))
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, parts)| {
                        TxnOffsetCommitRequestTopic::default()
                            .with_name(TopicName(StrBytes::from_string(t.to_string())))
                            .with_partitions(parts)
                    })
                    .collect(),
            );
        let first_code = |r: &TxnOffsetCommitResponse| {
            r.topics
                .iter()
                .flat_map(|t| &t.partitions)
                .map(|p| p.error_code)
                .find(|c| *c != 0)
                .unwrap_or(0)
        };
        s.coordinator(ApiKey::TxnOffsetCommit, 3, &commit, first_code)
            .await?;
        Ok(())
    }

    /// Flushes, then commits the open transaction. Fails, leaving the transaction to be
    /// aborted, if any of its sends failed.
    pub async fn commit_transaction(&self) -> Result<(), ClientError> {
        self.flush().await;
        let (failed, touched) = {
            let a = self.shared.lock();
            if !a.txn.open {
                return Err(ClientError::Invalid("no transaction is open".into()));
            }
            (
                a.txn.failed.clone(),
                !a.txn.partitions.is_empty() || a.txn.offsets,
            )
        };
        if let Some(why) = failed {
            return Err(abortable(why));
        }
        if !touched {
            // Nothing was added: the coordinator has no transaction to end.
            self.shared.lock().txn = TxnState::default();
            return Ok(());
        }
        self.shared.end_txn(true).await
    }

    /// Why the open transaction can only abort (one of its sends failed), if it must.
    pub fn transaction_error(&self) -> Option<String> {
        self.shared.lock().txn.failed.clone()
    }

    /// Whether the open transaction holds anything (records or offsets) for the coordinator to
    /// end; an empty one commits without a request.
    pub fn transaction_has_work(&self) -> bool {
        let a = self.shared.lock();
        a.txn.open && (!a.txn.partitions.is_empty() || a.txn.offsets)
    }

    /// Commits the transaction an earlier instance with this transactional id prepared and
    /// left open, given the producer id and epoch it had (two-phase commit: a restarted sink
    /// finishes what its predecessor pre-committed). Committing one already committed is a
    /// retry and succeeds; after it, this producer holds the id's current epoch and can run
    /// transactions of its own.
    pub async fn commit_prepared(&self, producer_id: i64, epoch: i16) -> Result<(), ClientError> {
        {
            let mut a = self.shared.lock();
            if a.txn.open {
                return Err(ClientError::Invalid("a transaction is already open".into()));
            }
            a.producer_id = producer_id;
            a.epoch = epoch;
            a.txn.open = true;
        }
        let ended = self.shared.end_txn(true).await;
        if ended.is_err() {
            self.shared.lock().txn = TxnState::default();
        }
        ended
    }

    /// Aborts the open transaction and re-initialises the producer, so that nothing sent in
    /// it can land afterwards. Records still queued fail.
    pub async fn abort_transaction(&self) -> Result<(), ClientError> {
        let deadline =
            Instant::now() + Duration::from_millis(self.shared.config.delivery_timeout_ms);
        // Records already in flight settle first; their batches cannot be recalled.
        let mut rx = self.shared.pending.subscribe();
        let _ = tokio::time::timeout_at(deadline, rx.wait_for(|n| *n == 0)).await;
        let (pid, epoch, touched) = {
            let a = self.shared.lock();
            (
                a.producer_id,
                a.epoch,
                !a.txn.partitions.is_empty() || a.txn.offsets,
            )
        };
        if touched {
            // The re-init below aborts it too, if this fails part-way.
            let _ = self.shared.end_txn(false).await;
        }
        self.shared.reinit(pid, epoch).await
    }
}
