//! `weir job` against a real `weir broker`: `order-aggregates` is stopped with a savepoint
//! part way, resumed from it, and finishes; its committed output equals the job's oracle
//! computed from the generated input, every window exactly once.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use support::{WeirProcess, free_base_port, signal, start_broker};
use weir_core::client::{
    ClientConfig, Cluster, Consumer, ConsumerConfig, Isolation, Producer, ProducerConfig, Record,
    TopicPartition,
};
use weir_core::clock::Clock;
use weir_core::net::Net;
use weir_workloads::generator::{GeneratorConfig, Workload};
use weir_workloads::jobs::order_aggregates;

const SEED: u64 = 11;
const EVENTS: u64 = 3_000;
const PARTITIONS: i32 = 2;
const START_MS: i64 = 1_700_000_000_000;
const END_MARKER: &str = "END";
/// Empty polls in a row after which the committed output counts as read to its end.
const IDLE_POLLS: u32 = 6;

fn orders_config() -> GeneratorConfig {
    GeneratorConfig {
        start_ms: START_MS,
        rate_per_s: 1.0,
        keys: 20,
        out_of_orderness_ms: 2_000,
        invalid_fraction: 0.05,
        ..GeneratorConfig::default()
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Writes the end marker to every partition of the input.
fn end_input(bootstrap: &str) {
    block_on(async {
        let cluster = Cluster::new(ClientConfig::new([bootstrap], Net::Tokio));
        let producer = Producer::new(cluster, ProducerConfig::default(), Clock::starting_at(0))
            .await
            .expect("a producer");
        for p in 0..PARTITIONS {
            let marker = Record {
                partition: Some(p),
                timestamp: Some(START_MS),
                ..Record::new(
                    "orders",
                    None::<bytes::Bytes>,
                    END_MARKER.as_bytes().to_vec(),
                )
            };
            let sent = producer.send(marker).await.expect("marker sent");
            sent.wait().await.expect("marker acknowledged");
        }
        producer.close().await;
    });
}

/// The committed output: (customer, window end) -> every (count, total cents) found for it.
fn committed_output(bootstrap: &str) -> BTreeMap<(String, i64), Vec<(u64, i64)>> {
    block_on(async {
        let cluster = Cluster::new(ClientConfig::new([bootstrap], Net::Tokio));
        let topic = order_aggregates::OUTPUT_TOPIC;
        let partitions = cluster.partitions(topic).await.expect("output metadata");
        let config = ConsumerConfig {
            isolation: Isolation::ReadCommitted,
            ..ConsumerConfig::default()
        };
        let mut consumer = Consumer::new(Arc::clone(&cluster), config);
        let tps: Vec<TopicPartition> = partitions
            .iter()
            .map(|p| (topic.to_string(), p.partition))
            .collect();
        consumer.assign(tps);
        let mut found: BTreeMap<_, Vec<_>> = BTreeMap::new();
        let mut idle = 0;
        while idle < IDLE_POLLS {
            let records = consumer.poll(Duration::from_millis(500)).await.unwrap();
            idle = if records.is_empty() { idle + 1 } else { 0 };
            for r in records {
                let value = r.value.expect("a value");
                let (customer, end, count, cents) =
                    order_aggregates::decode(&value).expect("an aggregate");
                found
                    .entry((customer, end))
                    .or_default()
                    .push((count, cents));
            }
        }
        found
    })
}

fn job_args(bootstrap: &str, dir: &std::path::Path, port: u16, extra: &[&str]) -> Vec<String> {
    [
        "job",
        "order-aggregates",
        "--bootstrap",
        bootstrap,
        "--checkpoint-dir",
        &dir.display().to_string(),
        "--job-manager-port",
        &port.to_string(),
        "--checkpoint-interval-ms",
        "300",
    ]
    .iter()
    .chain(extra)
    .map(ToString::to_string)
    .collect()
}

#[test]
fn order_aggregates_is_exactly_once_through_a_stop_with_savepoint_and_a_resume() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, addr) = start_broker(&dir.path().join("broker"));
    let produced = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "produce",
            "orders",
            "--bootstrap",
            &addr,
            "--events",
            "3000",
            "--seed",
            "11",
            "--partitions",
            "2",
            "--start-ms",
            "1700000000000",
            "--event-rate",
            "1",
            "--keys",
            "20",
            "--out-of-orderness-ms",
            "2000",
            "--invalid-fraction",
            "0.05",
        ])
        .output()
        .expect("weir produce runs");
    assert!(produced.status.success(), "{produced:?}");

    let checkpoints = dir.path().join("checkpoints");
    let port = free_base_port(1);
    let mut first = WeirProcess::start(&job_args(&addr, &checkpoints, port, &[]));
    first.wait_for_line("CheckpointCompleted");
    signal("INT", &[first.pid()]);
    let line = first.wait_for_line("stopped with savepoint ");
    let savepoint = line.rsplit(' ').next().unwrap().to_string();
    assert!(first.wait().success());

    end_input(&addr);
    let mut second = WeirProcess::start(&job_args(
        &addr,
        &checkpoints,
        port,
        &["--from-savepoint", &savepoint, "--end-marker", END_MARKER],
    ));
    let deployed = second.wait_for_line("Deployed");
    assert!(
        deployed.contains("restored: Some("),
        "resumed from the savepoint: {deployed}"
    );
    second.wait_for_line("finished");
    assert!(second.wait().success());

    let events: Vec<_> = Workload::Orders
        .events(SEED, &orders_config(), EVENTS)
        .unwrap()
        .collect();
    let expected =
        order_aggregates::oracle(events.iter().map(|e| (e.value.as_slice(), e.timestamp_ms)));
    assert!(expected.len() > 50, "{} windows", expected.len());
    let found = committed_output(&addr);
    for (window, want) in &expected {
        assert_eq!(
            found.get(window).map(Vec::as_slice),
            Some(&[*want][..]),
            "window {window:?}"
        );
    }
    assert_eq!(found.len(), expected.len(), "no window the oracle lacks");
}

#[test]
fn an_unknown_job_is_refused_with_the_list_of_jobs() {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["job", "no-such-job", "--bootstrap", "127.0.0.1:1"])
        .output()
        .expect("weir job runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "weir job: no job \"no-such-job\"; the jobs that run distributed are: order-aggregates"
        ),
        "{stderr}"
    );
}
