//! Real, unmodified Kafka clients against `weir broker` on loopback: kafka-python 3.x (pure
//! Python) and confluent-kafka (librdkafka). The client scripts live in tests/clients/ and
//! exit non-zero at the first failed check.

mod support;

use support::{WeirProcess, run_python, start_broker};

#[test]
fn kafka_python_admin_producer_and_consumer_groups() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, addr) = start_broker(dir.path());
    let out = run_python("kafka_python_clients.py", &[&addr]);
    assert!(out.contains("kafka-python: all checks passed"), "{out}");
    stop(broker);
}

#[test]
fn confluent_kafka_idempotence_groups_and_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, addr) = start_broker(dir.path());
    let out = run_python("confluent_kafka_clients.py", &[&addr]);
    assert!(out.contains("confluent-kafka: all checks passed"), "{out}");
    stop(broker);
}

/// SIGTERM stops the broker cleanly: exit status 0.
fn stop(broker: WeirProcess) {
    let status = broker.terminate();
    assert!(status.success(), "weir broker exited with {status}");
}
