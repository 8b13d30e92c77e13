//! Heartbeats to the controller. The first one a broker gets through after starting also
//! registers it (with a fresh incarnation, so partitions it led get new leader epochs), and
//! tells it how far the metadata had got: once its own image has caught up that far, the
//! broker takes up its partition roles. Until then its image may be stale, and acting on it
//! could make it lead a partition that has moved on.

use super::internal::call_controller;
use super::{State, until_set};
use crate::cluster::protocol::{Heartbeat, Request, Response};
use std::sync::Arc;
use std::time::Duration;

/// Sends heartbeats until shutdown.
pub(crate) async fn run(state: Arc<State>) {
    let mut stop = state.shutdown.subscribe();
    let every = Duration::from_millis(state.config.heartbeat_interval_ms.max(1));
    let timeout = Duration::from_millis(state.config.internal_request_timeout_ms);
    loop {
        let hb = Heartbeat {
            broker: state.config.node_id,
            incarnation: state.incarnation,
            host: state.config.advertised_host.clone(),
            port: state.config.advertised_port,
        };
        let answer = tokio::select! {
            _ = until_set(&mut stop) => return,
            a = call_controller(&state, Request::Heartbeat(hb), timeout) => a,
        };
        if let Some(Response::Heartbeat { metadata_index }) = answer
            && !*state.serving.borrow()
        {
            let mut image = state.quorum.watch();
            tokio::select! {
                _ = until_set(&mut stop) => return,
                caught_up = image.wait_for(|s| s.applied >= metadata_index) => if caught_up.is_ok() {
                    tracing::info!(broker = state.config.node_id, metadata_index, "caught up with the metadata; serving");
                    state.serving.send_replace(true);
                },
            }
        }
        tokio::select! {
            _ = until_set(&mut stop) => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
