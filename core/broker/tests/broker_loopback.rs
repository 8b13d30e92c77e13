//! The broker and client together on real loopback sockets.

mod common;

use bytes::Bytes;
use std::time::Duration;
use weir_broker::{Broker, BrokerConfig};
use weir_client::{
    Admin, ClientConfig, ClientError, Cluster, Consumer, ConsumerConfig, NewTopic, Producer,
    ProducerConfig, Record,
};
use weir_seams::clock::Clock;
use weir_seams::disk::Disk;
use weir_seams::net::Net;
use weir_seams::rng;
use weir_wire::record::Codec;

async fn start(dir: &std::path::Path) -> (Broker, String) {
    let (broker, addr) = Broker::listen(
        "127.0.0.1:0",
        BrokerConfig::default(),
        Disk::real(dir),
        Clock::starting_at(1_700_000_000_000),
        rng::derive(1, "broker"),
    )
    .await
    .unwrap();
    (broker, addr.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_consume_and_admin_over_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, addr) = start(dir.path()).await;
    let cluster = Cluster::new(ClientConfig::new([addr.clone()], Net::Tokio));
    let admin = Admin::new(cluster.clone());
    admin
        .create_topic(&NewTopic::new("orders", 3, 1).config("retention.ms", "3600000"))
        .await
        .unwrap();
    let again = admin
        .create_topic(&NewTopic::new("orders", 3, 1))
        .await
        .unwrap_err();
    assert_eq!(
        again.code(),
        Some(kafka_protocol::error::ResponseError::TopicAlreadyExists)
    );
    let too_many = admin
        .create_topic(&NewTopic::new("rf3", 1, 3))
        .await
        .unwrap_err();
    assert_eq!(
        too_many.code(),
        Some(kafka_protocol::error::ResponseError::InvalidReplicationFactor)
    );
    let bad_config = admin
        .create_topic(&NewTopic::new("bad", 1, 1).config("retention.ms", "soon"))
        .await
        .unwrap_err();
    assert_eq!(
        bad_config.code(),
        Some(kafka_protocol::error::ResponseError::InvalidConfig)
    );
    let bad_name = admin
        .create_topic(&NewTopic::new("a/b", 1, 1))
        .await
        .unwrap_err();
    assert_eq!(
        bad_name.code(),
        Some(kafka_protocol::error::ResponseError::InvalidTopicException)
    );

    for codec in Codec::ALL {
        let clock = Clock::starting_at(1_700_000_000_000);
        let producer = Producer::new(
            cluster.clone(),
            ProducerConfig {
                compression: codec,
                ..Default::default()
            },
            clock,
        )
        .await
        .unwrap();
        let mut deliveries = Vec::new();
        for i in 0..100 {
            let r = Record::new(
                "orders",
                Some(Bytes::from(format!("k{}", i % 10))),
                Bytes::from(format!("{codec:?}-{i}")),
            );
            deliveries.push(producer.send(r).await.unwrap());
        }
        producer.flush().await;
        for d in deliveries {
            let m = d.wait().await.unwrap();
            assert!(m.offset >= 0);
        }
        producer.close().await;
    }

    let mut consumer = Consumer::new(cluster.clone(), ConsumerConfig::default());
    consumer.assign((0..3).map(|p| ("orders".to_string(), p)));
    let mut seen = Vec::new();
    while seen.len() < 500 {
        let batch = consumer.poll(Duration::from_secs(2)).await.unwrap();
        assert!(!batch.is_empty(), "data arrives before the poll times out");
        seen.extend(batch);
    }
    let mut values: Vec<String> = seen
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
        .collect();
    values.sort();
    values.dedup();
    assert_eq!(values.len(), 500, "every record exactly once");
    // Keys land where the Java client would put them.
    for r in &seen {
        let key = r.key.as_ref().unwrap();
        assert_eq!(r.partition, weir_client::partition_for_key(key, 3));
    }
    let tp = ("orders".to_string(), 0);
    assert_eq!(consumer.list_offset(&tp, -2).await.unwrap(), 0);
    let end = consumer.list_offset(&tp, -1).await.unwrap();
    assert_eq!(
        end as usize,
        seen.iter().filter(|r| r.partition == 0).count()
    );

    let listed = admin.list_topics().await.unwrap();
    assert_eq!(
        listed.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        vec!["orders"]
    );
    admin.delete_topic("orders").await.unwrap();
    assert!(admin.list_topics().await.unwrap().is_empty());
    let gone = admin.delete_topic("orders").await.unwrap_err();
    assert!(matches!(gone, ClientError::Kafka { .. }));
}

/// Polls a test makes at most before it gives up on its records.
const POLLS_MAX: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_acknowledged_records_and_producer_state() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, addr) = start(dir.path()).await;
    let cluster = common::cluster_with_topic(&addr, "t", 1).await;
    common::produce_all(&cluster, "t", (0..20).map(|i| format!("v{i}"))).await;
    broker.shutdown().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (_b2, addr2) = start(dir.path()).await;
    let cluster2 = Cluster::new(ClientConfig::new([addr2], Net::Tokio));
    let mut consumer = Consumer::new(cluster2, ConsumerConfig::default());
    consumer.assign([("t".to_string(), 0)]);
    let mut got = Vec::new();
    // Until the restarted broker has its partitions back it answers NOT_LEADER_OR_FOLLOWER,
    // which a consumer loop retries.
    for _ in 0..POLLS_MAX {
        match consumer.poll(Duration::from_secs(2)).await {
            Ok(records) => got.extend(records),
            Err(e) if e.is_retriable() => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("poll after the restart: {e}"),
        }
        if got.len() >= 20 {
            break;
        }
    }
    assert_eq!(got.len(), 20);
    assert_eq!(got[19].value.as_deref(), Some(&b"v19"[..]));
}

/// ListOffsets for a timestamp after every record answers offset, timestamp and leader epoch
/// -1, as Kafka does; confluent-kafka 2.16 read back leader epoch 0 (the client matrix).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_after_the_last_timestamp_has_no_leader_epoch() {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::{ApiKey, BrokerId, ListOffsetsRequest, ListOffsetsResponse};

    let dir = tempfile::tempdir().unwrap();
    let (_broker, addr) = start(dir.path()).await;
    let cluster = Cluster::new(ClientConfig::new([addr.clone()], Net::Tokio));
    Admin::new(cluster.clone())
        .create_topic(&NewTopic::new("ts", 1, 1))
        .await
        .unwrap();
    let clock = Clock::starting_at(1_700_000_000_000);
    let producer = Producer::new(cluster, ProducerConfig::default(), clock)
        .await
        .unwrap();
    let sent = producer
        .send(Record::new("ts", None::<Bytes>, Bytes::from_static(b"v")))
        .await
        .unwrap();
    producer.flush().await;
    sent.wait().await.unwrap();
    producer.close().await;

    let conn =
        weir_client::Connection::connect(Net::Tokio, &addr, weir_client::ConnConfig::default())
            .await
            .unwrap();
    // (timestamp, offset, leader epoch) for the first record's timestamp and for one after all.
    for (timestamp, offset, epoch) in [(0, 0, 0), (i64::MAX / 2, -1, -1)] {
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(kafka_protocol::messages::TopicName(
                        kafka_protocol::protocol::StrBytes::from_static_str("ts"),
                    ))
                    .with_partitions(vec![
                        ListOffsetsPartition::default().with_timestamp(timestamp),
                    ]),
            ]);
        let resp: ListOffsetsResponse = conn.send(ApiKey::ListOffsets, 7, &req).await.unwrap();
        let p = &resp.topics[0].partitions[0];
        assert_eq!(
            (p.error_code, p.offset, p.leader_epoch),
            (0, offset, epoch),
            "timestamp {timestamp}"
        );
        if offset == -1 {
            assert_eq!(p.timestamp, -1);
        }
    }
}
