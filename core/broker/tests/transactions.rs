//! Transactions against one broker on loopback: read_committed hides aborted and open
//! transactions and stops at the last stable offset, a new instance fences the old one and
//! aborts what it left open, the coordinator aborts a transaction that outlives its timeout,
//! and offsets sent to a transaction are committed with it.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    ApiKey, GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use weir_broker::{Broker, BrokerConfig};
use weir_client::{
    Admin, ClientConfig, ClientError, Cluster, Consumer, ConsumerConfig, ConsumerRecord,
    GroupConfig, GroupConsumer, GroupMetadata, Isolation, NewTopic, Producer, ProducerConfig,
    Record,
};
use weir_seams::clock::Clock;
use weir_seams::disk::Disk;
use weir_seams::net::Net;
use weir_seams::rng;

const TOPIC: &str = "ledger";

async fn start(dir: &std::path::Path) -> (Broker, Arc<Cluster>) {
    let (broker, addr) = Broker::listen(
        "127.0.0.1:0",
        // Groups form at once, as the test's members join one at a time.
        BrokerConfig {
            group_initial_rebalance_delay_ms: 0,
            ..BrokerConfig::default()
        },
        Disk::real(dir),
        Clock::starting_at(1_700_000_000_000),
        rng::derive(3, "broker"),
    )
    .await
    .unwrap();
    let cluster = Cluster::new(ClientConfig::new([addr.to_string()], Net::Tokio));
    Admin::new(Arc::clone(&cluster))
        .create_topic(&NewTopic::new(TOPIC, 2, 1))
        .await
        .unwrap();
    (broker, cluster)
}

async fn transactional(cluster: &Arc<Cluster>, id: &str, timeout_ms: i32) -> Producer {
    let config = ProducerConfig {
        transactional_id: Some(id.into()),
        transaction_timeout_ms: timeout_ms,
        linger_ms: 0,
        ..ProducerConfig::default()
    };
    let p = Producer::new(Arc::clone(cluster), config, Clock::starting_at(0))
        .await
        .unwrap();
    p.init_transactions().await.unwrap();
    p
}

fn record(partition: i32, value: &str) -> Record {
    Record {
        partition: Some(partition),
        ..Record::new(TOPIC, None::<Bytes>, Bytes::from(value.to_string()))
    }
}

async fn send(p: &Producer, partition: i32, value: &str) {
    p.send(record(partition, value))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
}

fn reader(cluster: &Arc<Cluster>, isolation: Isolation) -> Consumer {
    let mut c = Consumer::new(
        Arc::clone(cluster),
        ConsumerConfig {
            isolation,
            fetch_max_wait_ms: 50,
            ..ConsumerConfig::default()
        },
    );
    c.assign([(TOPIC.to_string(), 0), (TOPIC.to_string(), 1)]);
    c
}

/// Values readable under `isolation`, per partition, up to each partition's latest offset.
async fn read_all(cluster: &Arc<Cluster>, isolation: Isolation) -> BTreeMap<i32, Vec<String>> {
    let mut c = reader(cluster, isolation);
    let mut ends = BTreeMap::new();
    for p in 0..2 {
        ends.insert(p, c.list_offset(&(TOPIC.to_string(), p), -1).await.unwrap());
    }
    let mut out: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    for _ in 0..100 {
        let done = ends.iter().all(|(p, end)| {
            c.position(&(TOPIC.to_string(), *p))
                .is_some_and(|at| at >= *end)
        });
        if done {
            break;
        }
        for r in c.poll(Duration::from_millis(100)).await.unwrap() {
            if r.offset < ends[&r.partition] {
                let v =
                    String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
                out.entry(r.partition).or_default().push(v);
            }
        }
    }
    out
}

fn values(read: &BTreeMap<i32, Vec<String>>) -> Vec<String> {
    read.values().flatten().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_hides_aborted_and_open_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, cluster) = start(dir.path()).await;
    let p = transactional(&cluster, "tx-a", 60_000).await;
    p.begin_transaction().unwrap();
    send(&p, 0, "c1").await;
    send(&p, 1, "c2").await;
    p.commit_transaction().await.unwrap();
    p.begin_transaction().unwrap();
    send(&p, 0, "a1").await;
    send(&p, 1, "a2").await;
    p.abort_transaction().await.unwrap();
    p.begin_transaction().unwrap();
    send(&p, 0, "open").await;
    let plain = Producer::new(
        Arc::clone(&cluster),
        ProducerConfig::default(),
        Clock::starting_at(0),
    )
    .await
    .unwrap();
    plain
        .send(record(0, "plain"))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();

    let everything = values(&read_all(&cluster, Isolation::ReadUncommitted).await);
    for v in ["c1", "c2", "a1", "a2", "open", "plain"] {
        assert!(everything.contains(&v.to_string()), "{v} in {everything:?}");
    }
    let committed = read_all(&cluster, Isolation::ReadCommitted).await;
    assert_eq!(
        committed.get(&0),
        Some(&vec!["c1".to_string()]),
        "p0 stops at the open transaction"
    );
    assert_eq!(
        committed.get(&1),
        Some(&vec!["c2".to_string()]),
        "the abort is hidden"
    );

    p.commit_transaction().await.unwrap();
    let committed = read_all(&cluster, Isolation::ReadCommitted).await;
    assert_eq!(
        committed.get(&0),
        Some(&vec![
            "c1".to_string(),
            "open".to_string(),
            "plain".to_string()
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_instance_fences_the_old_one_and_aborts_its_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, cluster) = start(dir.path()).await;
    let old = transactional(&cluster, "tx-z", 60_000).await;
    old.begin_transaction().unwrap();
    send(&old, 0, "zombie").await;
    let new = transactional(&cluster, "tx-z", 60_000).await;
    let refused = old.commit_transaction().await.unwrap_err();
    assert!(
        matches!(
            refused.code(),
            Some(ResponseError::ProducerFenced | ResponseError::InvalidProducerEpoch)
        ),
        "the old instance is fenced: {refused}"
    );
    new.begin_transaction().unwrap();
    send(&new, 1, "fresh").await;
    new.commit_transaction().await.unwrap();
    assert_eq!(
        values(&read_all(&cluster, Isolation::ReadCommitted).await),
        vec!["fresh".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_aborts_a_transaction_past_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, cluster) = start(dir.path()).await;
    let p = transactional(&cluster, "tx-slow", 1_000).await;
    p.begin_transaction().unwrap();
    send(&p, 0, "forgotten").await;
    let committed = reader(&cluster, Isolation::ReadCommitted);
    let uncommitted = reader(&cluster, Isolation::ReadUncommitted);
    let tp = (TOPIC.to_string(), 0);
    let mut stable = false;
    for _ in 0..100 {
        let lso = committed.list_offset(&tp, -1).await.unwrap();
        let hw = uncommitted.list_offset(&tp, -1).await.unwrap();
        if lso == hw {
            stable = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stable, "the timed-out transaction was ended");
    let late: Result<(), ClientError> = p.commit_transaction().await;
    assert!(late.is_err(), "its producer was fenced by the abort");
    assert!(values(&read_all(&cluster, Isolation::ReadCommitted).await).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_sent_to_a_transaction_commit_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, cluster) = start(dir.path()).await;
    let p = transactional(&cluster, "tx-ctp", 60_000).await;
    p.begin_transaction().unwrap();
    send(&p, 1, "out").await;
    let offsets = BTreeMap::from([((TOPIC.to_string(), 0), 42i64)]);
    p.send_offsets_to_transaction(&offsets, &GroupMetadata::standalone("g"))
        .await
        .unwrap();
    assert_eq!(
        committed_offset(&cluster, "g").await,
        -1,
        "not before the commit"
    );
    p.commit_transaction().await.unwrap();
    assert_eq!(committed_offset(&cluster, "g").await, 42);
}

async fn committed_offset(cluster: &Arc<Cluster>, group: &str) -> i64 {
    let conn = cluster.any().await.unwrap();
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partition_indexes(vec![0]),
        ]));
    let resp: OffsetFetchResponse = conn.send(ApiKey::OffsetFetch, 5, &req).await.unwrap();
    resp.topics[0].partitions[0].committed_offset
}

/// A read_committed member of `group`, subscribed to the topic, that has joined.
async fn member(cluster: &Arc<Cluster>, group: &str) -> (GroupConsumer, Vec<ConsumerRecord>) {
    let mut c = GroupConsumer::new(
        Arc::clone(cluster),
        GroupConfig {
            enable_auto_commit: false,
            consumer: ConsumerConfig {
                isolation: Isolation::ReadCommitted,
                fetch_max_wait_ms: 50,
                ..ConsumerConfig::default()
            },
            ..GroupConfig::new(group)
        },
    );
    c.subscribe([TOPIC], None);
    let mut read = Vec::new();
    for _ in 0..100 {
        read.extend(c.poll(Duration::from_millis(100)).await.unwrap());
        if !c.assignment().is_empty() && !read.is_empty() {
            break;
        }
    }
    (c, read)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_offsets_are_fenced_by_generation_and_awaited_by_new_owners() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, cluster) = start(dir.path()).await;
    let seed = transactional(&cluster, "tx-seed", 60_000).await;
    seed.begin_transaction().unwrap();
    for i in 0..10 {
        send(&seed, 0, &format!("in-{i}")).await;
    }
    seed.commit_transaction().await.unwrap();

    // A member of the current generation may commit; a stale generation or a stranger may not.
    let (m, _) = member(&cluster, "g-fenced").await;
    let meta = m.group_metadata();
    assert!(meta.generation_id >= 1 && !meta.member_id.is_empty());
    let offsets = BTreeMap::from([((TOPIC.to_string(), 0), 3i64)]);
    let p = transactional(&cluster, "tx-member", 60_000).await;
    for (stale, code) in [
        (
            GroupMetadata {
                generation_id: meta.generation_id - 1,
                ..meta.clone()
            },
            ResponseError::IllegalGeneration,
        ),
        (
            GroupMetadata {
                member_id: "stranger".into(),
                ..meta.clone()
            },
            ResponseError::UnknownMemberId,
        ),
    ] {
        p.begin_transaction().unwrap();
        let refused = p.send_offsets_to_transaction(&offsets, &stale).await;
        assert_eq!(refused.unwrap_err().code(), Some(code));
        p.abort_transaction().await.unwrap();
    }
    p.begin_transaction().unwrap();
    p.send_offsets_to_transaction(&offsets, &meta)
        .await
        .unwrap();
    p.commit_transaction().await.unwrap();
    m.close().await;

    // Offsets an open transaction will commit hold back a new owner until it ends, so that the
    // owner starts where the transaction leaves off instead of at the older offset.
    p.begin_transaction().unwrap();
    let pending = BTreeMap::from([((TOPIC.to_string(), 0), 7i64)]);
    p.send_offsets_to_transaction(&pending, &GroupMetadata::standalone("g-stable"))
        .await
        .unwrap();
    let committer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        p.commit_transaction().await.unwrap();
    });
    let (_owner, read) = member(&cluster, "g-stable").await;
    committer.await.unwrap();
    let first = read.iter().find(|r| r.partition == 0).map(|r| r.offset);
    assert_eq!(
        first,
        Some(7),
        "the new owner started at the transaction's offset"
    );
}
