//! Fetch, with long polling.

use super::super::State;
use super::super::partition::AbortedTxn;
use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ProducerId;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

fn aborted_entry(a: &AbortedTxn) -> AbortedTransaction {
    AbortedTransaction::default()
        .with_producer_id(ProducerId(a.producer_id))
        .with_first_offset(a.first_offset)
}

/// Reads every requested partition once; returns the response and the bytes it carries.
async fn collect(state: &State, req: &FetchRequest) -> (FetchResponse, usize) {
    let read_committed = req.isolation_level == 1;
    let mut budget = usize::try_from(req.max_bytes)
        .unwrap_or(0)
        .min(state.config.fetch_max_bytes);
    let mut total = 0usize;
    let mut topics = Vec::new();
    let image = state.image();
    for t in &req.topics {
        // Fetch v13+ names topics by id only.
        let name = if t.topic.0.is_empty() {
            image
                .topics
                .iter()
                .find(|(_, x)| x.id == t.topic_id.as_u128())
                .map(|(n, _)| n.clone())
                .unwrap_or_default()
        } else {
            t.topic.0.to_string()
        };
        let mut parts = Vec::new();
        for p in &t.partitions {
            let mut data = PartitionData::default()
                .with_partition_index(p.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_aborted_transactions(read_committed.then(Vec::new))
                .with_records(Some(Bytes::new()));
            match super::replica(state, &image, &name, p.partition) {
                Err(code) => data = data.with_error_code(code.code()),
                Ok(part) => {
                    let want = usize::try_from(p.partition_max_bytes)
                        .unwrap_or(0)
                        .min(budget);
                    match part
                        .read(
                            p.fetch_offset,
                            want.max(1),
                            p.current_leader_epoch,
                            read_committed,
                        )
                        .await
                    {
                        Ok((bytes, marks, aborted)) => {
                            data = data
                                .with_high_watermark(marks.high_watermark)
                                .with_last_stable_offset(marks.last_stable)
                                .with_log_start_offset(marks.log_start);
                            if read_committed {
                                data = data.with_aborted_transactions(Some(
                                    aborted.iter().map(aborted_entry).collect(),
                                ));
                            }
                            // Past the budget only the first non-empty partition may go over it.
                            if total == 0 || bytes.len() <= budget {
                                budget = budget.saturating_sub(bytes.len());
                                total += bytes.len();
                                data = data.with_records(Some(Bytes::from(bytes)));
                            }
                        }
                        Err(code) => {
                            let m = part.marks();
                            data = data
                                .with_error_code(code.code())
                                .with_high_watermark(m.high_watermark)
                                .with_last_stable_offset(m.last_stable)
                                .with_log_start_offset(m.log_start);
                        }
                    }
                }
            }
            parts.push(data);
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(t.topic.clone())
                .with_topic_id(t.topic_id)
                .with_partitions(parts),
        );
    }
    (FetchResponse::default().with_responses(topics), total)
}

fn has_errors(resp: &FetchResponse) -> bool {
    resp.responses
        .iter()
        .flat_map(|t| &t.partitions)
        .any(|p| p.error_code != 0)
}

/// Answers once `min_bytes` are available, an error occurs, or `max_wait_ms` passes.
pub(super) async fn handle(state: &Arc<State>, req: FetchRequest) -> FetchResponse {
    if req.session_id > 0 {
        // No fetch sessions are created here, so a session id is always unknown.
        return FetchResponse::default()
            .with_error_code(ResponseError::FetchSessionIdNotFound.code());
    }
    let wait = Duration::from_millis(
        u64::try_from(req.max_wait_ms)
            .unwrap_or(0)
            .min(state.config.fetch_max_wait_ms),
    );
    let deadline = Instant::now() + wait;
    let min_bytes = usize::try_from(req.min_bytes).unwrap_or(0);
    let mut arrivals = state.signals.data_arrived.subscribe();
    loop {
        arrivals.borrow_and_update();
        let (resp, bytes) = collect(state, &req).await;
        if bytes >= min_bytes.max(1) || has_errors(&resp) || Instant::now() >= deadline {
            return resp;
        }
        match tokio::time::timeout_at(deadline, arrivals.changed()).await {
            Ok(Ok(())) => {}
            // The deadline passed, or the broker is shutting down.
            Err(_) | Ok(Err(_)) => return collect(state, &req).await.0,
        }
    }
}
