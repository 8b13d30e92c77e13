"""kafka-python 3.x, unmodified, against a Weir broker: admin, producer and consumer groups.

Usage: python kafka_python_clients.py BOOTSTRAP. Exits non-zero at the first failed check.
"""

import json
import sys
import threading
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError
from kafka.serializer import DefaultSerializer, JsonSerializer

BOOTSTRAP = sys.argv[1]
TIMEOUT_S = 10


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}", flush=True)


def admin_checks(admin):
    configs = {"retention.ms": "3600000", "compression.type": "producer", "min.insync.replicas": "1"}
    admin.create_topics([NewTopic("kp-orders", num_partitions=4, replication_factor=1, topic_configs=configs)])
    check("kp-orders" in admin.list_topics(), "create_topics with configs, then list_topics shows it")
    try:
        admin.create_topics([NewTopic("kp-orders", num_partitions=4, replication_factor=1)])
        check(False, "a second create_topics raises TopicAlreadyExistsError")
    except TopicAlreadyExistsError:
        check(True, "a second create_topics raises TopicAlreadyExistsError")
    admin.create_topics([NewTopic("kp-scratch", num_partitions=1, replication_factor=1)])
    admin.delete_topics(["kp-scratch"])
    deadline = time.time() + TIMEOUT_S
    while "kp-scratch" in admin.list_topics() and time.time() < deadline:
        time.sleep(0.1)
    check("kp-scratch" not in admin.list_topics(), "delete_topics removes the topic")


def producer_checks():
    """Sends 100 keyed JSON records per codec; returns {(key, value-json)} sent."""
    sent = set()
    for codec in ["gzip", "snappy", "lz4", None]:
        producer = KafkaProducer(
            bootstrap_servers=BOOTSTRAP,
            acks="all",
            retries=5,
            compression_type=codec,
            linger_ms=20,
            batch_size=32 * 1024,
            key_serializer=DefaultSerializer(),
            value_serializer=JsonSerializer(),
        )
        acked = []
        futures = []
        for i in range(100):
            key = f"order-{i % 10}"
            value = {"codec": str(codec), "i": i, "total_amount": i * 1.5}
            f = producer.send("kp-orders", key=key, value=value)
            f.add_callback(lambda md, i=i: acked.append((i, md.topic, md.partition, md.offset)))
            futures.append(f)
            sent.add((key, json.dumps(value)))
        first = futures[0].get(timeout=TIMEOUT_S)
        check(first.topic == "kp-orders" and 0 <= first.partition < 4 and first.offset >= 0,
              f"{codec}: send().get() returns topic, partition and offset")
        producer.flush(timeout=TIMEOUT_S)
        check(len(acked) == 100, f"{codec}: flush waits for every callback ({len(acked)} of 100)")
        by_partition = {}
        for _, _, p, off in acked:
            by_partition.setdefault(p, []).append(off)
        check(all(len(set(v)) == len(v) for v in by_partition.values()),
              f"{codec}: offsets within a partition are distinct")
        producer.close(timeout=TIMEOUT_S)
    return sent


def consume(consumer, want, seen):
    """Polls `consumer` until `want` records more are in `seen` or the timeout passes."""
    target = len(seen) + want
    deadline = time.time() + 3 * TIMEOUT_S
    while len(seen) < target and time.time() < deadline:
        for tp, msgs in consumer.poll(timeout_ms=500).items():
            for m in msgs:
                seen[(m.topic, m.partition, m.offset)] = (m.key.decode(), m.value.decode())
    return seen


def consumer_checks(sent):
    total = len(sent)
    common = dict(
        bootstrap_servers=BOOTSTRAP,
        group_id="kp-group",
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        auto_commit_interval_ms=200,
        max_poll_records=50,
    )
    a = KafkaConsumer("kp-orders", **common)
    b = KafkaConsumer("kp-orders", **common)
    seen = {}
    lock = threading.Lock()
    stop = threading.Event()

    # Each member polls on its own thread, as members of one group run in their own
    # processes. Polled in turn from one thread, kafka-python 3.0 sends a fresh JoinGroup
    # whenever its join finished while the other member was being polled, and the group
    # rebalances over and over.
    def member(c):
        while not stop.is_set():
            for tp, msgs in c.poll(timeout_ms=200).items():
                with lock:
                    for m in msgs:
                        seen[(m.topic, m.partition, m.offset)] = (m.key.decode(), m.value.decode())

    # Until both members have synced the new generation, one may still hold the old
    # assignment, so this waits for a split, not for two assignments.
    def split():
        pa = {tp.partition for tp in a.assignment()}
        pb = {tp.partition for tp in b.assignment()}
        return pa and pb and not (pa & pb) and pa | pb == {0, 1, 2, 3}

    threads = [threading.Thread(target=member, args=(c,)) for c in (a, b)]
    for t in threads:
        t.start()
    started = time.time()
    deadline = started + 3 * TIMEOUT_S
    while time.time() < deadline:
        with lock:
            done = len(seen) >= total
        if done and split():
            break
        time.sleep(0.1)
    print(f"two members split the partitions and read everything after {time.time() - started:.1f} s",
          flush=True)
    stop.set()
    for t in threads:
        t.join()
    pa = {tp.partition for tp in a.assignment()}
    pb = {tp.partition for tp in b.assignment()}
    check(pa and pb and not (pa & pb) and pa | pb == {0, 1, 2, 3},
          f"two consumers in one group split the partitions ({sorted(pa)} / {sorted(pb)})")
    check(set(seen.values()) == sent and len(seen) == total,
          f"the group read every record once ({len(seen)} of {total})")
    a.close(autocommit=True)
    b.close(autocommit=True)

    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", key_serializer=DefaultSerializer(),
                             value_serializer=DefaultSerializer())
    for i in range(20):
        producer.send("kp-orders", key=f"late-{i}", value=f"after-restart-{i}")
    producer.flush(timeout=TIMEOUT_S)
    producer.close()
    c = KafkaConsumer("kp-orders", **common)
    again = consume(c, 20, {})
    values = sorted(v for _, v in again.values())
    check(values == sorted(f"after-restart-{i}" for i in range(20)),
          f"a restarted consumer resumes from its committed offsets ({len(again)} records, all new)")
    for (topic, partition, offset), _ in again.items():
        check(offset >= 0 and topic == "kp-orders", f"record {topic}-{partition}@{offset} has topic, partition, offset")
        break
    committed = {p: c.committed(TopicPartition("kp-orders", p)) for p in range(4)}
    check(all(v is not None for v in committed.values()), f"committed offsets are readable: {committed}")
    c.close()


def main():
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=TIMEOUT_S * 1000)
    admin_checks(admin)
    sent = producer_checks()
    consumer_checks(sent)
    admin.close()
    print("kafka-python: all checks passed", flush=True)


if __name__ == "__main__":
    main()
