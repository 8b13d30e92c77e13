//! The client-version matrix: each client that users have, at the versions they have, against
//! its own `weir broker` on loopback. Python clients run in one venv per version
//! (tests/clients/matrix.txt, at .venv-clients/), KafkaJS from tests/clients/kafkajs, kcat
//! from the system. Each script checks admin, every codec at acks=all, assign and seek, a
//! group of two that split the partitions and commit, the idempotent producer and
//! transactions, and prints why it skips a step the client or the broker lacks. Every test
//! fails on any panic that the broker reports.

mod support;

use std::path::Path;
use std::process::Command;
use support::{client_python, kafkajs_dir, run_client, start_broker_with};

/// Runs `cmd` with the bootstrap address of a fresh broker (started with `extra` arguments)
/// as its last argument; checks that it printed `done`, that the broker stops cleanly and
/// that it never panicked.
fn against_broker(mut cmd: Command, what: &str, done: &str, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--group-initial-rebalance-delay-ms", "1000"];
    args.extend(extra);
    let (broker, addr) = start_broker_with(dir.path(), &args);
    cmd.arg(&addr);
    let out = run_client(cmd, what);
    println!("{out}");
    assert!(out.contains(done), "{what}: no {done:?} in\n{out}");
    let (status, panics) = broker.terminate_counting_panics();
    assert!(status.success(), "weir broker exited with {status}");
    assert_eq!(
        panics, 0,
        "weir broker panicked {panics} times under {what}"
    );
}

/// Runs tests/clients/SCRIPT with the Python of matrix venv `venv`.
fn python_client(venv: &str, script: &str, done: &str) {
    let mut cmd = Command::new(client_python(venv));
    cmd.arg(clients_dir().join(script));
    against_broker(cmd, venv, done, &[]);
}

fn clients_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

#[test]
fn kafka_python_2_0_2() {
    python_client(
        "kafka-python-2.0.2",
        "kafka_python_clients.py",
        "kafka-python: all checks passed",
    );
}

#[test]
fn kafka_python_2_2_21() {
    python_client(
        "kafka-python-2.2.21",
        "kafka_python_clients.py",
        "kafka-python: all checks passed",
    );
}

#[test]
fn kafka_python_3_0_12() {
    python_client(
        "kafka-python-3.0.12",
        "kafka_python_clients.py",
        "kafka-python: all checks passed",
    );
}

#[test]
fn confluent_kafka_2_0_2() {
    python_client(
        "confluent-kafka-2.0.2",
        "confluent_kafka_clients.py",
        "confluent-kafka: all checks passed",
    );
}

#[test]
fn confluent_kafka_2_3_0() {
    python_client(
        "confluent-kafka-2.3.0",
        "confluent_kafka_clients.py",
        "confluent-kafka: all checks passed",
    );
}

#[test]
fn confluent_kafka_2_12_2() {
    python_client(
        "confluent-kafka-2.12.2",
        "confluent_kafka_clients.py",
        "confluent-kafka: all checks passed",
    );
}

#[test]
fn confluent_kafka_2_16_2() {
    python_client(
        "confluent-kafka-2.16.2",
        "confluent_kafka_clients.py",
        "confluent-kafka: all checks passed",
    );
}

#[test]
fn aiokafka_0_8_0() {
    python_client(
        "aiokafka-0.8.0",
        "aiokafka_clients.py",
        "aiokafka: all checks passed",
    );
}

#[test]
fn aiokafka_0_14_0() {
    python_client(
        "aiokafka-0.14.0",
        "aiokafka_clients.py",
        "aiokafka: all checks passed",
    );
}

/// kcat from the system (Debian's package: kcat 1.7.1 on librdkafka 2.0.2); kcat cannot
/// create topics, so the broker creates them on first use, with 2 partitions.
#[test]
fn kcat_debian() {
    let mut cmd = Command::new("python3");
    cmd.arg(clients_dir().join("kcat_clients.py"));
    against_broker(
        cmd,
        "kcat",
        "kcat: all checks passed",
        &["--auto-create-topics", "--default-partitions", "2"],
    );
}

/// KafkaJS from tests/clients/kafkajs/package-lock.json.
#[test]
fn kafkajs_2_2_4() {
    let mut cmd = Command::new("node");
    cmd.arg(kafkajs_dir().join("kafkajs_clients.js"));
    against_broker(cmd, "kafkajs", "kafkajs: all checks passed", &[]);
}
