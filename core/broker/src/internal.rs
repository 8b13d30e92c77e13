//! The broker's side of the internal RPC: what it answers on its internal port, and how it
//! reaches the active controller.

use super::State;
use crate::cluster::controller::broker_of;
use crate::cluster::protocol::{FetchedPartition, ReplicaFetch, Request, Response};
use crate::cluster::rpc::RpcError;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Pause between attempts to find the controller, in milliseconds.
const CONTROLLER_RETRY_MS: u64 = 100;

/// Answers one internal request.
pub(crate) async fn handle(state: &Arc<State>, req: Request) -> Response {
    match req {
        Request::Raft(bytes) => {
            state.quorum.deliver(&bytes);
            Response::Done(Ok(()))
        }
        Request::ReplicaFetch(f) => Response::Fetched(serve_replica_fetch(state, f).await),
        Request::WriteMarkers(m) => Response::Markers(super::txn::write_local(state, &m).await),
        other => local_controller(state, other).await,
    }
}

/// Runs a controller request on this broker's controller (which answers NotController
/// unless it is active).
async fn local_controller(state: &State, req: Request) -> Response {
    let c = &state.controller;
    match req {
        Request::Heartbeat(hb) => c.heartbeat(hb).await,
        Request::AlterPartition(a) => c.alter_partition(a).await,
        Request::CreateTopic(t) => c.create_topic(t).await,
        Request::DeleteTopic { name } => c.delete_topic(name).await,
        Request::AllocateProducerIds { count } => c.allocate_producer_ids(count).await,
        Request::Txn(t) => {
            if state.quorum.current().active {
                Response::Txn(super::txn::handle(state, t).await)
            } else {
                Response::NotController {
                    leader: state.quorum.current().leader.map(broker_of),
                }
            }
        }
        Request::Raft(_) | Request::ReplicaFetch(_) | Request::WriteMarkers(_) => {
            unreachable!("routed by handle")
        }
    }
}

/// Sends `req` to the active controller, wherever it is, retrying while the quorum has no
/// active leader, until `timeout` passes. `None` if no controller answered in time.
pub(crate) async fn call_controller(
    state: &State,
    req: Request,
    timeout: Duration,
) -> Option<Response> {
    let deadline = Instant::now() + timeout;
    loop {
        let leader = state.quorum.current().leader.map(broker_of);
        let answer = match leader {
            Some(id) if id == state.config.node_id => {
                Some(local_controller(state, req.clone()).await)
            }
            Some(id) => match state.peers.get(&id) {
                Some(peer) => match tokio::time::timeout_at(deadline, peer.call(&req)).await {
                    Ok(Ok(r)) => Some(r),
                    Ok(Err(RpcError::Transport(_))) | Err(_) => None,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "controller answer not understood");
                        None
                    }
                },
                None => None,
            },
            None => None,
        };
        match answer {
            Some(Response::NotController { .. }) | None => {}
            Some(r) => return Some(r),
        }
        if Instant::now() + Duration::from_millis(CONTROLLER_RETRY_MS) >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(CONTROLLER_RETRY_MS)).await;
    }
}

/// Answers a follower's fetch, holding it until some partition has data or the wait passes.
async fn serve_replica_fetch(state: &State, f: ReplicaFetch) -> Vec<FetchedPartition> {
    let wait = Duration::from_millis(f.max_wait_ms.min(state.config.replica_fetch_wait_max_ms));
    let deadline = Instant::now() + wait;
    let mut appended = state.signals.log_appended.subscribe();
    let per_partition = f
        .partition_max_bytes
        .min(state.config.replica_fetch_partition_max_bytes) as usize;
    loop {
        appended.borrow_and_update();
        let mut budget = f.max_bytes.min(state.config.replica_fetch_max_bytes) as usize;
        let mut out = Vec::with_capacity(f.partitions.len());
        let mut worth_returning = false;
        for p in &f.partitions {
            let answer = match state.replicas.get(&p.topic, p.partition) {
                Some(part) => {
                    part.serve_follower(f.replica, p, per_partition.min(budget).max(1))
                        .await
                }
                None => FetchedPartition::Error(crate::cluster::protocol::CodedError::new(
                    kafka_protocol::error::ResponseError::NotLeaderOrFollower,
                    "no such replica here",
                )),
            };
            match &answer {
                FetchedPartition::Records { records, .. } if records.is_empty() => {}
                FetchedPartition::Records { records, .. } => {
                    budget = budget.saturating_sub(records.len());
                    worth_returning = true;
                }
                _ => worth_returning = true,
            }
            out.push(answer);
        }
        if worth_returning || Instant::now() >= deadline {
            return out;
        }
        match tokio::time::timeout_at(deadline, appended.changed()).await {
            Ok(Ok(())) => {}
            Err(_) | Ok(Err(_)) => return out,
        }
    }
}
