"""confluent-kafka (librdkafka), unmodified, against a Weir broker: idempotent produce, a
consumer group, and a transactional consume-transform-produce loop read with read_committed.

Usage: python confluent_kafka_clients.py BOOTSTRAP. Exits non-zero at the first failed check.
"""

import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

BOOTSTRAP = sys.argv[1]
TIMEOUT_S = 15
RECORDS = 300


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}", flush=True)


def create(admin, name, partitions):
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    for f in futures.values():
        f.result(timeout=TIMEOUT_S)


def drain(consumer, want, timeout_s=3 * TIMEOUT_S):
    """Reads until `want` records arrived or the time is up; returns (key, value) pairs."""
    got = []
    deadline = time.time() + timeout_s
    while len(got) < want and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is None:
            continue
        if m.error():
            raise KafkaException(m.error())
        got.append((m.key().decode(), m.value().decode()))
    return got


def idempotent_produce():
    producer = Producer({
        "bootstrap.servers": BOOTSTRAP,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
    })
    delivered, errors = [], []

    def on_delivery(err, msg):
        if err is None:
            delivered.append((msg.partition(), msg.offset()))
        else:
            errors.append(err)

    for i in range(RECORDS):
        producer.produce("ck-in", key=f"k{i % 7}", value=f"v{i}", on_delivery=on_delivery)
        producer.poll(0)
    left = producer.flush(TIMEOUT_S)
    check(not errors, f"idempotent producer: no delivery errors ({errors[:3]})")
    check(left == 0 and len(delivered) == RECORDS,
          f"idempotent producer: {len(delivered)} of {RECORDS} delivered")
    check(len(set(delivered)) == RECORDS, "idempotent producer: every record at its own offset")


def group_consume():
    conf = {
        "bootstrap.servers": BOOTSTRAP,
        "group.id": "ck-readers",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
    c = Consumer(conf)
    c.subscribe(["ck-in"])
    got = drain(c, RECORDS)
    check(sorted(v for _, v in got) == sorted(f"v{i}" for i in range(RECORDS)),
          f"group consumer read every record once ({len(got)} of {RECORDS})")
    c.commit(asynchronous=False)
    committed = c.committed([TopicPartition("ck-in", p) for p in range(3)], timeout=TIMEOUT_S)
    check(sum(tp.offset for tp in committed) == RECORDS,
          f"committed offsets cover the topic ({[tp.offset for tp in committed]})")
    c.close()


def transform_loop():
    """Copies ck-in to ck-out, upper-casing values, one transaction per batch of input."""
    consumer = Consumer({
        "bootstrap.servers": BOOTSTRAP,
        "group.id": "ck-ctp",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    })
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "transactional.id": "ck-ctp-0"})
    producer.init_transactions(TIMEOUT_S)
    consumer.subscribe(["ck-in"])
    copied = 0
    aborted_once = False
    deadline = time.time() + 4 * TIMEOUT_S
    while copied < RECORDS and time.time() < deadline:
        batch = consumer.consume(num_messages=50, timeout=0.5)
        if not batch:
            continue
        producer.begin_transaction()
        for m in batch:
            if m.error():
                raise KafkaException(m.error())
            producer.produce("ck-out", key=m.key(), value=m.value().decode().upper().encode())
        producer.send_offsets_to_transaction(
            consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), TIMEOUT_S)
        if not aborted_once:
            # The first batch is aborted and then read again from the committed offsets:
            # none of its writes may reach a read_committed reader. The flush puts them in
            # the log first (an abort drops what is still queued in the client).
            producer.flush(TIMEOUT_S)
            producer.abort_transaction(TIMEOUT_S)
            aborted_once = True
            for tp in consumer.committed(consumer.assignment(), timeout=TIMEOUT_S):
                consumer.seek(TopicPartition(tp.topic, tp.partition, max(tp.offset, 0)))
            continue
        producer.commit_transaction(TIMEOUT_S)
        copied += len(batch)
    check(copied == RECORDS, f"transactional loop committed {copied} of {RECORDS} inputs")
    consumer.close()

    committed = read_back("ck-verify", "read_committed")
    check(sorted(v for _, v in committed) == sorted(f"V{i}" for i in range(RECORDS)),
          f"read_committed sees each output exactly once, none of the aborted batch "
          f"({len(committed)} read)")
    dirty = read_back("ck-verify-uncommitted", "read_uncommitted")
    check(len(dirty) > RECORDS, f"read_uncommitted also sees the aborted batch ({len(dirty)} read)")


def read_back(group, isolation):
    """Reads ck-out from the start in a new group at `isolation`, up to one record more than
    was committed."""
    reader = Consumer({
        "bootstrap.servers": BOOTSTRAP,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "isolation.level": isolation,
    })
    reader.subscribe(["ck-out"])
    got = drain(reader, RECORDS + 1, timeout_s=TIMEOUT_S)
    reader.close()
    return got


def main():
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    create(admin, "ck-in", 3)
    create(admin, "ck-out", 3)
    idempotent_produce()
    group_consume()
    transform_loop()
    print("confluent-kafka: all checks passed", flush=True)


if __name__ == "__main__":
    main()
