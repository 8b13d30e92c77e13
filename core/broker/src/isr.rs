//! ISR maintenance: each leader periodically compares its followers' progress with its ISR and
//! asks the controller for the change it wants.

use super::internal::call_controller;
use super::{State, until_set};
use crate::cluster::protocol::{Request, Response};
use std::sync::Arc;
use std::time::Duration;

/// Checks the ISRs of the partitions this broker leads, a few times per lag period, until
/// shutdown.
pub(crate) async fn run(state: Arc<State>) {
    let mut stop = state.shutdown.subscribe();
    let lag = Duration::from_millis(state.config.replica_lag_time_max_ms);
    let every = (lag / 4).max(Duration::from_millis(10));
    let timeout = Duration::from_millis(state.config.internal_request_timeout_ms);
    loop {
        tokio::select! {
            _ = until_set(&mut stop) => return,
            _ = tokio::time::sleep(every) => {}
        }
        for p in state.replicas.all() {
            let Some(req) = p.isr_change(lag).await else {
                continue;
            };
            let base = req.partition_epoch;
            let answer = match call_controller(&state, Request::AlterPartition(req), timeout).await
            {
                Some(Response::Partition(r)) => r.map_err(Some),
                _ => Err(None),
            };
            p.isr_changed(base, answer).await;
        }
    }
}
