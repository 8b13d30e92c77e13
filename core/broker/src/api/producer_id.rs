//! InitProducerId for idempotent producers (transactional ones go to [`super::txn`]).

use super::super::State;
use super::super::internal::call_controller;
use crate::cluster::protocol::{Request, Response};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use std::sync::Arc;
use std::time::Duration;

/// Hands out a new producer id from this broker's block (taking a new block from the
/// controller when it runs out), or bumps the epoch of the one the client already holds.
pub(super) async fn handle(
    state: &Arc<State>,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let resp = InitProducerIdResponse::default();
    if req.transactional_id.is_some() {
        return super::txn::init(state, req).await;
    }
    if req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX - 1 {
        return resp
            .with_producer_id(req.producer_id)
            .with_producer_epoch(req.producer_epoch + 1);
    }
    match state.next_producer_id().await {
        Some(id) => resp.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        None => resp
            .with_error_code(ResponseError::CoordinatorNotAvailable.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    }
}

impl State {
    /// A producer id never handed out before, or `None` if the controller could not be reached.
    pub(crate) async fn next_producer_id(&self) -> Option<i64> {
        let mut block = self.producer_ids.lock().await;
        if block.next >= block.end {
            let timeout = Duration::from_millis(self.config.internal_request_timeout_ms);
            let count = self.config.producer_id_block.max(1);
            match call_controller(self, Request::AllocateProducerIds { count }, timeout).await {
                Some(Response::ProducerIds(Ok(first))) => {
                    block.next = first;
                    block.end = first + count;
                }
                _ => return None,
            }
        }
        block.next += 1;
        Some(block.next - 1)
    }
}
