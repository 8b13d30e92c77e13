//! Bad input gets a Kafka error code or a closed connection, never a panic or a huge
//! allocation, and earlier acknowledged data stays intact.

mod common;

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_broker::{Broker, BrokerConfig};
use weir_client::{Cluster, Consumer, ConsumerConfig};
use weir_seams::clock::Clock;
use weir_seams::disk::Disk;
use weir_seams::net::{Net, Stream};
use weir_wire::frame::{read_frame, write_frame};
use weir_wire::record::{Codec, ProducerBatch, RecordToEncode, encode_batch};
use weir_wire::{decode_response, encode_request};

const MAX_REQUEST: usize = 64 * 1024;

struct Fixture {
    addr: String,
    cluster: std::sync::Arc<Cluster>,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig {
        max_request_bytes: MAX_REQUEST,
        ..BrokerConfig::default()
    };
    config.topic_defaults.max_message_bytes = 8 * 1024;
    let (_broker, bound) = Broker::listen(
        "127.0.0.1:0",
        config,
        Disk::real(dir.path()),
        Clock::starting_at(0),
        weir_seams::rng::derive(0, "b"),
    )
    .await
    .unwrap();
    let addr = bound.to_string();
    let cluster = common::cluster_with_topic(&addr, "t", 2).await;
    common::produce_all(&cluster, "t", (0..10).map(|i| format!("acked-{i}"))).await;
    Fixture {
        addr,
        cluster,
        _dir: dir,
    }
}

impl Fixture {
    async fn raw(&self) -> Stream {
        Net::Tokio.connect(&self.addr).await.unwrap()
    }

    /// The acknowledged records are all still there, and the broker still serves.
    async fn assert_intact(&self) {
        let mut c = Consumer::new(self.cluster.clone(), ConsumerConfig::default());
        c.assign([("t".to_string(), 0)]);
        let mut got = Vec::new();
        while got.len() < 10 {
            let batch = c.poll(Duration::from_secs(2)).await.unwrap();
            assert!(!batch.is_empty());
            got.extend(batch);
        }
        let values: Vec<_> = got
            .iter()
            .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
            .collect();
        assert_eq!(
            values,
            (0..10).map(|i| format!("acked-{i}")).collect::<Vec<_>>()
        );
    }
}

/// A request frame as bytes, to be mangled.
fn request<T: Encodable>(api: ApiKey, v: i16, req: &T) -> Vec<u8> {
    encode_request(api, v, 1, "bad-input-test", req)
        .unwrap()
        .to_vec()
}

impl Fixture {
    /// Sends `frame` on a fresh connection and expects the broker to close it.
    async fn refused(&self, frame: &[u8]) {
        let mut s = self.raw().await;
        write_frame(&mut s, frame).await.unwrap();
        assert_closed(&mut s).await;
    }
}

/// Reads until the broker closes the connection; fails if it answers instead.
async fn assert_closed(s: &mut Stream) {
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("broker closes promptly");
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "expected the connection to close, got {n:?}"
    );
}

async fn roundtrip<T: Encodable, R: kafka_protocol::protocol::Decodable>(
    s: &mut Stream,
    api: ApiKey,
    v: i16,
    req: &T,
) -> R {
    let frame = encode_request(api, v, 7, "bad-input-test", req).unwrap();
    write_frame(s, &frame).await.unwrap();
    let resp = read_frame(s, 1 << 20).await.unwrap();
    decode_response::<R>(resp, api, v).unwrap().1
}

fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn produce(name: &str, partition: i32, records: Bytes, acks: i16) -> ProduceRequest {
    let p = PartitionProduceData::default()
        .with_index(partition)
        .with_records(Some(records));
    ProduceRequest::default()
        .with_transactional_id(None)
        .with_acks(acks)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(topic(name))
                .with_partition_data(vec![p]),
        ])
}

fn batch(value_len: usize) -> Vec<u8> {
    let r = RecordToEncode {
        key: None,
        value: Some(Bytes::from(vec![b'x'; value_len])),
        headers: vec![],
        timestamp: 1,
    };
    let meta = ProducerBatch::plain(Codec::None);
    encode_batch(&[r], &meta).unwrap().to_vec()
}

fn produce_error(resp: &ProduceResponse) -> i16 {
    resp.responses[0].partition_responses[0].error_code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_the_connection() {
    let f = fixture().await;
    // A Produce header followed by garbage.
    let mut s = f.raw().await;
    let mut body = BytesMut::new();
    body.extend_from_slice(&[0, 0, 0, 9, 0, 0, 0, 1, 0xff, 0xff]);
    body.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 1, 2, 3]);
    write_frame(&mut s, &body).await.unwrap();
    assert_closed(&mut s).await;
    // Shorter than a request header.
    let mut s = f.raw().await;
    write_frame(&mut s, &[0, 3]).await.unwrap();
    assert_closed(&mut s).await;
    // A size prefix that claims 2 GB.
    let mut s = f.raw().await;
    s.write_all(&i32::MAX.to_be_bytes()).await.unwrap();
    assert_closed(&mut s).await;
    // A negative size prefix.
    let mut s = f.raw().await;
    s.write_all(&(-1i32).to_be_bytes()).await.unwrap();
    assert_closed(&mut s).await;
    // One byte over max_request_bytes.
    let mut s = f.raw().await;
    s.write_all(&((MAX_REQUEST + 1) as i32).to_be_bytes())
        .await
        .unwrap();
    assert_closed(&mut s).await;
    // A frame that promises more bytes than it sends, then hangs up.
    let mut s = f.raw().await;
    s.write_all(&1000i32.to_be_bytes()).await.unwrap();
    s.write_all(&[0, 18, 0, 0]).await.unwrap();
    s.shutdown().await.unwrap();
    f.assert_intact().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn length_fields_larger_than_the_frame_are_refused() {
    let f = fixture().await;
    // Metadata v1 whose topic array claims i32::MAX entries in a 20-byte frame.
    let mut frame = request(
        ApiKey::Metadata,
        1,
        &MetadataRequest::default().with_topics(Some(vec![])),
    );
    let n = frame.len();
    frame[n - 4..].copy_from_slice(&i32::MAX.to_be_bytes());
    f.refused(&frame).await;
    // A produce whose records field claims more bytes than follow.
    let mut frame = request(
        ApiKey::Produce,
        8,
        &produce("t", 0, Bytes::from(batch(10)), -1),
    );
    let at = frame.len() - batch(10).len() - 4;
    frame[at..at + 4].copy_from_slice(&(1i32 << 30).to_be_bytes());
    f.refused(&frame).await;
    // A batch whose own length field runs past the records.
    let mut b = batch(10);
    b[8..12].copy_from_slice(&100_000i32.to_be_bytes());
    let mut s = f.raw().await;
    let resp: ProduceResponse = roundtrip(
        &mut s,
        ApiKey::Produce,
        8,
        &produce("t", 0, Bytes::from(b), -1),
    )
    .await;
    assert_ne!(produce_error(&resp), 0);
    f.assert_intact().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_topic_names_before_topic_ids_are_refused() {
    let f = fixture().await;
    let nameless = metadata_request::MetadataRequestTopic::default().with_name(None);
    for v in [1, 9] {
        f.refused(&request(
            ApiKey::Metadata,
            v,
            &MetadataRequest::default().with_topics(Some(vec![nameless.clone()])),
        ))
        .await;
    }
    f.assert_intact().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_apis_and_versions() {
    let f = fixture().await;
    // An API key Kafka does not define.
    f.refused(&[0x27, 0x0f, 0, 0, 0, 0, 0, 1, 0, 0]).await;
    // An API Kafka defines but this broker does not serve.
    f.refused(&request(
        ApiKey::DescribeAcls,
        1,
        &DescribeAclsRequest::default(),
    ))
    .await;
    // A version of Produce newer than served.
    let mut frame = request(
        ApiKey::Produce,
        9,
        &produce("t", 0, Bytes::from(batch(1)), -1),
    );
    frame[2..4].copy_from_slice(&99i16.to_be_bytes());
    f.refused(&frame).await;
    // ApiVersions newer than served: error 35 with the supported ranges, readable as v0.
    let mut s = f.raw().await;
    let mut frame = encode_request(
        ApiKey::ApiVersions,
        0,
        5,
        "x",
        &ApiVersionsRequest::default(),
    )
    .unwrap()
    .to_vec();
    frame[2..4].copy_from_slice(&77i16.to_be_bytes());
    write_frame(&mut s, &frame).await.unwrap();
    let resp = read_frame(&mut s, 1 << 20).await.unwrap();
    let (cid, r) = decode_response::<ApiVersionsResponse>(resp, ApiKey::ApiVersions, 0).unwrap();
    assert_eq!(cid, 5);
    assert_eq!(r.error_code, ResponseError::UnsupportedVersion.code());
    let av = r
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::ApiVersions as i16)
        .unwrap();
    assert_eq!((av.min_version, av.max_version), (0, 4));
    f.assert_intact().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_get_error_codes_and_leave_the_log_alone() {
    let f = fixture().await;
    let mut s = f.raw().await;
    let mut crc = batch(20);
    let last = crc.len() - 1;
    crc[last] ^= 0x01;
    let mut magic = batch(20);
    magic[16] = 1;
    let mut two = batch(5);
    two.extend(batch(5));
    // (what, topic, partition, records, acks, expected error)
    type Case = (&'static str, &'static str, i32, Vec<u8>, i16, ResponseError);
    let cases: Vec<Case> = vec![
        (
            "crc mismatch",
            "t",
            0,
            crc,
            -1,
            ResponseError::CorruptMessage,
        ),
        (
            "magic other than 2",
            "t",
            0,
            magic,
            -1,
            ResponseError::UnsupportedForMessageFormat,
        ),
        (
            "two batches in one partition",
            "t",
            0,
            two,
            -1,
            ResponseError::InvalidRecord,
        ),
        (
            "over max.message.bytes",
            "t",
            0,
            batch(9000),
            -1,
            ResponseError::MessageTooLarge,
        ),
        (
            "acks outside -1, 0, 1",
            "t",
            0,
            batch(5),
            7,
            ResponseError::InvalidRequiredAcks,
        ),
        (
            "unknown topic",
            "nope",
            0,
            batch(5),
            -1,
            ResponseError::UnknownTopicOrPartition,
        ),
        (
            "unknown partition",
            "t",
            7,
            batch(5),
            -1,
            ResponseError::UnknownTopicOrPartition,
        ),
        (
            "invalid topic name",
            "../etc",
            0,
            batch(5),
            -1,
            ResponseError::InvalidTopicException,
        ),
    ];
    for (what, t, partition, records, acks, want) in cases {
        let r: ProduceResponse = roundtrip(
            &mut s,
            ApiKey::Produce,
            8,
            &produce(t, partition, Bytes::from(records), acks),
        )
        .await;
        assert_eq!(produce_error(&r), want.code(), "{what}");
    }
    let md: MetadataResponse = roundtrip(
        &mut s,
        ApiKey::Metadata,
        9,
        &MetadataRequest::default().with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(topic("nope"))),
            metadata_request::MetadataRequestTopic::default().with_name(Some(topic("bad name!"))),
        ])),
    )
    .await;
    assert_eq!(
        md.topics[0].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
    assert_eq!(
        md.topics[1].error_code,
        ResponseError::InvalidTopicException.code()
    );
    // Fetch of an unknown partition and of an offset past the end.
    let fetch = |t: &str, p: i32, offset: i64| {
        let fp = fetch_request::FetchPartition::default()
            .with_partition(p)
            .with_fetch_offset(offset)
            .with_partition_max_bytes(1 << 20);
        FetchRequest::default()
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_topics(vec![
                fetch_request::FetchTopic::default()
                    .with_topic(topic(t))
                    .with_partitions(vec![fp]),
            ])
    };
    let r: FetchResponse = roundtrip(&mut s, ApiKey::Fetch, 11, &fetch("t", 9, 0)).await;
    assert_eq!(
        r.responses[0].partitions[0].error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
    let r: FetchResponse = roundtrip(&mut s, ApiKey::Fetch, 11, &fetch("t", 0, 1000)).await;
    assert_eq!(
        r.responses[0].partitions[0].error_code,
        ResponseError::OffsetOutOfRange.code()
    );
    assert_eq!(r.responses[0].partitions[0].high_watermark, 10);
    f.assert_intact().await;
}
