//! Protocol conformance, mechanically: every (API, version) pair the broker advertises gets a
//! default request and, where the API takes them, populated ones (named topics, unknown topics,
//! null arrays meaning "all"), built with `kafka-protocol` at that version. Each response must
//! decode at the same version and carry only error codes that API can return at that version, the connection
//! must stay usable, and no task may panic.

mod common;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError::{self, *};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use std::fmt::Debug;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use weir_broker::{Broker, BrokerConfig};
use weir_seams::clock::Clock;
use weir_seams::disk::Disk;
use weir_seams::net::{Net, Stream};
use weir_wire::frame::{read_frame, write_frame};
use weir_wire::record::{Codec, ProducerBatch, RecordToEncode, encode_batch};
use weir_wire::{decode_response, encode_request};

static PANICS: AtomicUsize = AtomicUsize::new(0);

const TOPIC: &str = "conf";

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn tn(v: &str) -> TopicName {
    TopicName(s(v))
}

/// One request to send: a label for failure messages, its frame, and whether the broker answers.
struct Variant {
    label: String,
    frame: Bytes,
    answered: bool,
}

/// Builds the variants of one (API, version) pair.
struct Builder {
    api: ApiKey,
    v: i16,
    out: Vec<Variant>,
    /// Variants `kafka-protocol` cannot encode at this version (a field the version lacks).
    skipped: usize,
}

impl Builder {
    fn add<T: Encodable>(&mut self, label: &str, msg: &T) {
        self.add_with(label, msg, true);
    }

    fn add_with<T: Encodable>(&mut self, label: &str, msg: &T, answered: bool) {
        let Ok(frame) = encode_request(self.api, self.v, 7, "weir-conformance", msg) else {
            self.skipped += 1;
            return;
        };
        // A flexible request ends with its top-level tagged fields; none of ours sets one, so
        // the last byte is their count, 0. The same request with an unknown tag (which the
        // broker must skip) replaces it with one tag, 100, of one byte.
        let flexible = self.api.request_header_version(self.v) >= 2;
        if flexible && frame.last() == Some(&0) {
            let mut tagged = BytesMut::from(&frame[..frame.len() - 1]);
            tagged.put_slice(&[1, 100, 1, 42]);
            self.out.push(Variant {
                label: format!("{label}, unknown tagged field"),
                frame: tagged.freeze(),
                answered,
            });
        }
        self.out.push(Variant {
            label: label.into(),
            frame,
            answered,
        });
    }
}

/// Facts about the broker the populated requests refer to.
struct Ctx {
    topic_id: uuid::Uuid,
    records: Bytes,
}

fn variants(api: ApiKey, v: i16, ctx: &Ctx) -> Builder {
    let mut b = Builder {
        api,
        v,
        out: Vec::new(),
        skipped: 0,
    };
    match api {
        ApiKey::Produce => {
            b.add_with("default (acks=0)", &ProduceRequest::default(), false);
            for (label, name, acks) in [
                ("acks=1", TOPIC, 1),
                ("acks=all", TOPIC, -1),
                ("unknown topic", "conf-missing", -1),
            ] {
                let part = produce_request::PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(ctx.records.clone()));
                let topic = produce_request::TopicProduceData::default()
                    .with_name(tn(name))
                    .with_partition_data(vec![part]);
                let req = ProduceRequest::default()
                    .with_acks(acks)
                    .with_timeout_ms(5000)
                    .with_topic_data(vec![topic]);
                b.add(label, &req);
            }
        }
        ApiKey::Fetch => {
            b.add("default", &FetchRequest::default());
            for (label, name, offset) in [
                ("from 0", TOPIC, 0),
                ("out of range", TOPIC, 1_000_000),
                ("unknown topic", "conf-missing", 0),
            ] {
                let part = fetch_request::FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(64 * 1024);
                let mut topic = fetch_request::FetchTopic::default().with_partitions(vec![part]);
                topic = if v >= 13 {
                    topic.with_topic_id(if name == TOPIC {
                        ctx.topic_id
                    } else {
                        uuid::Uuid::from_u128(7)
                    })
                } else {
                    topic.with_topic(tn(name))
                };
                let req = FetchRequest::default()
                    .with_max_wait_ms(0)
                    .with_min_bytes(0)
                    .with_max_bytes(1 << 20)
                    .with_session_epoch(-1)
                    .with_topics(vec![topic]);
                b.add(label, &req);
                b.add(
                    &format!("{label}, read_committed"),
                    &req.clone().with_isolation_level(1),
                );
                if v >= 7 {
                    b.add(
                        &format!("{label}, new fetch session"),
                        &req.clone().with_session_epoch(0),
                    );
                    b.add(
                        &format!("{label}, unknown fetch session"),
                        &req.clone().with_session_id(12_345).with_session_epoch(1),
                    );
                }
                if v >= 11 {
                    b.add(
                        &format!("{label}, rack"),
                        &req.clone().with_rack_id(s("rack-a")),
                    );
                }
            }
        }
        ApiKey::ListOffsets => {
            b.add("default", &ListOffsetsRequest::default());
            let p = |i, ts| {
                list_offsets_request::ListOffsetsPartition::default()
                    .with_partition_index(i)
                    .with_timestamp(ts)
            };
            for (label, name, parts) in [
                ("latest and earliest", TOPIC, vec![p(0, -1), p(1, -2)]),
                ("max timestamp", TOPIC, vec![p(0, -3)]),
                ("by timestamp", TOPIC, vec![p(0, 1_700_000_000_000)]),
                ("unknown partition", TOPIC, vec![p(99, -1)]),
                ("unknown topic", "conf-missing", vec![p(0, -1)]),
            ] {
                let topic = list_offsets_request::ListOffsetsTopic::default()
                    .with_name(tn(name))
                    .with_partitions(parts);
                let req = ListOffsetsRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_topics(vec![topic]);
                b.add(label, &req);
                b.add(
                    &format!("{label}, read_committed"),
                    &req.clone().with_isolation_level(1),
                );
            }
        }
        ApiKey::Metadata => {
            b.add("default (empty topics)", &MetadataRequest::default());
            b.add(
                "null topics (all)",
                &MetadataRequest::default().with_topics(None),
            );
            for (label, name) in [("named", TOPIC), ("unknown", "conf-missing")] {
                let t = metadata_request::MetadataRequestTopic::default().with_name(Some(tn(name)));
                b.add(
                    label,
                    &MetadataRequest::default()
                        .with_topics(Some(vec![t]))
                        .with_allow_auto_topic_creation(false)
                        .with_include_topic_authorized_operations(true),
                );
            }
            if v >= 10 {
                let by_id = metadata_request::MetadataRequestTopic::default()
                    .with_topic_id(ctx.topic_id)
                    .with_name(None);
                b.add(
                    "by topic id",
                    &MetadataRequest::default().with_topics(Some(vec![by_id])),
                );
            }
            if v >= 9 {
                // librdkafka writes a null compact array padded to four bytes: 00 00 00 00.
                let req = MetadataRequest::default().with_topics(None);
                let mut body = BytesMut::new();
                req.encode(&mut body, v).unwrap();
                let whole = encode_request(api, v, 7, "rdkafka", &req).unwrap();
                let header = whole.len() - body.len();
                let mut frame = BytesMut::from(&whole[..header]);
                frame.put_slice(&[0, 0, 0]);
                frame.put_slice(&body);
                b.out.push(Variant {
                    label: "null topics, librdkafka padding".into(),
                    frame: frame.freeze(),
                    answered: true,
                });
            }
        }
        ApiKey::ApiVersions => {
            b.add("default", &ApiVersionsRequest::default());
            if v >= 3 {
                b.add(
                    "client software named",
                    &ApiVersionsRequest::default()
                        .with_client_software_name(s("weir-conformance"))
                        .with_client_software_version(s("1.0")),
                );
            }
        }
        ApiKey::CreateTopics => {
            b.add("default", &CreateTopicsRequest::default());
            let topic = |name: &str| {
                create_topics_request::CreatableTopic::default()
                    .with_name(tn(name))
                    .with_num_partitions(1)
                    .with_replication_factor(1)
            };
            let new = format!("conf-new-{v}");
            for (label, t, validate) in [
                ("validate only", topic(&new), true),
                ("new topic", topic(&new), false),
                ("existing topic", topic(TOPIC), false),
                ("bad name", topic("a/b"), false),
                (
                    "bad config",
                    topic("conf-bad-config").with_configs(vec![
                        create_topics_request::CreatableTopicConfig::default()
                            .with_name(s("retention.ms"))
                            .with_value(Some(s("soon"))),
                    ]),
                    false,
                ),
            ] {
                b.add(
                    label,
                    &CreateTopicsRequest::default()
                        .with_topics(vec![t])
                        .with_timeout_ms(5000)
                        .with_validate_only(validate),
                );
            }
        }
        ApiKey::DeleteTopics => {
            b.add("default", &DeleteTopicsRequest::default());
            let req = if v >= 6 {
                DeleteTopicsRequest::default().with_topics(vec![
                    delete_topics_request::DeleteTopicState::default()
                        .with_name(Some(tn("conf-missing"))),
                ])
            } else {
                DeleteTopicsRequest::default().with_topic_names(vec![tn("conf-missing")])
            };
            b.add("unknown topic", &req.with_timeout_ms(5000));
        }
        ApiKey::InitProducerId => {
            b.add("default", &InitProducerIdRequest::default());
            b.add(
                "idempotent",
                &InitProducerIdRequest::default()
                    .with_transactional_id(None)
                    .with_transaction_timeout_ms(60_000),
            );
            b.add(
                "transactional",
                &InitProducerIdRequest::default()
                    .with_transactional_id(Some(TransactionalId(s(&format!("conf-tx-{v}")))))
                    .with_transaction_timeout_ms(60_000),
            );
        }
        ApiKey::FindCoordinator => {
            b.add("default", &FindCoordinatorRequest::default());
            for (label, key, kind) in [("group", "conf-g", 0), ("transaction", "conf-tx", 1)] {
                let req = if v >= 4 {
                    FindCoordinatorRequest::default().with_coordinator_keys(vec![s(key)])
                } else {
                    FindCoordinatorRequest::default().with_key(s(key))
                };
                b.add(label, &req.with_key_type(kind));
            }
        }
        ApiKey::JoinGroup => {
            b.add("default", &JoinGroupRequest::default());
            let req = JoinGroupRequest::default()
                .with_group_id(GroupId(s(&format!("conf-join-{v}"))))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(10_000)
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![
                    join_group_request::JoinGroupRequestProtocol::default()
                        .with_name(s("range"))
                        .with_metadata(Bytes::from_static(&[0, 1, 0, 0, 0, 0, 0, 0, 0, 0])),
                ]);
            b.add("new member", &req);
            if v >= 5 {
                b.add(
                    "static member",
                    &req.clone()
                        .with_group_id(GroupId(s(&format!("conf-static-{v}"))))
                        .with_group_instance_id(Some(s("conf-instance")))
                        .with_reason(Some(s("conformance"))),
                );
            }
            b.add(
                "unknown member",
                &req.clone()
                    .with_group_id(GroupId(s("conf-none")))
                    .with_member_id(s("conf-m")),
            );
        }
        ApiKey::SyncGroup => {
            b.add("default", &SyncGroupRequest::default());
            b.add(
                "unknown member",
                &SyncGroupRequest::default()
                    .with_group_id(GroupId(s("conf-none")))
                    .with_generation_id(1)
                    .with_member_id(s("conf-m"))
                    .with_protocol_type(Some(s("consumer")))
                    .with_protocol_name(Some(s("range"))),
            );
        }
        ApiKey::Heartbeat => {
            b.add("default", &HeartbeatRequest::default());
            b.add(
                "unknown member",
                &HeartbeatRequest::default()
                    .with_group_id(GroupId(s("conf-none")))
                    .with_generation_id(1)
                    .with_member_id(s("conf-m")),
            );
        }
        ApiKey::LeaveGroup => {
            b.add("default", &LeaveGroupRequest::default());
            let req = LeaveGroupRequest::default().with_group_id(GroupId(s("conf-none")));
            let req = if v >= 3 {
                req.with_members(vec![
                    leave_group_request::MemberIdentity::default()
                        .with_member_id(s("conf-m"))
                        .with_reason(Some(s("conformance"))),
                ])
            } else {
                req.with_member_id(s("conf-m"))
            };
            b.add("unknown member", &req);
        }
        ApiKey::OffsetCommit => {
            b.add("default", &OffsetCommitRequest::default());
            let part = |i| {
                offset_commit_request::OffsetCommitRequestPartition::default()
                    .with_partition_index(i)
                    .with_committed_offset(1)
                    .with_committed_metadata(Some(s("")))
            };
            for (label, name) in [("simple commit", TOPIC), ("unknown topic", "conf-missing")] {
                let topic = offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(tn(name))
                    .with_partitions(vec![part(0)]);
                b.add(
                    label,
                    &OffsetCommitRequest::default()
                        .with_group_id(GroupId(s("conf-commit")))
                        .with_generation_id_or_member_epoch(-1)
                        .with_topics(vec![topic]),
                );
            }
            let topic = offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(tn(TOPIC))
                .with_partitions(vec![part(0)]);
            b.add(
                "unknown member",
                &OffsetCommitRequest::default()
                    .with_group_id(GroupId(s("conf-none")))
                    .with_generation_id_or_member_epoch(3)
                    .with_member_id(s("conf-m"))
                    .with_topics(vec![topic]),
            );
        }
        ApiKey::OffsetFetch => {
            b.add("default", &OffsetFetchRequest::default());
            let named = || {
                vec![
                    offset_fetch_request::OffsetFetchRequestTopic::default()
                        .with_name(tn(TOPIC))
                        .with_partition_indexes(vec![0, 1]),
                ]
            };
            if v >= 8 {
                let group = |topics| {
                    offset_fetch_request::OffsetFetchRequestGroup::default()
                        .with_group_id(GroupId(s("conf-commit")))
                        .with_topics(topics)
                };
                let named = vec![
                    offset_fetch_request::OffsetFetchRequestTopics::default()
                        .with_name(tn(TOPIC))
                        .with_partition_indexes(vec![0, 1]),
                ];
                b.add(
                    "named",
                    &OffsetFetchRequest::default()
                        .with_topics(None)
                        .with_groups(vec![group(Some(named))]),
                );
                b.add(
                    "null topics (all)",
                    &OffsetFetchRequest::default()
                        .with_topics(None)
                        .with_groups(vec![group(None)]),
                );
            } else {
                let req = OffsetFetchRequest::default().with_group_id(GroupId(s("conf-commit")));
                b.add("named", &req.clone().with_topics(Some(named())));
                b.add("null topics (all)", &req.clone().with_topics(None));
                if v >= 7 {
                    b.add(
                        "require stable",
                        &req.with_topics(Some(named())).with_require_stable(true),
                    );
                }
            }
        }
        ApiKey::AddPartitionsToTxn => {
            b.add("default", &AddPartitionsToTxnRequest::default());
            b.add(
                "unknown transaction",
                &AddPartitionsToTxnRequest::default()
                    .with_v3_and_below_transactional_id(TransactionalId(s("conf-tx-none")))
                    .with_v3_and_below_producer_id(ProducerId(12_345))
                    .with_v3_and_below_topics(vec![
                        add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                            .with_name(tn(TOPIC))
                            .with_partitions(vec![0]),
                    ]),
            );
        }
        ApiKey::AddOffsetsToTxn => {
            b.add("default", &AddOffsetsToTxnRequest::default());
            b.add(
                "unknown transaction",
                &AddOffsetsToTxnRequest::default()
                    .with_transactional_id(TransactionalId(s("conf-tx-none")))
                    .with_producer_id(ProducerId(12_345))
                    .with_group_id(GroupId(s("conf-g"))),
            );
        }
        ApiKey::EndTxn => {
            b.add("default", &EndTxnRequest::default());
            b.add(
                "unknown transaction",
                &EndTxnRequest::default()
                    .with_transactional_id(TransactionalId(s("conf-tx-none")))
                    .with_producer_id(ProducerId(12_345))
                    .with_committed(true),
            );
        }
        ApiKey::TxnOffsetCommit => {
            b.add("default", &TxnOffsetCommitRequest::default());
            b.add(
                "unknown transaction",
                &TxnOffsetCommitRequest::default()
                    .with_transactional_id(TransactionalId(s("conf-tx-none")))
                    .with_group_id(GroupId(s("conf-g")))
                    .with_producer_id(ProducerId(12_345))
                    .with_generation_id(-1)
                    .with_topics(vec![
                        txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                            .with_name(tn(TOPIC))
                            .with_partitions(vec![
                                txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                                    .with_partition_index(0)
                                    .with_committed_offset(1),
                            ]),
                    ]),
            );
        }
        ApiKey::OffsetForLeaderEpoch => {
            b.add("default", &OffsetForLeaderEpochRequest::default());
            for (label, name, epoch) in [
                ("current epoch", TOPIC, 0),
                ("future epoch", TOPIC, 99),
                ("unknown topic", "conf-missing", 0),
            ] {
                let topic = offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                    .with_topic(tn(name))
                    .with_partitions(vec![
                        offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                            .with_partition(0)
                            .with_current_leader_epoch(-1)
                            .with_leader_epoch(epoch),
                    ]);
                b.add(
                    label,
                    &OffsetForLeaderEpochRequest::default()
                        .with_replica_id(BrokerId(-1))
                        .with_topics(vec![topic]),
                );
            }
        }
        other => panic!("no conformance requests for {other:?}: add them"),
    }
    b
}

/// Decodes `frame` as `R` and returns every `error_code` it carries.
fn codes_of<R: Decodable + Debug>(frame: Bytes, api: ApiKey, v: i16) -> Result<Vec<i16>, String> {
    let mut buf = frame;
    let header = ResponseHeader::decode(&mut buf, api.response_header_version(v))
        .map_err(|e| format!("response header: {e}"))?;
    if header.correlation_id != 7 {
        return Err(format!("correlation id {}, sent 7", header.correlation_id));
    }
    let resp = R::decode(&mut buf, v).map_err(|e| format!("response: {e}"))?;
    if buf.has_remaining() {
        return Err(format!("{} bytes after the response", buf.remaining()));
    }
    // Every response names its codes `error_code`; reading them from the debug form covers
    // nested ones without a walker per message.
    let text = format!("{resp:?}");
    Ok(text
        .match_indices("error_code: ")
        .filter_map(|(i, m)| {
            let rest = &text[i + m.len()..];
            let end = rest
                .find(|c: char| c != '-' && !c.is_ascii_digit())
                .unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
        .collect())
}

fn response_codes(api: ApiKey, v: i16, frame: Bytes) -> Result<Vec<i16>, String> {
    match api {
        ApiKey::Produce => codes_of::<ProduceResponse>(frame, api, v),
        ApiKey::Fetch => codes_of::<FetchResponse>(frame, api, v),
        ApiKey::ListOffsets => codes_of::<ListOffsetsResponse>(frame, api, v),
        ApiKey::Metadata => codes_of::<MetadataResponse>(frame, api, v),
        ApiKey::ApiVersions => codes_of::<ApiVersionsResponse>(frame, api, v),
        ApiKey::CreateTopics => codes_of::<CreateTopicsResponse>(frame, api, v),
        ApiKey::DeleteTopics => codes_of::<DeleteTopicsResponse>(frame, api, v),
        ApiKey::InitProducerId => codes_of::<InitProducerIdResponse>(frame, api, v),
        ApiKey::FindCoordinator => codes_of::<FindCoordinatorResponse>(frame, api, v),
        ApiKey::JoinGroup => codes_of::<JoinGroupResponse>(frame, api, v),
        ApiKey::SyncGroup => codes_of::<SyncGroupResponse>(frame, api, v),
        ApiKey::Heartbeat => codes_of::<HeartbeatResponse>(frame, api, v),
        ApiKey::LeaveGroup => codes_of::<LeaveGroupResponse>(frame, api, v),
        ApiKey::OffsetCommit => codes_of::<OffsetCommitResponse>(frame, api, v),
        ApiKey::OffsetFetch => codes_of::<OffsetFetchResponse>(frame, api, v),
        ApiKey::AddPartitionsToTxn => codes_of::<AddPartitionsToTxnResponse>(frame, api, v),
        ApiKey::AddOffsetsToTxn => codes_of::<AddOffsetsToTxnResponse>(frame, api, v),
        ApiKey::EndTxn => codes_of::<EndTxnResponse>(frame, api, v),
        ApiKey::TxnOffsetCommit => codes_of::<TxnOffsetCommitResponse>(frame, api, v),
        ApiKey::OffsetForLeaderEpoch => codes_of::<OffsetForLeaderEpochResponse>(frame, api, v),
        other => Err(format!("no response decoder for {other:?}: add one")),
    }
}

/// The error codes each API can return, per Kafka's protocol documentation (0 is always fine).
fn allowed(api: ApiKey) -> Vec<ResponseError> {
    const GROUP: &[ResponseError] = &[
        CoordinatorNotAvailable,
        CoordinatorLoadInProgress,
        NotCoordinator,
        InvalidGroupId,
        GroupAuthorizationFailed,
        UnknownMemberId,
        IllegalGeneration,
        RebalanceInProgress,
        FencedInstanceId,
    ];
    const TXN: &[ResponseError] = &[
        CoordinatorNotAvailable,
        CoordinatorLoadInProgress,
        NotCoordinator,
        InvalidTxnState,
        InvalidProducerIdMapping,
        InvalidProducerEpoch,
        ProducerFenced,
        ConcurrentTransactions,
        TransactionalIdAuthorizationFailed,
        UnknownProducerId,
    ];
    let mut v: Vec<ResponseError> = match api {
        ApiKey::Produce => vec![
            UnknownTopicOrPartition,
            NotLeaderOrFollower,
            MessageTooLarge,
            CorruptMessage,
            InvalidRecord,
            RecordListTooLarge,
            NotEnoughReplicas,
            NotEnoughReplicasAfterAppend,
            InvalidRequiredAcks,
            InvalidTimestamp,
            InvalidTopicException,
            TopicAuthorizationFailed,
            RequestTimedOut,
            KafkaStorageError,
            UnsupportedForMessageFormat,
        ],
        ApiKey::Fetch => vec![
            OffsetOutOfRange,
            UnknownTopicOrPartition,
            NotLeaderOrFollower,
            ReplicaNotAvailable,
            FencedLeaderEpoch,
            UnknownLeaderEpoch,
            OffsetMovedToTieredStorage,
            FetchSessionIdNotFound,
            InvalidFetchSessionEpoch,
            UnknownTopicId,
            FetchSessionTopicIdError,
            TopicAuthorizationFailed,
            KafkaStorageError,
            UnsupportedCompressionType,
        ],
        ApiKey::ListOffsets => vec![
            UnknownTopicOrPartition,
            NotLeaderOrFollower,
            FencedLeaderEpoch,
            UnknownLeaderEpoch,
            OffsetNotAvailable,
            LeaderNotAvailable,
            TopicAuthorizationFailed,
            KafkaStorageError,
        ],
        ApiKey::Metadata => vec![
            UnknownTopicOrPartition,
            LeaderNotAvailable,
            InvalidTopicException,
            TopicAuthorizationFailed,
            UnknownTopicId,
            InvalidReplicationFactor,
            ListenerNotFound,
        ],
        ApiKey::ApiVersions => vec![UnsupportedVersion],
        ApiKey::CreateTopics => vec![
            TopicAlreadyExists,
            InvalidTopicException,
            InvalidPartitions,
            InvalidReplicationFactor,
            InvalidReplicaAssignment,
            InvalidConfig,
            InvalidRequest,
            NotController,
            PolicyViolation,
            RequestTimedOut,
            ThrottlingQuotaExceeded,
            TopicAuthorizationFailed,
            ClusterAuthorizationFailed,
        ],
        ApiKey::DeleteTopics => vec![
            UnknownTopicOrPartition,
            UnknownTopicId,
            InvalidTopicException,
            InvalidRequest,
            NotController,
            RequestTimedOut,
            TopicDeletionDisabled,
            ThrottlingQuotaExceeded,
            TopicAuthorizationFailed,
        ],
        ApiKey::InitProducerId => [TXN, &[InvalidTransactionTimeout, InvalidRequest]].concat(),
        ApiKey::FindCoordinator => vec![
            CoordinatorNotAvailable,
            CoordinatorLoadInProgress,
            NotCoordinator,
            InvalidGroupId,
            InvalidRequest,
            GroupAuthorizationFailed,
            TransactionalIdAuthorizationFailed,
        ],
        ApiKey::JoinGroup => [
            GROUP,
            &[
                InvalidSessionTimeout,
                InconsistentGroupProtocol,
                MemberIdRequired,
                GroupMaxSizeReached,
            ],
        ]
        .concat(),
        ApiKey::SyncGroup => [GROUP, &[InconsistentGroupProtocol]].concat(),
        ApiKey::Heartbeat | ApiKey::LeaveGroup => GROUP.to_vec(),
        ApiKey::OffsetCommit => [
            GROUP,
            &[
                UnknownTopicOrPartition,
                OffsetMetadataTooLarge,
                InvalidCommitOffsetSize,
                TopicAuthorizationFailed,
                GroupIdNotFound,
                StaleMemberEpoch,
                FencedMemberEpoch,
            ],
        ]
        .concat(),
        ApiKey::OffsetFetch => [
            GROUP,
            &[
                UnknownTopicOrPartition,
                TopicAuthorizationFailed,
                UnstableOffsetCommit,
                GroupIdNotFound,
                StaleMemberEpoch,
            ],
        ]
        .concat(),
        ApiKey::AddPartitionsToTxn => [
            TXN,
            &[
                UnknownTopicOrPartition,
                TopicAuthorizationFailed,
                OperationNotAttempted,
            ],
        ]
        .concat(),
        ApiKey::AddOffsetsToTxn => [TXN, &[InvalidGroupId, GroupAuthorizationFailed]].concat(),
        ApiKey::EndTxn => TXN.to_vec(),
        ApiKey::TxnOffsetCommit => [
            TXN,
            GROUP,
            &[
                UnknownTopicOrPartition,
                OffsetMetadataTooLarge,
                InvalidCommitOffsetSize,
                TopicAuthorizationFailed,
            ],
        ]
        .concat(),
        ApiKey::OffsetForLeaderEpoch => vec![
            UnknownTopicOrPartition,
            NotLeaderOrFollower,
            FencedLeaderEpoch,
            UnknownLeaderEpoch,
            ReplicaNotAvailable,
            TopicAuthorizationFailed,
            KafkaStorageError,
        ],
        _ => Vec::new(),
    };
    v.push(UnknownServerError);
    v
}

/// What some variants must answer beyond well-formedness: an all-topics Metadata lists the
/// topic.
fn check_semantics(api: ApiKey, v: i16, label: &str, frame: Bytes) -> Result<(), String> {
    if api == ApiKey::Metadata && label.starts_with("null topics") {
        let (_, resp) = decode_response::<MetadataResponse>(frame, api, v)?;
        if !resp
            .topics
            .iter()
            .any(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == TOPIC))
        {
            return Err(format!("all-topics answer lacks {TOPIC}"));
        }
    }
    Ok(())
}

/// The first version of `api` that can carry `code`, for codes added after an API's first
/// version (older clients would not know them).
fn carried_since(api: ApiKey, code: ResponseError) -> i16 {
    match (api, code) {
        (ApiKey::JoinGroup, MemberIdRequired) => 4,
        (ApiKey::JoinGroup, FencedInstanceId) => 5,
        (ApiKey::SyncGroup | ApiKey::Heartbeat | ApiKey::LeaveGroup, FencedInstanceId) => 3,
        (ApiKey::OffsetCommit, FencedInstanceId) => 7,
        (ApiKey::TxnOffsetCommit, FencedInstanceId) => 3,
        (ApiKey::OffsetFetch, UnstableOffsetCommit) => 7,
        (ApiKey::Metadata, UnknownTopicId) => 10,
        (ApiKey::DeleteTopics, UnknownTopicId) => 6,
        (ApiKey::Fetch, UnknownTopicId | FetchSessionTopicIdError) => 13,
        (ApiKey::Fetch, FencedLeaderEpoch | UnknownLeaderEpoch) => 9,
        (ApiKey::Fetch, FetchSessionIdNotFound | InvalidFetchSessionEpoch) => 7,
        (ApiKey::ListOffsets, FencedLeaderEpoch | UnknownLeaderEpoch) => 4,
        (ApiKey::CreateTopics, ThrottlingQuotaExceeded) => 6,
        (ApiKey::DeleteTopics, ThrottlingQuotaExceeded) => 5,
        (ApiKey::InitProducerId, ProducerFenced) => 4,
        (ApiKey::AddPartitionsToTxn | ApiKey::AddOffsetsToTxn | ApiKey::EndTxn, ProducerFenced) => {
            2
        }
        (ApiKey::TxnOffsetCommit, ProducerFenced) => 3,
        _ => 0,
    }
}

async fn roundtrip(s: &mut Stream, frame: &Bytes) -> Result<Bytes, String> {
    write_frame(s, frame)
        .await
        .map_err(|e| format!("write: {e}"))?;
    match tokio::time::timeout(Duration::from_secs(10), read_frame(s, 64 << 20)).await {
        Err(_) => Err("no response in 10 s".into()),
        Ok(Err(e)) => Err(format!("connection closed: {e}")),
        Ok(Ok(f)) => Ok(f),
    }
}

/// The connection still answers a request after the variants.
async fn still_usable(s: &mut Stream) -> Result<(), String> {
    let ping = encode_request(
        ApiKey::ApiVersions,
        0,
        7,
        "weir-conformance",
        &ApiVersionsRequest::default(),
    )
    .unwrap();
    let resp = roundtrip(s, &ping).await?;
    decode_response::<ApiVersionsResponse>(resp, ApiKey::ApiVersions, 0).map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_advertised_version_answers_without_panics() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));

    let dir = tempfile::tempdir().unwrap();
    let config = BrokerConfig {
        group_initial_rebalance_delay_ms: 0,
        ..BrokerConfig::default()
    };
    let (_broker, addr) = Broker::listen(
        "127.0.0.1:0",
        config,
        Disk::real(dir.path()),
        Clock::starting_at(1_700_000_000_000),
        weir_seams::rng::derive(3, "conformance"),
    )
    .await
    .unwrap();
    let addr = addr.to_string();
    let cluster = common::cluster_with_topic(&addr, TOPIC, 2).await;
    common::produce_all(&cluster, TOPIC, (0..3).map(|i| format!("r{i}"))).await;

    let mut s = Net::Tokio.connect(&addr).await.unwrap();
    let meta = encode_request(
        ApiKey::Metadata,
        12,
        7,
        "weir-conformance",
        &MetadataRequest::default().with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(tn(TOPIC))),
        ])),
    )
    .unwrap();
    let meta = roundtrip(&mut s, &meta).await.unwrap();
    let (_, meta) = decode_response::<MetadataResponse>(meta, ApiKey::Metadata, 12).unwrap();
    let record = RecordToEncode {
        key: None,
        value: Some(Bytes::from_static(b"conformance")),
        headers: vec![],
        timestamp: 1_700_000_000_000,
    };
    let ctx = Ctx {
        topic_id: meta.topics[0].topic_id,
        records: encode_batch(&[record], &ProducerBatch::plain(Codec::None)).unwrap(),
    };

    let versions = encode_request(
        ApiKey::ApiVersions,
        3,
        7,
        "weir-conformance",
        &ApiVersionsRequest::default(),
    )
    .unwrap();
    let versions = roundtrip(&mut s, &versions).await.unwrap();
    let (_, versions) =
        decode_response::<ApiVersionsResponse>(versions, ApiKey::ApiVersions, 3).unwrap();

    let mut pairs = 0;
    let mut requests = 0;
    let mut skipped = 0;
    let mut failures = Vec::new();
    for advertised in &versions.api_keys {
        let api = ApiKey::try_from(advertised.api_key).expect("advertised key is a Kafka API");
        for v in advertised.min_version..=advertised.max_version {
            let ok: Vec<i16> = allowed(api)
                .into_iter()
                .filter(|e| carried_since(api, *e) <= v)
                .map(|e| e.code())
                .collect();
            pairs += 1;
            let b = variants(api, v, &ctx);
            skipped += b.skipped;
            let mut conn = Net::Tokio.connect(&addr).await.unwrap();
            for variant in b.out {
                requests += 1;
                let what = format!("{api:?} v{v} {}", variant.label);
                if !variant.answered {
                    write_frame(&mut conn, &variant.frame).await.unwrap();
                    continue;
                }
                let answer = roundtrip(&mut conn, &variant.frame).await;
                if let Ok(f) = &answer
                    && let Err(e) = check_semantics(api, v, &variant.label, f.clone())
                {
                    failures.push(format!("{what}: {e}"));
                }
                match answer.and_then(|f| response_codes(api, v, f)) {
                    Ok(codes) => {
                        let bad: Vec<_> = codes
                            .iter()
                            .filter(|c| **c != 0 && !ok.contains(c))
                            .collect();
                        if !bad.is_empty() {
                            failures.push(format!("{what}: unexpected error codes {bad:?}"));
                        }
                    }
                    Err(e) => {
                        failures.push(format!("{what}: {e}"));
                        conn = Net::Tokio.connect(&addr).await.unwrap();
                    }
                }
            }
            if let Err(e) = still_usable(&mut conn).await {
                failures.push(format!("{api:?} v{v}: connection unusable afterwards: {e}"));
            }
        }
    }
    // An ApiVersions newer than the broker's is answered at v0 with UNSUPPORTED_VERSION.
    let newest = versions
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::ApiVersions as i16)
        .map(|k| k.max_version)
        .unwrap();
    let mut newer = BytesMut::from(
        &encode_request(
            ApiKey::ApiVersions,
            newest,
            7,
            "weir-conformance",
            &ApiVersionsRequest::default(),
        )
        .unwrap()[..],
    );
    newer[2..4].copy_from_slice(&(newest + 1).to_be_bytes());
    let answer = roundtrip(&mut s, &newer.freeze()).await.unwrap();
    let (_, answer) =
        decode_response::<ApiVersionsResponse>(answer, ApiKey::ApiVersions, 0).unwrap();
    assert_eq!(answer.error_code, UnsupportedVersion.code());
    assert_eq!(answer.api_keys, versions.api_keys);

    let panics = PANICS.load(Ordering::SeqCst);
    println!(
        "conformance: {pairs} (api, version) pairs, {requests} requests \
         ({skipped} variants do not apply at their version), {} failures, {panics} panics",
        failures.len()
    );
    for f in &failures {
        println!("  FAIL {f}");
    }
    assert!(pairs > 0, "the broker advertised no APIs");
    assert!(failures.is_empty(), "{} failures", failures.len());
    assert_eq!(panics, 0, "tasks panicked while serving valid requests");
}
