//! ListOffsets.

use super::super::State;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use std::sync::Arc;

/// Answers earliest (-2), latest (-1), max-timestamp (-3) and by-timestamp lookups.
pub(super) async fn handle(state: &Arc<State>, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut topics = Vec::new();
    for t in req.topics {
        let topic = state.topics.get(t.name.0.as_str());
        let mut parts = Vec::new();
        for p in t.partitions {
            let base = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_offset(-1)
                .with_timestamp(-1);
            let partition = topic.as_ref().and_then(|t| {
                usize::try_from(p.partition_index)
                    .ok()
                    .and_then(|i| t.partitions.get(i))
            });
            let resp = match partition {
                None => base.with_error_code(ResponseError::UnknownTopicOrPartition.code()),
                Some(_) if p.current_leader_epoch > 0 => {
                    base.with_error_code(ResponseError::UnknownLeaderEpoch.code())
                }
                Some(part) => match part.offset_for(p.timestamp).await {
                    Ok((offset, ts)) => base
                        .with_offset(offset)
                        .with_timestamp(ts)
                        .with_leader_epoch(0),
                    Err(code) => base.with_error_code(code.code()),
                },
            };
            parts.push(resp);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(parts),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}
