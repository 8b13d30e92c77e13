//! The transactional APIs: InitProducerId with a transactional id, AddPartitionsToTxn,
//! AddOffsetsToTxn, TxnOffsetCommit and EndTxn. Any broker takes them and forwards them to the
//! coordinator on the active controller.

use super::super::State;
use super::super::internal::call_controller;
use crate::cluster::groups::CommittedOffset;
use crate::cluster::protocol::{CodedError, Request, Response, TxnRequest};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, EndTxnRequest, EndTxnResponse, InitProducerIdRequest,
    InitProducerIdResponse, ProducerId, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use std::sync::Arc;
use std::time::Duration;

/// Forwards `req` to the coordinator; the producer id and epoch, or the error code.
async fn forward(state: &State, req: TxnRequest) -> Result<(i64, i16), i16> {
    let timeout = Duration::from_millis(state.config.internal_request_timeout_ms);
    match call_controller(state, Request::Txn(req), timeout).await {
        Some(Response::Txn(Ok(ids))) => Ok(ids),
        Some(Response::Txn(Err(CodedError { code, message }))) => {
            tracing::debug!(code, %message, "transactional request refused");
            Err(code)
        }
        _ => Err(ResponseError::CoordinatorNotAvailable.code()),
    }
}

/// InitProducerId with a transactional id.
pub(super) async fn init(state: &Arc<State>, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let id = req
        .transactional_id
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    let r = forward(
        state,
        TxnRequest::Init {
            id,
            timeout_ms: i64::from(req.transaction_timeout_ms),
            producer_id: req.producer_id.0,
            producer_epoch: req.producer_epoch,
        },
    )
    .await;
    match r {
        Ok((pid, epoch)) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch),
        Err(code) => InitProducerIdResponse::default()
            .with_error_code(code)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    }
}

/// AddPartitionsToTxn (v0-3: one transaction per request).
pub(super) async fn add_partitions(
    state: &Arc<State>,
    req: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let partitions: Vec<(String, i32)> = req
        .v3_and_below_topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), *p)))
        .collect();
    let code = forward(
        state,
        TxnRequest::Add {
            id: req.v3_and_below_transactional_id.0.to_string(),
            producer_id: req.v3_and_below_producer_id.0,
            producer_epoch: req.v3_and_below_producer_epoch,
            partitions,
            groups: Vec::new(),
        },
    )
    .await
    .err()
    .unwrap_or(0);
    let results = req
        .v3_and_below_topics
        .into_iter()
        .map(|t| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name)
                .with_results_by_partition(
                    t.partitions
                        .into_iter()
                        .map(|p| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(p)
                                .with_partition_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
}

/// AddOffsetsToTxn.
pub(super) async fn add_offsets(
    state: &Arc<State>,
    req: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let code = forward(
        state,
        TxnRequest::Add {
            id: req.transactional_id.0.to_string(),
            producer_id: req.producer_id.0,
            producer_epoch: req.producer_epoch,
            partitions: Vec::new(),
            groups: vec![req.group_id.0.to_string()],
        },
    )
    .await
    .err()
    .unwrap_or(0);
    AddOffsetsToTxnResponse::default().with_error_code(code)
}

/// TxnOffsetCommit.
pub(super) async fn offset_commit(
    state: &Arc<State>,
    req: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let offsets: Vec<CommittedOffset> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| CommittedOffset {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: p.committed_leader_epoch,
                metadata: p
                    .committed_metadata
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            })
        })
        .collect();
    let code = forward(
        state,
        TxnRequest::Offsets {
            id: req.transactional_id.0.to_string(),
            producer_id: req.producer_id.0,
            producer_epoch: req.producer_epoch,
            group: req.group_id.0.to_string(),
            // v3+ name the member; a generation of -1 and no member is a standalone committer.
            member: (req.generation_id >= 0 || !req.member_id.is_empty())
                .then(|| (req.generation_id, req.member_id.to_string())),
            offsets,
        },
    )
    .await
    .err()
    .unwrap_or(0);
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(
                    t.partitions
                        .into_iter()
                        .map(|p| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

/// EndTxn; from v5 the epoch is bumped with the decision and returned.
pub(super) async fn end(state: &Arc<State>, req: EndTxnRequest, version: i16) -> EndTxnResponse {
    let r = forward(
        state,
        TxnRequest::End {
            id: req.transactional_id.0.to_string(),
            producer_id: req.producer_id.0,
            producer_epoch: req.producer_epoch,
            commit: req.committed,
            bump: version >= 5,
        },
    )
    .await;
    match r {
        Ok((pid, epoch)) => EndTxnResponse::default()
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch),
        Err(code) => EndTxnResponse::default()
            .with_error_code(code)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    }
}
