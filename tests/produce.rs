//! `weir produce` against a real `weir broker`: what lands in the topic is exactly what the
//! generator makes for the same seed and settings, partition by partition, in order.

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;
use support::start_broker;
use weir_client::{
    ClientConfig, Cluster, Consumer, ConsumerConfig, TopicPartition, partition_for_key,
};
use weir_seams::net::Net;
use weir_workloads::generator::{GeneratorConfig, Skew, Workload};

/// How long reading a topic back may take, in seconds.
const READ_TIMEOUT_S: u64 = 60;

/// A record as compared: key, value, timestamp.
type Row = (Vec<u8>, Vec<u8>, i64);

fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .output()
        .expect("weir runs")
}

/// Runs `weir produce ARGS`, asserts it succeeded, and returns its stderr.
fn produce(args: &[&str]) -> String {
    let out = weir(&[&["produce"], args].concat());
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "weir produce failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(" events/s"), "a summary line: {stdout}");
    stderr
}

/// Every record of `topic`, by partition, in offset order.
fn read_topic(bootstrap: &str, topic: &str) -> BTreeMap<i32, Vec<Row>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(READ_TIMEOUT_S), async {
            let cluster = Cluster::new(ClientConfig::new([bootstrap], Net::Tokio));
            let partitions = cluster.partitions(topic).await.expect("topic metadata");
            let mut consumer = Consumer::new(Arc::clone(&cluster), ConsumerConfig::default());
            let tps: Vec<TopicPartition> = partitions
                .iter()
                .map(|p| (topic.to_string(), p.partition))
                .collect();
            consumer.assign(tps.clone());
            let mut ends = BTreeMap::new();
            for tp in &tps {
                ends.insert(tp.1, consumer.list_offset(tp, -1).await.expect("end"));
            }
            let mut read: BTreeMap<i32, Vec<Row>> = tps.iter().map(|tp| (tp.1, vec![])).collect();
            while read.iter().any(|(p, rows)| (rows.len() as i64) < ends[p]) {
                for r in consumer.poll(Duration::from_millis(500)).await.unwrap() {
                    let row = (
                        r.key.unwrap().to_vec(),
                        r.value.unwrap().to_vec(),
                        r.timestamp,
                    );
                    read.get_mut(&r.partition).unwrap().push(row);
                }
            }
            read
        })
        .await
        .expect("the topic is read back in time")
    })
}

/// The generator's events for `seed` and `config`, split as the producer partitions them.
fn expected(
    workload: Workload,
    seed: u64,
    config: &GeneratorConfig,
    count: u64,
    partitions: i32,
) -> BTreeMap<i32, Vec<Row>> {
    let mut by: BTreeMap<i32, Vec<Row>> = (0..partitions).map(|p| (p, vec![])).collect();
    for e in workload.events(seed, config, count).unwrap() {
        let p = partition_for_key(&e.key, partitions);
        by.get_mut(&p)
            .unwrap()
            .push((e.key, e.value, e.timestamp_ms));
    }
    by
}

/// Asserts that `read` and `want` hold the same rows, naming the first that differs.
fn assert_same(read: &BTreeMap<i32, Vec<Row>>, want: &BTreeMap<i32, Vec<Row>>) {
    assert_eq!(
        read.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (p, rows) in want {
        let got = &read[p];
        assert_eq!(got.len(), rows.len(), "records in partition {p}");
        if let Some(i) = (0..rows.len()).find(|i| got[*i] != rows[*i]) {
            let show = |r: &Row| format!("{} {}", String::from_utf8_lossy(&r.1), r.2);
            panic!(
                "partition {p} offset {i}: read {}, generated {}",
                show(&got[i]),
                show(&rows[i])
            );
        }
    }
}

/// The number after `name ` in the run's first line.
fn printed(stderr: &str, name: &str) -> i64 {
    let after = stderr
        .split(&format!("{name} "))
        .nth(1)
        .unwrap_or_else(|| panic!("{name} is printed: {stderr}"));
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap()
}

#[test]
fn produced_orders_and_nexmark_read_back_exactly_as_generated() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, addr) = start_broker(dir.path());

    let stderr = produce(&[
        "orders",
        "--bootstrap",
        &addr,
        "--events",
        "2000",
        "--seed",
        "7",
        "--partitions",
        "3",
        "--zipf",
        "1.1",
    ]);
    // The start of event time defaults to the clock; the run prints it so it can be redone.
    let orders = GeneratorConfig {
        start_ms: printed(&stderr, "start-ms"),
        skew: Skew::Zipf { exponent: 1.1 },
        ..GeneratorConfig::default()
    };
    let read = read_topic(&addr, "orders");
    assert_eq!(read.len(), 3);
    let want = expected(Workload::Orders, 7, &orders, 2000, 3);
    assert!(want.values().all(|rows| !rows.is_empty()));
    assert_same(&read, &want);

    let stderr = produce(&[
        "nexmark",
        "--bootstrap",
        &addr,
        "--events",
        "1000",
        "--start-ms",
        "1700000000000",
        "--out-of-orderness-ms",
        "200",
        "--late-fraction",
        "0.05",
        "--invalid-fraction",
        "0.02",
    ]);
    let seed = printed(&stderr, "seed") as u64;
    let nexmark = GeneratorConfig {
        out_of_orderness_ms: 200,
        late_fraction: 0.05,
        invalid_fraction: 0.02,
        ..GeneratorConfig::default()
    };
    let read = read_topic(&addr, "nexmark");
    let want = expected(Workload::Nexmark, seed, &nexmark, 1000, read.len() as i32);
    assert_eq!(read.values().map(Vec::len).sum::<usize>(), 1000);
    assert_same(&read, &want);
}

#[test]
fn an_unreachable_bootstrap_fails_with_a_clear_message() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let out = weir(&["produce", "clicks", "--bootstrap", &addr, "--events", "10"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("weir produce: cannot reach the cluster at {addr}")),
        "{stderr}"
    );
}

#[test]
fn settings_out_of_range_are_usage_errors() {
    let out = weir(&[
        "produce",
        "nexmark",
        "--bootstrap",
        "127.0.0.1:9",
        "--events",
        "10",
        "--zipf",
        "1.0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("do not apply to nexmark"));
    let out = weir(&[
        "produce",
        "orders",
        "--bootstrap",
        "127.0.0.1:9",
        "--events",
        "10",
        "--late-fraction",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(2));
}
