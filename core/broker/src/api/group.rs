//! Consumer group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit and OffsetFetch. The coordinator of every group is the active controller's
//! broker; see [`crate::group`].

use super::super::State;
use crate::cluster::controller::broker_of;
use crate::cluster::groups::CommittedOffset;
use crate::cluster::metadata::MetadataImage;
use crate::cluster::txns::TxnPhase;
use crate::group::{JoinRequest, Joined};
use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use std::collections::{BTreeMap, BTreeSet};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn code(r: Result<(), ResponseError>) -> i16 {
    r.err().map_or(0, |e| e.code())
}

/// The active controller's broker id, host and port, as every broker's quorum state knows it.
fn coordinator(state: &State) -> Result<(i32, String, u16), ResponseError> {
    let st = state.quorum.current();
    let id = st
        .leader
        .map(broker_of)
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    match st.image.brokers.get(&id) {
        Some(b) if !b.fenced => Ok((id, b.host.clone(), b.port)),
        _ => Err(ResponseError::CoordinatorNotAvailable),
    }
}

/// FindCoordinator, for groups and transactional ids alike.
pub(super) async fn find_coordinator(
    state: &State,
    req: FindCoordinatorRequest,
    v: i16,
) -> FindCoordinatorResponse {
    let found = if req.key_type > 1 {
        Err(ResponseError::InvalidRequest)
    } else {
        coordinator(state)
    };
    let (node, host, port, error) = match found {
        Ok((id, host, port)) => (id, host, i32::from(port), 0),
        Err(e) => (-1, String::new(), -1, e.code()),
    };
    if v < 4 {
        return FindCoordinatorResponse::default()
            .with_error_code(error)
            .with_node_id(BrokerId(node))
            .with_host(s(&host))
            .with_port(port);
    }
    let coordinators = req
        .coordinator_keys
        .into_iter()
        .map(|key| {
            Coordinator::default()
                .with_key(key)
                .with_node_id(BrokerId(node))
                .with_host(s(&host))
                .with_port(port)
                .with_error_code(error)
        })
        .collect();
    FindCoordinatorResponse::default().with_coordinators(coordinators)
}

/// JoinGroup; answers once the rebalance completes.
pub(super) async fn join_group(
    state: &State,
    req: JoinGroupRequest,
    v: i16,
    client_id: String,
) -> JoinGroupResponse {
    let join = JoinRequest {
        group: req.group_id.0.to_string(),
        member_id: req.member_id.to_string(),
        client_id,
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if v >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_member_id: v >= 4,
    };
    match state.groups.join(join).await {
        Ok(Joined {
            generation,
            protocol_type,
            protocol,
            leader,
            member_id,
            members,
        }) => JoinGroupResponse::default()
            .with_generation_id(generation)
            .with_protocol_type(Some(s(&protocol_type)))
            .with_protocol_name(Some(s(&protocol)))
            .with_leader(s(&leader))
            .with_member_id(s(&member_id))
            .with_members(
                members
                    .into_iter()
                    .map(|(id, metadata)| {
                        JoinGroupResponseMember::default()
                            .with_member_id(s(&id))
                            .with_metadata(metadata)
                    })
                    .collect(),
            ),
        Err(e) => JoinGroupResponse::default()
            .with_error_code(e.code.code())
            .with_generation_id(-1)
            .with_protocol_name((v < 7).then(|| s("")))
            .with_member_id(s(&e.member_id)),
    }
}

/// SyncGroup.
pub(super) async fn sync_group(state: &State, req: SyncGroupRequest, v: i16) -> SyncGroupResponse {
    let protocol = match (&req.protocol_type, &req.protocol_name) {
        (Some(t), Some(n)) if v >= 5 => Some((t.to_string(), n.to_string())),
        _ => None,
    };
    let assignments = req
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let answer = state
        .groups
        .sync(
            &req.group_id.0,
            req.generation_id,
            &req.member_id,
            protocol.as_ref().map(|(t, n)| (t.as_str(), n.as_str())),
            assignments,
        )
        .await;
    let resp = SyncGroupResponse::default()
        .with_protocol_type(protocol.as_ref().map(|(t, _)| s(t)))
        .with_protocol_name(protocol.as_ref().map(|(_, n)| s(n)));
    match answer {
        Ok(assignment) => resp.with_assignment(assignment),
        Err(e) => resp.with_error_code(e.code()).with_assignment(Bytes::new()),
    }
}

/// Heartbeat.
pub(super) async fn heartbeat(state: &State, req: HeartbeatRequest) -> HeartbeatResponse {
    let r = state
        .groups
        .heartbeat(&req.group_id.0, req.generation_id, &req.member_id);
    HeartbeatResponse::default().with_error_code(code(r))
}

/// LeaveGroup: one member up to v2, a batch from v3.
pub(super) async fn leave_group(
    state: &State,
    req: LeaveGroupRequest,
    v: i16,
) -> LeaveGroupResponse {
    let group = req.group_id.0.to_string();
    if v < 3 {
        let r = state.groups.leave(&group, &req.member_id);
        return LeaveGroupResponse::default().with_error_code(code(r));
    }
    if let Err(e) = state.groups.image() {
        return LeaveGroupResponse::default().with_error_code(e.code());
    }
    let members = req
        .members
        .into_iter()
        .map(|m| {
            let r = state.groups.leave(&group, &m.member_id);
            MemberResponse::default()
                .with_member_id(m.member_id)
                .with_group_instance_id(m.group_instance_id)
                .with_error_code(code(r))
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}

/// OffsetCommit: fenced by generation and member, durable before it is answered.
pub(super) async fn offset_commit(
    state: &State,
    req: OffsetCommitRequest,
    v: i16,
) -> OffsetCommitResponse {
    let group = req.group_id.0.to_string();
    let coordinator = &state.groups;
    let fenced =
        coordinator.check_commit(&group, req.generation_id_or_member_epoch, &req.member_id);
    let image = coordinator.image();
    let metadata_max = coordinator.settings().offset_metadata_bytes_max;
    // (topic, partition, error) in request order; error 0 means it goes into the batch.
    let mut results: Vec<(TopicName, i32, i16)> = Vec::new();
    let mut batch = Vec::new();
    for t in req.topics {
        for p in t.partitions {
            let metadata = p
                .committed_metadata
                .map(|m| m.to_string())
                .unwrap_or_default();
            let error = match (&fenced, &image) {
                (Err(e), _) | (_, Err(e)) => e.code(),
                (Ok(()), Ok(image)) if image.partition(&t.name.0, p.partition_index).is_none() => {
                    ResponseError::UnknownTopicOrPartition.code()
                }
                _ if metadata.len() > metadata_max => ResponseError::OffsetMetadataTooLarge.code(),
                _ => {
                    batch.push(CommittedOffset {
                        topic: t.name.0.to_string(),
                        partition: p.partition_index,
                        offset: p.committed_offset,
                        leader_epoch: if v >= 6 { p.committed_leader_epoch } else { -1 },
                        metadata,
                    });
                    0
                }
            };
            results.push((t.name.clone(), p.partition_index, error));
        }
    }
    let committed = if batch.is_empty() {
        0
    } else {
        code(coordinator.commit(&group, batch).await)
    };
    let mut topics: Vec<OffsetCommitResponseTopic> = Vec::new();
    for (name, partition, error) in results {
        let p = OffsetCommitResponsePartition::default()
            .with_partition_index(partition)
            .with_error_code(if error == 0 { committed } else { error });
        match topics.last_mut() {
            Some(t) if t.name == name => t.partitions.push(p),
            _ => topics.push(
                OffsetCommitResponseTopic::default()
                    .with_name(name)
                    .with_partitions(vec![p]),
            ),
        }
    }
    OffsetCommitResponse::default().with_topics(topics)
}

/// A partition's committed offset, leader epoch and metadata; -1, -1 and empty when none.
type Committed = (i64, i32, String);

/// One partition's committed offset.
fn committed_of(image: &MetadataImage, group: &str, topic: &str, partition: i32) -> Committed {
    image
        .groups
        .get(group)
        .and_then(|g| g.committed(image, topic, partition))
        .map_or((-1, -1, String::new()), |r| {
            (r.offset, r.leader_epoch, r.metadata.clone())
        })
}

/// Every (topic, partitions) a group has committed for, for a fetch of all topics.
fn all_committed(image: &MetadataImage, group: &str) -> Vec<(String, Vec<i32>)> {
    let Some(g) = image.groups.get(group) else {
        return Vec::new();
    };
    g.offsets
        .keys()
        .map(|topic| {
            let parts = g.offsets[topic]
                .keys()
                .copied()
                .filter(|p| g.committed(image, topic, *p).is_some())
                .collect::<Vec<_>>();
            (topic.clone(), parts)
        })
        .filter(|(_, parts)| !parts.is_empty())
        .collect()
}

/// The offsets asked for, or all of the group's when `topics` is `None`, each with its own
/// error: with `require_stable`, a partition whose offset an open transaction is about to
/// commit answers UNSTABLE_OFFSET_COMMIT, so that a new owner waits for that transaction
/// instead of reprocessing what it covers.
fn lookup(
    image: &MetadataImage,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> BTreeMap<String, Vec<(i32, Committed, i16)>> {
    let topics = topics.unwrap_or_else(|| all_committed(image, group));
    let pending: BTreeSet<(&str, i32)> = if require_stable {
        pending_offsets(image, group)
    } else {
        BTreeSet::new()
    };
    let mut out: BTreeMap<String, Vec<(i32, Committed, i16)>> = BTreeMap::new();
    for (topic, parts) in topics {
        let entry = out.entry(topic.clone()).or_default();
        for p in parts {
            if pending.contains(&(topic.as_str(), p)) {
                let none = (-1, -1, String::new());
                entry.push((p, none, ResponseError::UnstableOffsetCommit.code()));
            } else {
                entry.push((p, committed_of(image, group, &topic, p), 0));
            }
        }
    }
    out
}

/// The partitions of `group` whose offsets an open transaction has sent but not yet committed.
fn pending_offsets<'a>(image: &'a MetadataImage, group: &str) -> BTreeSet<(&'a str, i32)> {
    image
        .transactions
        .values()
        .filter(|t| t.phase == TxnPhase::Ongoing)
        .filter_map(|t| t.offsets.get(group))
        .flatten()
        .map(|o| (o.topic.as_str(), o.partition))
        .collect()
}

/// The response topics of an OffsetFetch from what [`lookup`] found, every partition carrying
/// `error` unless it has its own. A macro because the layouts before and from v8 are distinct
/// types of one shape.
macro_rules! offset_topics {
    ($topic:ty, $partition:ty, $found:expr, $error:expr) => {
        $found
            .into_iter()
            .map(|(topic, parts)| {
                <$topic>::default()
                    .with_name(TopicName(s(&topic)))
                    .with_partitions(
                        parts
                            .into_iter()
                            .map(|(p, (offset, epoch, meta), own): (i32, Committed, i16)| {
                                <$partition>::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(offset)
                                    .with_committed_leader_epoch(epoch)
                                    .with_metadata(Some(s(&meta)))
                                    .with_error_code(if own != 0 { own } else { $error })
                            })
                            .collect(),
                    )
            })
            .collect()
    };
}

/// OffsetFetch: one group up to v7, a batch of groups from v8.
pub(super) async fn offset_fetch(
    state: &State,
    req: OffsetFetchRequest,
    v: i16,
) -> OffsetFetchResponse {
    let image = state.groups.image();
    if v >= 8 {
        let groups = req
            .groups
            .into_iter()
            .map(|g| {
                let resp = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                let image = match &image {
                    Ok(i) => i,
                    Err(e) => return resp.with_error_code(e.code()),
                };
                let asked = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes))
                        .collect()
                });
                let found = lookup(image, &g.group_id.0, asked, req.require_stable);
                resp.with_topics(offset_topics!(
                    OffsetFetchResponseTopics,
                    OffsetFetchResponsePartitions,
                    found,
                    0
                ))
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let asked: Option<Vec<(String, Vec<i32>)>> = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let (found, error) = match &image {
        Ok(image) => (lookup(image, &req.group_id.0, asked, req.require_stable), 0),
        Err(e) => {
            let none = |ps: Vec<i32>| {
                ps.into_iter()
                    .map(|p| (p, (-1, -1, String::new()), 0))
                    .collect()
            };
            let found: BTreeMap<String, Vec<(i32, Committed, i16)>> = asked
                .unwrap_or_default()
                .into_iter()
                .map(|(t, ps)| (t, none(ps)))
                .collect();
            (found, e.code())
        }
    };
    // v1 has no top-level error: each partition asked for carries it.
    let partition_error = if v < 2 { error } else { 0 };
    OffsetFetchResponse::default()
        .with_topics(offset_topics!(
            OffsetFetchResponseTopic,
            OffsetFetchResponsePartition,
            found,
            partition_error
        ))
        .with_error_code(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::{Decodable, Encodable};
    use weir_wire::{encode_request, parse_request};

    /// Encodes `msg` at every version the broker serves for `api`, and checks the guard lets
    /// it through and the decoder reads it back.
    fn round_trip<T: Encodable + Decodable>(api: ApiKey, msg: impl Fn(i16) -> T) {
        let (_, lo, hi) = *super::super::SUPPORTED
            .iter()
            .find(|(k, _, _)| *k == api)
            .expect("served");
        for v in lo..=hi {
            let frame = encode_request(api, v, 7, "test", &msg(v))
                .unwrap_or_else(|e| panic!("{api:?} v{v}: {e}"));
            let raw = parse_request(frame).unwrap_or_else(|e| panic!("{api:?} v{v}: {e}"));
            raw.decode::<T>()
                .unwrap_or_else(|e| panic!("{api:?} v{v}: {e}"));
        }
    }

    #[test]
    fn the_guard_admits_every_served_version_of_the_group_requests() {
        round_trip(ApiKey::FindCoordinator, |v| {
            let r = FindCoordinatorRequest::default();
            if v >= 4 {
                r.with_coordinator_keys(vec![s("g"), s("h")])
            } else {
                r.with_key(s("g"))
            }
        });
        round_trip(ApiKey::JoinGroup, |v| {
            let p = join_group_request::JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(Bytes::from_static(b"meta"));
            let r = JoinGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_session_timeout_ms(10_000)
                .with_member_id(s("m"))
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![p.clone(), p.with_name(s("roundrobin"))]);
            if v >= 8 {
                r.with_reason(Some(s("why")))
            } else {
                r
            }
        });
        round_trip(ApiKey::SyncGroup, |v| {
            let a = sync_group_request::SyncGroupRequestAssignment::default()
                .with_member_id(s("m"))
                .with_assignment(Bytes::from_static(b"abc"));
            let r = SyncGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_generation_id(3)
                .with_member_id(s("m"))
                .with_assignments(vec![a.clone(), a]);
            if v >= 5 {
                r.with_protocol_type(Some(s("consumer")))
                    .with_protocol_name(Some(s("range")))
            } else {
                r
            }
        });
        round_trip(ApiKey::Heartbeat, |_| {
            HeartbeatRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_member_id(s("m"))
        });
        round_trip(ApiKey::LeaveGroup, |v| {
            let r = LeaveGroupRequest::default().with_group_id(GroupId(s("g")));
            if v >= 3 {
                let m = leave_group_request::MemberIdentity::default().with_member_id(s("m"));
                r.with_members(vec![m.clone(), m])
            } else {
                r.with_member_id(s("m"))
            }
        });
        round_trip(ApiKey::OffsetCommit, |_| {
            let p = offset_commit_request::OffsetCommitRequestPartition::default()
                .with_partition_index(1)
                .with_committed_offset(10)
                .with_committed_metadata(Some(s("x")));
            let t = offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![p.clone(), p]);
            OffsetCommitRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_member_id(s("m"))
                .with_topics(vec![t.clone(), t])
        });
        round_trip(ApiKey::OffsetFetch, |v| {
            if v >= 8 {
                let t = offset_fetch_request::OffsetFetchRequestTopics::default()
                    .with_name(TopicName(s("t")))
                    .with_partition_indexes(vec![0, 1]);
                let g = offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s("g")))
                    .with_topics(Some(vec![t]));
                OffsetFetchRequest::default().with_groups(vec![g.clone(), g.with_topics(None)])
            } else {
                let t = offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partition_indexes(vec![0, 1]);
                OffsetFetchRequest::default()
                    .with_group_id(GroupId(s("g")))
                    .with_topics(Some(vec![t]))
            }
        });
    }

    #[test]
    fn an_inflated_protocol_count_is_refused_before_decoding() {
        let p = join_group_request::JoinGroupRequestProtocol::default().with_name(s("range"));
        let req = JoinGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_member_id(s(""))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![p]);
        let frame = encode_request(ApiKey::JoinGroup, 5, 7, "test", &req).unwrap();
        let header = frame.len() - parse_request(frame.clone()).unwrap().body.len();
        // group "g" (2+1), session (4), rebalance (4), member "" (2), instance null (2),
        // type "consumer" (2+8), then the protocol count.
        let at = header + 3 + 4 + 4 + 2 + 2 + 10;
        let mut evil = frame.to_vec();
        assert_eq!(
            evil[at..at + 4],
            [0, 0, 0, 1],
            "the count is where the layout says"
        );
        evil[at..at + 4].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(parse_request(Bytes::from(evil)).is_err());
    }
}
