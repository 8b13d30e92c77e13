//! OffsetsForLeaderEpoch (KIP-101, KIP-320): where a leader epoch ends in the leader's log.
//!
//! Consumers ask it to validate their position after a leader change or an out-of-range answer:
//! an end offset for their last consumed epoch below their position means the log was truncated
//! under them. Only a leader answers, fenced by the `current_leader_epoch` the client names.

use super::super::State;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use std::sync::Arc;

/// Answers, per partition, the largest epoch at or below the one asked for and its end offset:
/// `NOT_LEADER_OR_FOLLOWER` off the leader, `FENCED_LEADER_EPOCH` / `UNKNOWN_LEADER_EPOCH` when
/// the client's current leader epoch is older / newer than this leader's.
pub(super) async fn handle(
    state: &Arc<State>,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let image = state.image();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let base = EpochEndOffset::default()
                .with_partition(p.partition)
                .with_leader_epoch(-1)
                .with_end_offset(-1);
            let answer = match super::replica(state, &image, t.topic.0.as_str(), p.partition) {
                Err(code) => Err(code),
                Ok(part) => {
                    part.end_offset_for_epoch(p.current_leader_epoch, p.leader_epoch)
                        .await
                }
            };
            parts.push(match answer {
                Ok((epoch, end)) => base.with_leader_epoch(epoch).with_end_offset(end),
                Err(code) => base.with_error_code(code.code()),
            });
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(parts),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    use kafka_protocol::messages::{ApiKey, BrokerId, OffsetForLeaderEpochRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use weir_wire::{encode_request, parse_request};

    fn frame(v: i16) -> Bytes {
        let part = OffsetForLeaderPartition::default()
            .with_partition(2)
            .with_current_leader_epoch(5)
            .with_leader_epoch(4);
        let req = OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                OffsetForLeaderTopic::default()
                    .with_topic(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(vec![part]),
            ]);
        encode_request(ApiKey::OffsetForLeaderEpoch, v, 7, "c", &req).expect("encodes")
    }

    #[test]
    fn served_versions_pass_the_guard_and_huge_counts_do_not() {
        for v in 2..=4 {
            let good = frame(v);
            let raw = parse_request(good.clone()).unwrap_or_else(|e| panic!("v{v}: {e}"));
            let req: OffsetForLeaderEpochRequest = raw.decode().expect("decodes");
            let p = &req.topics[0].partitions[0];
            assert_eq!(
                (p.partition, p.current_leader_epoch, p.leader_epoch),
                (2, 5, 4)
            );
            // The topic count follows the replica id from v3 on.
            let at = good.len() - raw.body.len() + if v >= 3 { 4 } else { 0 };
            let mut evil = good.to_vec();
            if v >= 4 {
                evil.truncate(at);
                evil.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
            } else {
                evil[at..at + 4].copy_from_slice(&i32::MAX.to_be_bytes());
            }
            assert!(parse_request(Bytes::from(evil)).is_err(), "v{v}");
        }
    }
}
