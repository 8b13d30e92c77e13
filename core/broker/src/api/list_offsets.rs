//! ListOffsets.

use super::super::State;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use std::sync::Arc;

/// Answers earliest (-2), latest (-1), max-timestamp (-3) and by-timestamp lookups.
pub(super) async fn handle(
    state: &Arc<State>,
    req: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let image = state.image();
    let read_committed = req.isolation_level == 1;
    let mut topics = Vec::new();
    for t in req.topics {
        let mut parts = Vec::new();
        for p in t.partitions {
            let base = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_offset(-1)
                .with_timestamp(-1);
            let answer = match super::replica(state, &image, t.name.0.as_str(), p.partition_index) {
                Err(code) => Err(code),
                Ok(part) => part
                    .offset_for(p.timestamp, p.current_leader_epoch, read_committed)
                    .await
                    // No record at or after the timestamp: offset, timestamp and epoch
                    // are all unknown (-1), as Kafka answers.
                    .map(|hit| {
                        let epoch = match hit {
                            (-1, _) => -1,
                            _ => part.marks().leader_epoch.unwrap_or(-1),
                        };
                        (hit, epoch)
                    }),
            };
            parts.push(match answer {
                // The leader epoch is in v4 and later only.
                Ok(((offset, ts), epoch)) => base
                    .with_offset(offset)
                    .with_timestamp(ts)
                    .with_leader_epoch(if version >= 4 { epoch } else { -1 }),
                Err(code) => base.with_error_code(code.code()),
            });
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(parts),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}
