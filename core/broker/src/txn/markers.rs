//! Writing a decided transaction's markers into the partitions it touched, at their leaders.

use super::super::State;
use crate::cluster::protocol::{CodedError, Request, Response, WriteMarkers};
use crate::cluster::txns::TxnRecord;
use kafka_protocol::error::ResponseError;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;
use weir_wire::record::{Marker, MarkerKind};

/// How long one attempt to write every marker may take, in milliseconds.
const MARKERS_TIMEOUT_MS: u64 = 5_000;
/// Pause between rounds while some markers are not written, in milliseconds.
const MARKERS_RETRY_MS: u64 = 100;

/// Writes every marker of `rec` (commit or abort), retrying partitions whose leader moved or
/// failed, until all are written or the attempt times out.
pub(super) async fn write_all(
    state: &State,
    rec: &TxnRecord,
    commit: bool,
) -> Result<(), CodedError> {
    let deadline = Instant::now() + Duration::from_millis(MARKERS_TIMEOUT_MS);
    let mut left: Vec<(String, i32)> = rec.partitions.iter().cloned().collect();
    loop {
        let st = state.quorum.current();
        if !st.active {
            return Err(super::unavailable());
        }
        let mut by_leader: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
        // A deleted partition has nothing left to mark: it drops out here.
        for (t, p) in &left {
            if let Some(img) = st.image.partition(t, *p) {
                by_leader
                    .entry(img.leader)
                    .or_default()
                    .push((t.clone(), *p));
            }
        }
        let mut failed = Vec::new();
        for (leader, partitions) in by_leader {
            let req = WriteMarkers {
                producer_id: rec.producer_id,
                txn_epoch: rec.txn_epoch,
                producer_epoch: rec.producer_epoch,
                commit,
                coordinator_epoch: i32::try_from(st.term).unwrap_or(i32::MAX),
                partitions: partitions.clone(),
            };
            let codes = if leader == state.config.node_id {
                Some(write_local(state, &req).await)
            } else if let Some(peer) = state.peers.get(&leader) {
                match tokio::time::timeout_at(deadline, peer.call(&Request::WriteMarkers(req)))
                    .await
                {
                    Ok(Ok(Response::Markers(codes))) if codes.len() == partitions.len() => {
                        Some(codes)
                    }
                    _ => None,
                }
            } else {
                None
            };
            match codes {
                Some(codes) => failed.extend(
                    partitions
                        .into_iter()
                        .zip(codes)
                        .filter(|(_, c)| *c != 0)
                        .map(|(tp, c)| {
                            tracing::debug!(topic = %tp.0, partition = tp.1, code = c, "marker not written");
                            tp
                        }),
                ),
                None => failed.extend(partitions),
            }
        }
        left = failed;
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() + Duration::from_millis(MARKERS_RETRY_MS) >= deadline {
            return Err(CodedError::new(
                ResponseError::ConcurrentTransactions,
                format!("{} markers not written yet", left.len()),
            ));
        }
        tokio::time::sleep(Duration::from_millis(MARKERS_RETRY_MS)).await;
    }
}

/// Writes markers into partitions this broker leads; an error code per partition.
pub(crate) async fn write_local(state: &State, req: &WriteMarkers) -> Vec<i16> {
    let marker = Marker {
        kind: if req.commit {
            MarkerKind::Commit
        } else {
            MarkerKind::Abort
        },
        coordinator_epoch: req.coordinator_epoch,
    };
    let timeout = Duration::from_millis(MARKERS_TIMEOUT_MS);
    let mut codes = Vec::with_capacity(req.partitions.len());
    for (topic, partition) in &req.partitions {
        let code = match state.replicas.get(topic, *partition) {
            None => ResponseError::NotLeaderOrFollower.code(),
            Some(part) => match part
                .append_marker(req.producer_id, req.txn_epoch, req.producer_epoch, marker)
                .await
            {
                Err(e) => e.code(),
                Ok(wait) => match part.await_ack(wait, timeout).await {
                    Ok(()) => 0,
                    Err(e) => e.code(),
                },
            },
        };
        codes.push(code);
    }
    codes
}
