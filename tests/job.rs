//! `weir job` against a real `weir broker`: `order-aggregates` is stopped with a savepoint
//! part way, resumed from it, and finishes; `order-pipeline` does the same and also upserts
//! into its SQLite table; `order-sessions` runs to the end of its input and writes two topics.
//! Each committed output, and the table, equals the job's oracle computed from the generated
//! input, every record (and every upsert) exactly once.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use support::{WeirProcess, free_base_port, run_python, signal, start_broker};
use weir_client::{
    ClientConfig, Cluster, Consumer, ConsumerConfig, Isolation, Producer, ProducerConfig, Record,
    TopicPartition,
};
use weir_engine::runtime::TableStore;
use weir_engine::runtime::table::TableContent;
use weir_engine::runtime::table::postgres::PostgresTable;
use weir_engine::runtime::table::sqlite::SqliteTable;
use weir_seams::clock::Clock;
use weir_seams::net::Net;
use weir_workloads::generator::{GeneratorConfig, Skew, Workload};
use weir_workloads::jobs::order_pipeline::{TABLE, found_table, table_oracle};
use weir_workloads::jobs::{ExpectedRecords, Input, Job, canonical};

const SEED: u64 = 11;
const EVENTS: u64 = 3_000;
const PARTITIONS: i32 = 2;
const START_MS: i64 = 1_700_000_000_000;
const END_MARKER: &str = "END";
/// Empty polls in a row after which the committed output counts as read to its end.
const IDLE_POLLS: u32 = 6;

/// The orders `weir produce` writes with [`produce_args`]: `keys` customers, zipf-skewed.
fn orders_config(keys: u64) -> GeneratorConfig {
    GeneratorConfig {
        start_ms: START_MS,
        rate_per_s: 1.0,
        keys,
        skew: Skew::Zipf { exponent: 1.0 },
        out_of_orderness_ms: 2_000,
        invalid_fraction: 0.05,
        ..GeneratorConfig::default()
    }
}

/// Writes [`orders_config`]'s orders to a two-partition `orders` topic with `weir produce`.
fn produce(addr: &str, keys: u64) {
    let produced = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["produce", "orders", "--bootstrap", addr])
        .args(["--events", &EVENTS.to_string(), "--seed", &SEED.to_string()])
        .args(["--partitions", &PARTITIONS.to_string()])
        .args(["--start-ms", &START_MS.to_string(), "--event-rate", "1"])
        .args(["--keys", &keys.to_string(), "--zipf", "1.0"])
        .args([
            "--out-of-orderness-ms",
            "2000",
            "--invalid-fraction",
            "0.05",
        ])
        .output()
        .expect("weir produce runs");
    assert!(produced.status.success(), "{produced:?}");
}

/// The orders [`produce`] writes.
fn orders(keys: u64) -> Vec<weir_workloads::generator::Event> {
    Workload::Orders
        .events(SEED, &orders_config(keys), EVENTS)
        .unwrap()
        .collect()
}

/// What `job`'s oracle expects of the produced orders, per output topic.
fn expected(job: Job, keys: u64) -> Vec<(&'static str, ExpectedRecords)> {
    let events = orders(keys);
    let input: Vec<Input<'_>> = events.iter().map(Input::from).collect();
    job.oracle(&input)
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

/// The committed records of `topic`: (key, value in canonical JSON) to times found.
fn committed(bootstrap: &str, topic: &str) -> ExpectedRecords {
    block_on(async {
        let cluster = Cluster::new(ClientConfig::new([bootstrap], Net::Tokio));
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
        let mut found = ExpectedRecords::new();
        let mut idle = 0;
        while idle < IDLE_POLLS {
            let records = consumer.poll(Duration::from_millis(500)).await.unwrap();
            idle = if records.is_empty() { idle + 1 } else { 0 };
            for r in records {
                let value: serde_json::Value =
                    serde_json::from_slice(&r.value.expect("a value")).expect("JSON");
                let key = r.key.expect("a key").to_vec();
                *found.entry((key, canonical(&value))).or_default() += 1;
            }
        }
        found
    })
}

/// Requires every topic's committed records to be exactly the oracle's.
fn assert_output_is(addr: &str, expected: &[(&str, ExpectedRecords)]) {
    for (topic, want) in expected {
        let found = committed(addr, topic);
        let missing = want
            .keys()
            .filter(|k| found.get(*k) != want.get(*k))
            .count();
        let unexpected = found.keys().filter(|k| !want.contains_key(*k)).count();
        assert_eq!(
            (missing, unexpected),
            (0, 0),
            "{topic}: {} records expected, {} found",
            want.len(),
            found.len()
        );
    }
}

fn job_args(
    job: Job,
    bootstrap: &str,
    dir: &std::path::Path,
    port: u16,
    extra: &[&str],
) -> Vec<String> {
    [
        "job",
        job.name(),
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

/// Runs `job` on 20 customers' orders: stopped with a savepoint after its first checkpoint,
/// then resumed from it to the end of its input. Returns the broker's address (and keeps the
/// broker and the directory alive).
fn stop_and_resume(job: Job, dir: &std::path::Path, model: &[&str]) -> (WeirProcess, String) {
    let (broker, addr) = start_broker(&dir.join("broker"));
    produce(&addr, 20);

    let checkpoints = dir.join("checkpoints");
    let port = free_base_port(1);
    let mut first = WeirProcess::start(&job_args(job, &addr, &checkpoints, port, model));
    first.wait_for_line("CheckpointCompleted");
    signal("INT", &[first.pid()]);
    let line = first.wait_for_line("stopped with savepoint ");
    let savepoint = line.rsplit(' ').next().unwrap().to_string();
    assert!(first.wait().success());

    end_input(&addr);
    let mut second = WeirProcess::start(&job_args(
        job,
        &addr,
        &checkpoints,
        port,
        &[
            &["--from-savepoint", &savepoint, "--end-marker", END_MARKER],
            model,
        ]
        .concat(),
    ));
    let deployed = second.wait_for_line("Deployed");
    assert!(
        deployed.contains("restored: Some("),
        "resumed from the savepoint: {deployed}"
    );
    second.wait_for_line("finished");
    assert!(second.wait().success());
    (broker, addr)
}

#[test]
fn order_aggregates_is_exactly_once_through_a_stop_with_savepoint_and_a_resume() {
    let dir = tempfile::tempdir().unwrap();
    let job = Job::OrderAggregates;
    let (_broker, addr) = stop_and_resume(job, dir.path(), &[]);
    let expected = expected(job, 20);
    assert!(expected[0].1.len() > 50, "{} windows", expected[0].1.len());
    assert_output_is(&addr, &expected);
}

#[test]
fn order_aggregates_in_micro_batches_is_exactly_once_through_a_stop_and_a_resume() {
    let dir = tempfile::tempdir().unwrap();
    let job = Job::OrderAggregates;
    let model = ["--model", "micro-batch", "--trigger-ms", "300"];
    let (_broker, addr) = stop_and_resume(job, dir.path(), &model);
    let log = dir.path().join("checkpoints").join("offsets.json");
    assert!(log.exists(), "the offset log is written");
    assert_output_is(&addr, &expected(job, 20));
}

#[test]
fn order_pipeline_upserts_its_table_and_writes_its_topics_exactly_once_through_a_resume() {
    let dir = tempfile::tempdir().unwrap();
    let job = Job::OrderPipeline;
    let (_broker, addr) = stop_and_resume(job, dir.path(), &[]);
    let expected = expected(job, 20);
    let counts: Vec<usize> = expected.iter().map(|(_, e)| e.len()).collect();
    assert!(counts[0] > 100 && counts[1] > 100, "{counts:?}");
    assert_output_is(&addr, &expected);

    let db = dir.path().join("checkpoints").join("tables.sqlite");
    let table = SqliteTable::open(&db, TABLE).unwrap();
    assert_table_is(&block_on(table.scan()).unwrap());
}

/// Requires the table's `content` to hold each order's latest accepted event, applied once
/// per event.
fn assert_table_is(content: &TableContent) {
    let events = orders(20);
    let input: Vec<Input<'_>> = events.iter().map(Input::from).collect();
    let want = table_oracle(&input);
    let found = found_table(content);
    let writes: u64 = found.values().map(|(_, w)| w).sum();
    assert!(want.len() > 1_000, "{} orders", want.len());
    assert_eq!(found.len(), want.len());
    assert_eq!(writes, want.values().map(|(_, w)| w).sum::<u64>());
    assert!(found == want, "the table differs from the oracle's");
}

/// `order-pipeline` with `--table-url`, against the PostgreSQL server in `WEIR_POSTGRES_URL`
/// (`.ci/run` starts one).
#[test]
fn order_pipeline_upserts_into_postgres_exactly_once() {
    let Ok(url) = std::env::var("WEIR_POSTGRES_URL") else {
        eprintln!("skipped: WEIR_POSTGRES_URL is not set (.ci/run starts a server and sets it)");
        return;
    };
    block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("the test database");
        tokio::spawn(connection);
        let reset = format!(
            "DROP TABLE IF EXISTS {TABLE}; CREATE TABLE IF NOT EXISTS weir_commits (
                 tbl TEXT NOT NULL, writer TEXT NOT NULL, checkpoint_id BIGINT NOT NULL,
                 PRIMARY KEY (tbl, writer));
             DELETE FROM weir_commits WHERE tbl = '{TABLE}';"
        );
        client.batch_execute(&reset).await.unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let (_broker, addr) = start_broker(&dir.path().join("broker"));
    produce(&addr, 20);
    end_input(&addr);
    let job = Job::OrderPipeline;
    let args = ["--end-marker", END_MARKER, "--table-url", &url];
    let checkpoints = dir.path().join("checkpoints");
    let port = free_base_port(1);
    let mut run = WeirProcess::start(&job_args(job, &addr, &checkpoints, port, &args));
    run.wait_for_line("table orders: PostgreSQL");
    run.wait_for_line("finished");
    assert!(run.wait().success());
    assert_output_is(&addr, &expected(job, 20));
    let content = block_on(async {
        let table = PostgresTable::connect(&url, TABLE).await.unwrap();
        table.scan().await.unwrap()
    });
    assert_table_is(&content);
}

#[test]
fn order_sessions_writes_its_sessions_and_running_totals_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let job = Job::OrderSessions;
    let args = ["--out-of-orderness-ms", "5000"];
    let (_broker, addr) = run_to_the_end(job, 200, dir.path(), &args);
    let expected = expected(job, 200);
    let counts: Vec<usize> = expected.iter().map(|(_, e)| e.len()).collect();
    assert!(counts[0] > 100 && counts[1] > 1_000, "{counts:?}");
    assert_output_is(&addr, &expected);
}

/// Runs `job` with `extra` arguments on `keys` customers' orders, to the end of its input.
fn run_to_the_end(
    job: Job,
    keys: u64,
    dir: &std::path::Path,
    extra: &[&str],
) -> (WeirProcess, String) {
    let (broker, addr) = start_broker(&dir.join("broker"));
    produce(&addr, keys);
    end_input(&addr);
    let checkpoints = dir.join("checkpoints");
    let args = [&["--end-marker", END_MARKER], extra].concat();
    let mut run = WeirProcess::start(&job_args(
        job,
        &addr,
        &checkpoints,
        free_base_port(1),
        &args,
    ));
    run.wait_for_line("finished");
    assert!(run.wait().success());
    (broker, addr)
}

#[test]
fn order_aggregates_under_kafka_streams_is_exactly_once_to_the_end_of_its_input() {
    let dir = tempfile::tempdir().unwrap();
    // A grace longer than the input: the two sources read the backlog at their own pace, and
    // no row may come late behind the other's stream time.
    let model = ["--model", "kafka-streams", "--grace-ms", "100000000"];
    let (_broker, addr) = run_to_the_end(Job::OrderAggregates, 20, dir.path(), &model);
    assert_output_is(&addr, &expected(Job::OrderAggregates, 20));
    // State went through the changelog and offsets through the group: nothing checkpointed.
    let saved = dir.path().join("checkpoints").join("checkpoints");
    let checkpoints = std::fs::read_dir(&saved).map_or(0, Iterator::count);
    assert_eq!(checkpoints, 0, "checkpoints in {}", saved.display());
}

#[test]
fn order_aggregates_under_storm_without_failures_writes_each_window_once() {
    let dir = tempfile::tempdir().unwrap();
    // With no failure and a timeout no tree reaches, at least once delivers exactly once.
    let model = ["--model", "storm", "--message-timeout-ms", "600000"];
    let (_broker, addr) = run_to_the_end(Job::OrderAggregates, 20, dir.path(), &model);
    assert_output_is(&addr, &expected(Job::OrderAggregates, 20));
}

/// Orders in the format of a user's own kafka-python producer (text order ids, float-second
/// timestamps, record timestamps as event time, five requests in flight) give every window the
/// producer's own arithmetic expects, each once.
#[test]
fn orders_from_a_kafka_python_producer_give_every_window_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, addr) = start_broker(&dir.path().join("broker"));
    let expected_path = dir.path().join("expected.json");
    let expected_arg = expected_path.display().to_string();
    let out = run_python(
        "seed_order_producer.py",
        &[&addr, &expected_arg, END_MARKER],
    );
    assert!(out.contains("windows expected"), "{out}");
    let values: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&expected_path).unwrap()).unwrap();
    let mut want = ExpectedRecords::new();
    for v in &values {
        let key = v["customer_id"].as_str().unwrap().as_bytes().to_vec();
        *want.entry((key, canonical(v))).or_default() += 1;
    }
    assert_eq!(want.len(), 80, "10 customers over 8 windows");

    let checkpoints = dir.path().join("checkpoints");
    let args = job_args(
        Job::OrderAggregates,
        &addr,
        &checkpoints,
        free_base_port(1),
        &["--end-marker", END_MARKER],
    );
    let mut run = WeirProcess::start(&args);
    run.wait_for_line("finished");
    let dropped = run.wait_for_line("dropped:");
    assert!(run.wait().success());
    assert_eq!(dropped, "dropped: 0 unparseable, 0 invalid, 0 late");
    assert_output_is(&addr, &[("order-aggregates", want)]);
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
            "weir job: no job \"no-such-job\"; the jobs are: order-aggregates, order-pipeline, order-sessions"
        ),
        "{stderr}"
    );
}
