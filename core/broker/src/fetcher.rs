//! The follower side of replication: one fetcher per other broker copies the partitions this
//! broker follows there.

use super::{State, until_set};
use crate::cluster::protocol::{FetchedPartition, ReplicaFetch, Request, Response};
use std::sync::Arc;
use std::time::Duration;

/// Pause after a failed fetch, in milliseconds.
const FETCH_BACKOFF_MS: u64 = 100;
/// Longest an idle fetcher waits before looking at the roles again, in milliseconds.
const IDLE_RECHECK_MS: u64 = 500;

/// Copies from `leader` whatever this broker follows there, until shutdown.
pub(crate) async fn run(state: Arc<State>, leader: i32) {
    let mut stop = state.shutdown.subscribe();
    let mut roles = state.replicas.roles();
    let peer = Arc::clone(&state.peers[&leader]);
    loop {
        roles.borrow_and_update();
        let mut parts = Vec::new();
        let mut positions = Vec::new();
        for p in state.replicas.all() {
            if let Some(pos) = p.fetch_position(leader).await {
                parts.push(p);
                positions.push(pos);
            }
        }
        if parts.is_empty() {
            tokio::select! {
                _ = until_set(&mut stop) => return,
                _ = roles.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(IDLE_RECHECK_MS)) => {}
            }
            continue;
        }
        let epochs: Vec<i32> = positions.iter().map(|p| p.leader_epoch).collect();
        let req = ReplicaFetch {
            replica: state.config.node_id,
            max_wait_ms: state.config.replica_fetch_wait_max_ms,
            partition_max_bytes: state.config.replica_fetch_partition_max_bytes,
            max_bytes: state.config.replica_fetch_max_bytes,
            partitions: positions,
        };
        let req = Request::ReplicaFetch(req);
        let answer = tokio::select! {
            _ = until_set(&mut stop) => return,
            a = peer.call(&req) => a,
        };
        // Back off after a failed call, or when the leader refused everything; an empty answer
        // after a long poll is simply asked again.
        let mut back_off = true;
        match answer {
            Ok(Response::Fetched(answers)) if answers.len() == parts.len() => {
                let refused = answers
                    .iter()
                    .all(|a| matches!(a, FetchedPartition::Error(_)));
                let mut progressed = false;
                for ((p, epoch), a) in parts.iter().zip(epochs).zip(answers) {
                    progressed |= p.apply_fetched(leader, epoch, a).await;
                }
                back_off = refused && !progressed;
            }
            Ok(_) => tracing::warn!(leader, "unexpected replica fetch answer"),
            Err(e) => tracing::debug!(leader, error = %e, "replica fetch failed"),
        }
        if back_off {
            tokio::select! {
                _ = until_set(&mut stop) => return,
                _ = roles.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(FETCH_BACKOFF_MS)) => {}
            }
        }
    }
}
