//! The broker's storage path and the whole broker in one process.
//!
//! - `log`: the partition log on a real disk: appending batches and reading them back.
//! - `broker_loopback`: a broker and a client in this process over loopback TCP: an idempotent
//!   acks=all producer (each ack waits for fsync) and a consumer.

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::time::Duration;
use weir_broker::log::{Log, TailRecovery, TopicConfig};
use weir_broker::{Broker, BrokerConfig};
use weir_client::{
    Admin, ClientConfig, Cluster, Consumer, ConsumerConfig, NewTopic, Producer, ProducerConfig,
    Record,
};
use weir_seams::clock::Clock;
use weir_seams::disk::Disk;
use weir_seams::net::Net;
use weir_wire::record::{Codec, ProducerBatch, RecordToEncode, encode_batch};

const BATCH_RECORDS: usize = 100;
const VALUE_BYTES: usize = 100;

fn batch() -> Vec<u8> {
    let recs: Vec<RecordToEncode> = (0..BATCH_RECORDS)
        .map(|i| RecordToEncode {
            key: None,
            value: Some(Bytes::from(vec![b'a' + (i % 26) as u8; VALUE_BYTES])),
            headers: vec![],
            timestamp: i as i64,
        })
        .collect();
    let meta = ProducerBatch::plain(Codec::None);
    encode_batch(&recs, &meta).unwrap().to_vec()
}

fn log(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proto = batch();
    let mut log = rt
        .block_on(Log::open(
            Disk::real(dir.path()),
            TopicConfig::default(),
            Clock::starting_at(0),
            TailRecovery::Check,
        ))
        .unwrap()
        .0;
    let mut g = c.benchmark_group("log");
    g.throughput(Throughput::ElementsAndBytes {
        elements: BATCH_RECORDS as u64,
        bytes: proto.len() as u64,
    });
    g.bench_function("append_batch", |b| {
        b.iter(|| {
            let mut bytes = proto.clone();
            rt.block_on(log.append(&mut bytes)).unwrap()
        })
    });
    let end = log.log_end_offset();
    let chunk = 1024 * 1024;
    let batches_per_read = (chunk / proto.len()) as u64;
    g.throughput(Throughput::ElementsAndBytes {
        elements: batches_per_read * BATCH_RECORDS as u64,
        bytes: (batches_per_read as usize * proto.len()) as u64,
    });
    let mut at = 0i64;
    g.bench_function("read_1mib", |b| {
        b.iter(|| {
            let bytes = log.read(at, chunk, i64::MAX).unwrap();
            at += batches_per_read as i64 * BATCH_RECORDS as i64;
            if at + (batches_per_read as i64 * BATCH_RECORDS as i64) >= end {
                at = 0;
            }
            bytes
        })
    });
    g.finish();
}

fn broker_loopback(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cluster = rt.block_on(async {
        let (_broker, bound) = Broker::listen(
            "127.0.0.1:0",
            BrokerConfig::default(),
            Disk::real(dir.path()),
            Clock::starting_at(0),
            weir_seams::rng::derive(0, "bench"),
        )
        .await
        .unwrap();
        let port = bound.port();
        let cluster = Cluster::new(ClientConfig::new([format!("127.0.0.1:{port}")], Net::Tokio));
        Admin::new(cluster.clone())
            .create_topic(&NewTopic::new("bench", 1, 1))
            .await
            .unwrap();
        cluster
    });
    let records = 10_000u64;
    let producer = rt
        .block_on(Producer::new(
            cluster.clone(),
            ProducerConfig {
                linger_ms: 2,
                batch_bytes_max: 64 * 1024,
                ..Default::default()
            },
            Clock::starting_at(0),
        ))
        .unwrap();
    let value = Bytes::from(vec![b'v'; VALUE_BYTES]);
    let mut g = c.benchmark_group("broker_loopback");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::ElementsAndBytes {
        elements: records,
        bytes: records * VALUE_BYTES as u64,
    });
    g.bench_function("produce_acks_all_10k", |b| {
        b.to_async(&rt).iter(|| async {
            for _ in 0..records {
                producer
                    .send(Record {
                        topic: "bench".into(),
                        partition: Some(0),
                        value: Some(value.clone()),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
            producer.flush().await;
        })
    });
    g.bench_function("consume_10k", |b| {
        b.to_async(&rt).iter(|| async {
            let mut consumer = Consumer::new(cluster.clone(), ConsumerConfig::default());
            consumer.assign([("bench".to_string(), 0)]);
            let mut n = 0u64;
            while n < records {
                n += consumer.poll(Duration::from_secs(5)).await.unwrap().len() as u64;
            }
        })
    });
    g.finish();
}

criterion_group!(benches, log, broker_loopback);
criterion_main!(benches);
