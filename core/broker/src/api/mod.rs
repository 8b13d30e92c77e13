//! Request dispatch: version negotiation, decoding, and one handler per API.

mod admin;
mod fetch;
mod group;
mod list_offsets;
mod metadata;
mod offsets_for_epoch;
mod produce;
mod producer_id;
mod txn;
mod versions;

use super::State;
use super::partition::Partition;
use crate::cluster::metadata::MetadataImage;
use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::Encodable;
use std::sync::Arc;
use weir_wire::{RawRequest, encode_response, parse_request, peek_header};

/// The APIs this broker serves and the versions of each.
pub(crate) const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 5),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
];

/// What to do after a request.
pub(crate) enum Reply {
    /// Send this response frame.
    Frame(Bytes),
    /// Send nothing (acks=0 produce).
    Nothing,
    /// Close the connection: the protocol has no way to answer.
    Close(String),
}

/// The replica of `topic`-`partition` this broker hosts, or the error a client gets: unknown
/// when the metadata has no such partition, not-leader when it lives elsewhere.
fn replica(
    state: &State,
    image: &MetadataImage,
    topic: &str,
    partition: i32,
) -> Result<Arc<Partition>, ResponseError> {
    let exists = image
        .topics
        .get(topic)
        .is_some_and(|t| (0..t.partitions.len() as i32).contains(&partition));
    match state.replicas.get(topic, partition) {
        Some(p) if exists => Ok(p),
        _ if exists => Err(ResponseError::NotLeaderOrFollower),
        _ => Err(ResponseError::UnknownTopicOrPartition),
    }
}

fn supported(api: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == api)
        .map(|(_, lo, hi)| (*lo, *hi))
}

/// Encodes a response; one that does not encode (a handler set a field its version cannot
/// carry) closes the connection with an error log instead of panicking the connection task.
fn respond<T: Encodable>(correlation_id: i32, api: ApiKey, version: i16, resp: &T) -> Reply {
    match encode_response(correlation_id, api, version, resp) {
        Ok(bytes) => Reply::Frame(bytes),
        Err(e) => {
            tracing::error!(error = %e, "response does not encode; closing the connection");
            Reply::Close(e)
        }
    }
}

/// Decodes the request as `$ty`, runs `$handler`, and encodes its response.
macro_rules! route {
    ($raw:expr, $ty:ty, $handler:expr) => {{
        let raw: &RawRequest = $raw;
        match raw.decode::<$ty>() {
            Ok(req) => {
                let resp = $handler(req).await;
                respond(raw.header.correlation_id, raw.api, raw.version(), &resp)
            }
            Err(e) => Reply::Close(e.to_string()),
        }
    }};
}

/// Handles one request frame.
pub(crate) async fn dispatch(state: &Arc<State>, frame: Bytes) -> Reply {
    let (key, version, correlation_id) = match peek_header(&frame) {
        Ok(h) => h,
        Err(e) => return Reply::Close(e.to_string()),
    };
    let Ok(api) = ApiKey::try_from(key) else {
        return Reply::Close(format!("unknown api key {key}"));
    };
    let Some((lo, hi)) = supported(api) else {
        return Reply::Close(format!("{api:?} is not served by this broker"));
    };
    if version < lo || version > hi {
        if api == ApiKey::ApiVersions {
            // Answered at v0, so that any client can read it.
            return respond(correlation_id, api, 0, &versions::unsupported_version());
        }
        return Reply::Close(format!(
            "{api:?} v{version} is outside the supported range {lo}..={hi}"
        ));
    }
    let raw = match parse_request(frame) {
        Ok(r) => r,
        Err(e) => return Reply::Close(e.to_string()),
    };
    let v = raw.version();
    match api {
        ApiKey::ApiVersions => route!(
            &raw,
            kafka_protocol::messages::ApiVersionsRequest,
            |_| async { versions::response() }
        ),
        ApiKey::Metadata => match raw.decode::<kafka_protocol::messages::MetadataRequest>() {
            // The decoder reads a null name at every version; before v10 (topic ids) it is a
            // malformed request, which Kafka refuses too.
            Ok(req) if v < 10 && req.topics.iter().flatten().any(|t| t.name.is_none()) => {
                Reply::Close(format!("null topic name in Metadata v{v}"))
            }
            Ok(req) => respond(
                correlation_id,
                api,
                v,
                &metadata::handle(state, req, v).await,
            ),
            Err(e) => Reply::Close(e.to_string()),
        },
        ApiKey::CreateTopics => route!(&raw, kafka_protocol::messages::CreateTopicsRequest, |r| {
            admin::create_topics(state, r, v)
        }),
        ApiKey::DeleteTopics => route!(&raw, kafka_protocol::messages::DeleteTopicsRequest, |r| {
            admin::delete_topics(state, r)
        }),
        ApiKey::InitProducerId => {
            route!(&raw, kafka_protocol::messages::InitProducerIdRequest, |r| {
                producer_id::handle(state, r)
            })
        }
        ApiKey::ListOffsets => route!(&raw, kafka_protocol::messages::ListOffsetsRequest, |r| {
            list_offsets::handle(state, r, v)
        }),
        ApiKey::Fetch => route!(&raw, kafka_protocol::messages::FetchRequest, |r| {
            fetch::handle(state, r)
        }),
        ApiKey::OffsetForLeaderEpoch => {
            route!(
                &raw,
                kafka_protocol::messages::OffsetForLeaderEpochRequest,
                |r| { offsets_for_epoch::handle(state, r) }
            )
        }
        ApiKey::Produce => match raw.decode::<kafka_protocol::messages::ProduceRequest>() {
            Ok(req) => {
                let acks = req.acks;
                let resp = produce::handle(state, req).await;
                if acks == 0 {
                    Reply::Nothing
                } else {
                    respond(correlation_id, api, v, &resp)
                }
            }
            Err(e) => Reply::Close(e.to_string()),
        },
        ApiKey::FindCoordinator => {
            route!(
                &raw,
                kafka_protocol::messages::FindCoordinatorRequest,
                |r| { group::find_coordinator(state, r, v) }
            )
        }
        ApiKey::JoinGroup => {
            let client_id = raw
                .header
                .client_id
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            route!(&raw, kafka_protocol::messages::JoinGroupRequest, |r| {
                group::join_group(state, r, v, client_id)
            })
        }
        ApiKey::SyncGroup => route!(&raw, kafka_protocol::messages::SyncGroupRequest, |r| {
            group::sync_group(state, r, v)
        }),
        ApiKey::Heartbeat => route!(&raw, kafka_protocol::messages::HeartbeatRequest, |r| {
            group::heartbeat(state, r)
        }),
        ApiKey::LeaveGroup => route!(&raw, kafka_protocol::messages::LeaveGroupRequest, |r| {
            group::leave_group(state, r, v)
        }),
        ApiKey::OffsetCommit => route!(&raw, kafka_protocol::messages::OffsetCommitRequest, |r| {
            group::offset_commit(state, r, v)
        }),
        ApiKey::OffsetFetch => route!(&raw, kafka_protocol::messages::OffsetFetchRequest, |r| {
            group::offset_fetch(state, r, v)
        }),
        ApiKey::AddPartitionsToTxn => {
            route!(
                &raw,
                kafka_protocol::messages::AddPartitionsToTxnRequest,
                |r| { txn::add_partitions(state, r) }
            )
        }
        ApiKey::AddOffsetsToTxn => {
            route!(
                &raw,
                kafka_protocol::messages::AddOffsetsToTxnRequest,
                |r| { txn::add_offsets(state, r) }
            )
        }
        ApiKey::EndTxn => route!(&raw, kafka_protocol::messages::EndTxnRequest, |r| {
            txn::end(state, r, v)
        }),
        ApiKey::TxnOffsetCommit => {
            route!(
                &raw,
                kafka_protocol::messages::TxnOffsetCommitRequest,
                |r| { txn::offset_commit(state, r) }
            )
        }
        other => Reply::Close(format!("{other:?} is not served by this broker")),
    }
}
