use super::*;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use proptest::prelude::*;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn frame<T: Encodable>(api: ApiKey, version: i16, msg: &T) -> Bytes {
    encode_request(api, version, 42, "test-client", msg).unwrap()
}

/// Builds a request frame at a given version.
type Sample = Box<dyn Fn(i16) -> Bytes>;

/// One message of every request type the guard knows, with every array populated.
fn samples() -> Vec<(ApiKey, Sample)> {
    let produce = |v: i16| {
        let part = |i| {
            produce_request::PartitionProduceData::default()
                .with_index(i)
                .with_records(Some(Bytes::from_static(b"0123456789")))
        };
        let topic = produce_request::TopicProduceData::default()
            .with_name(if v <= 12 {
                TopicName(s("orders"))
            } else {
                TopicName(s(""))
            })
            .with_partition_data(vec![part(0), part(1)]);
        frame(
            ApiKey::Produce,
            v,
            &ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(3000)
                .with_topic_data(vec![topic.clone(), topic]),
        )
    };
    let fetch = |v: i16| {
        let p = |i| {
            fetch_request::FetchPartition::default()
                .with_partition(i)
                .with_fetch_offset(10)
                .with_partition_max_bytes(1 << 20)
        };
        let t = fetch_request::FetchTopic::default()
            .with_topic(if v <= 12 {
                TopicName(s("orders"))
            } else {
                TopicName(s(""))
            })
            .with_partitions(vec![p(0), p(1)]);
        let mut req = FetchRequest::default()
            .with_max_wait_ms(500)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![t.clone(), t]);
        if v >= 7 {
            req = req.with_forgotten_topics_data(vec![
                fetch_request::ForgottenTopic::default()
                    .with_topic(if v <= 12 {
                        TopicName(s("old"))
                    } else {
                        TopicName(s(""))
                    })
                    .with_partitions(vec![1, 2, 3]),
            ]);
        }
        if v >= 12 {
            req = req.with_cluster_id(Some(s("cluster")));
        }
        frame(ApiKey::Fetch, v, &req)
    };
    let list_offsets = |v: i16| {
        let p = |i| {
            list_offsets_request::ListOffsetsPartition::default()
                .with_partition_index(i)
                .with_timestamp(-2)
        };
        let t = list_offsets_request::ListOffsetsTopic::default()
            .with_name(TopicName(s("orders")))
            .with_partitions(vec![p(0), p(1)]);
        frame(
            ApiKey::ListOffsets,
            v,
            &ListOffsetsRequest::default().with_topics(vec![t.clone(), t]),
        )
    };
    let metadata = |v: i16| {
        let t = metadata_request::MetadataRequestTopic::default()
            .with_name(Some(TopicName(s("orders"))));
        frame(
            ApiKey::Metadata,
            v,
            &MetadataRequest::default().with_topics(Some(vec![t.clone(), t])),
        )
    };
    let api_versions = |v: i16| {
        let mut req = ApiVersionsRequest::default();
        if v >= 3 {
            req = req
                .with_client_software_name(s("weir"))
                .with_client_software_version(s("1"));
        }
        frame(ApiKey::ApiVersions, v, &req)
    };
    let create = |v: i16| {
        let a = create_topics_request::CreatableReplicaAssignment::default()
            .with_partition_index(0)
            .with_broker_ids(vec![BrokerId(1), BrokerId(2)]);
        let c = create_topics_request::CreatableTopicConfig::default()
            .with_name(s("retention.ms"))
            .with_value(Some(s("1000")));
        let t = create_topics_request::CreatableTopic::default()
            .with_name(TopicName(s("orders")))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
            .with_assignments(vec![a.clone(), a])
            .with_configs(vec![c.clone(), c]);
        frame(
            ApiKey::CreateTopics,
            v,
            &CreateTopicsRequest::default()
                .with_topics(vec![t.clone(), t])
                .with_timeout_ms(1000),
        )
    };
    let delete = |v: i16| {
        let req = if v >= 6 {
            let t = delete_topics_request::DeleteTopicState::default()
                .with_name(Some(TopicName(s("orders"))));
            DeleteTopicsRequest::default().with_topics(vec![t.clone(), t])
        } else {
            DeleteTopicsRequest::default()
                .with_topic_names(vec![TopicName(s("a")), TopicName(s("b"))])
        };
        frame(ApiKey::DeleteTopics, v, &req.with_timeout_ms(1000))
    };
    let init = |v: i16| {
        frame(
            ApiKey::InitProducerId,
            v,
            &InitProducerIdRequest::default().with_transaction_timeout_ms(60_000),
        )
    };
    vec![
        (ApiKey::Produce, Box::new(produce)),
        (ApiKey::Fetch, Box::new(fetch)),
        (ApiKey::ListOffsets, Box::new(list_offsets)),
        (ApiKey::Metadata, Box::new(metadata)),
        (ApiKey::ApiVersions, Box::new(api_versions)),
        (ApiKey::CreateTopics, Box::new(create)),
        (ApiKey::DeleteTopics, Box::new(delete)),
        (ApiKey::InitProducerId, Box::new(init)),
    ]
}

#[test]
fn guard_accepts_every_valid_version_of_every_request() {
    for (api, make) in samples() {
        let schema = schemas::schema(api).unwrap();
        for v in schema.min..=schema.max {
            let raw = parse_request(make(v)).unwrap_or_else(|e| panic!("{api:?} v{v}: {e}"));
            assert_eq!(raw.header.correlation_id, 42);
            let decoded = match api {
                ApiKey::Produce => raw.decode::<ProduceRequest>().map(|_| ()),
                ApiKey::Fetch => raw.decode::<FetchRequest>().map(|_| ()),
                ApiKey::ListOffsets => raw.decode::<ListOffsetsRequest>().map(|_| ()),
                ApiKey::Metadata => raw.decode::<MetadataRequest>().map(|_| ()),
                ApiKey::ApiVersions => raw.decode::<ApiVersionsRequest>().map(|_| ()),
                ApiKey::CreateTopics => raw.decode::<CreateTopicsRequest>().map(|_| ()),
                ApiKey::DeleteTopics => raw.decode::<DeleteTopicsRequest>().map(|_| ()),
                ApiKey::InitProducerId => raw.decode::<InitProducerIdRequest>().map(|_| ()),
                _ => unreachable!(),
            };
            decoded.unwrap_or_else(|e| panic!("{api:?} v{v}: {e}"));
        }
    }
}

/// Offset of the first array count in each sample body, which the test below inflates.
fn first_count_offset(api: ApiKey, v: i16, body: &[u8]) -> Option<usize> {
    let flexible = v >= schemas::schema(api).unwrap().flexible_from;
    match api {
        ApiKey::Metadata => Some(0),
        ApiKey::CreateTopics if !flexible => Some(0),
        ApiKey::Produce if !flexible => {
            // transactional_id (null: 2 bytes), acks (2), timeout (4), then the topic count.
            let _ = body;
            Some(8)
        }
        _ => None,
    }
}

#[test]
fn huge_array_counts_are_refused_before_decoding() {
    for (api, make) in samples() {
        let schema = schemas::schema(api).unwrap();
        for v in schema.min..=schema.max {
            let frame = make(v);
            let header_len = frame.len() - parse_request(frame.clone()).unwrap().body.len();
            let Some(at) = first_count_offset(api, v, &frame[header_len..]) else {
                continue;
            };
            let mut evil = frame.to_vec();
            let pos = header_len + at;
            let flexible = v >= schema.flexible_from;
            if flexible {
                // A 5-byte varint claiming ~4 billion elements, then nothing else.
                evil.truncate(pos);
                evil.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
            } else {
                evil[pos..pos + 4].copy_from_slice(&i32::MAX.to_be_bytes());
            }
            let err = parse_request(Bytes::from(evil)).unwrap_err();
            assert!(
                matches!(err, RequestError::Body { .. }),
                "{api:?} v{v}: {err}"
            );
        }
    }
}

#[test]
fn trailing_bytes_and_short_frames_are_refused() {
    let mut f = samples()[3].1(12).to_vec();
    f.push(0);
    assert!(parse_request(Bytes::from(f)).is_err());
    assert!(matches!(
        parse_request(Bytes::from_static(&[0, 3, 0])),
        Err(RequestError::TooShort(3))
    ));
    assert!(matches!(
        parse_request(Bytes::from_static(&[0x7f, 0x7f, 0, 0, 0, 0, 0, 1])),
        Err(RequestError::UnknownApi(_))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Truncating or flipping bytes of valid requests never panics the guard or the decoder.
    #[test]
    fn mangled_requests_never_panic(which in 0usize..8, version_pick in 0i16..20, cut in 0usize..400, flips in proptest::collection::vec((0usize..400, any::<u8>()), 0..4)) {
        let samples = samples();
        let (api, make) = &samples[which];
        let schema = schemas::schema(*api).unwrap();
        let v = schema.min + version_pick % (schema.max - schema.min + 1);
        let mut bytes = make(v).to_vec();
        for (pos, x) in flips {
            if !bytes.is_empty() {
                let p = pos % bytes.len();
                bytes[p] ^= x;
            }
        }
        bytes.truncate(cut.min(bytes.len()));
        if let Ok(raw) = parse_request(Bytes::from(bytes)) {
            let _ = match raw.api {
                ApiKey::Produce => raw.decode::<ProduceRequest>().map(|_| ()),
                ApiKey::Fetch => raw.decode::<FetchRequest>().map(|_| ()),
                ApiKey::Metadata => raw.decode::<MetadataRequest>().map(|_| ()),
                _ => Ok(()),
            };
        }
    }
}

#[test]
fn librdkafka_padded_null_topics_are_read_as_sent() {
    for v in 9..=13 {
        let req = MetadataRequest::default()
            .with_topics(None)
            .with_allow_auto_topic_creation(false)
            .with_include_topic_authorized_operations(true);
        let whole = frame(ApiKey::Metadata, v, &req);
        let mut body = BytesMut::new();
        req.encode(&mut body, v).unwrap();
        // librdkafka leaves the null array's count in the four bytes it reserved for it.
        let header = whole.len() - body.len();
        let mut padded = BytesMut::from(&whole[..header]);
        padded.extend_from_slice(&[0, 0, 0]);
        padded.extend_from_slice(&body);
        let raw = parse_request(padded.freeze()).unwrap();
        assert_eq!(raw.decode::<MetadataRequest>().unwrap(), req, "v{v}");
    }
    // Only the null array's padding is forgiven: other trailing bytes are still refused.
    let mut f = frame(
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(None),
    )
    .to_vec();
    f.extend_from_slice(&[0, 0, 0]);
    assert!(parse_request(Bytes::from(f)).is_err());
}
