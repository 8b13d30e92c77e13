"""confluent-kafka (librdkafka), unmodified, against a Weir broker: admin, every codec at
acks=all, assign and seek, a group of two that split the partitions and commit, idempotent
produce, and a transactional consume-transform-produce loop with an aborted batch, read back
under read_committed and read_uncommitted.

Usage: python confluent_kafka_clients.py BOOTSTRAP. Exits non-zero at the first failed check.
"""

import sys
import threading
import time

import confluent_kafka
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from matrix_common import CODECS, TIMEOUT_S, check, records, skip, wait_until

BOOTSTRAP = sys.argv[1]
RECORDS = 60
TOPIC = "ck-orders"
PARTITIONS = 4


def create(admin, name, partitions):
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    for f in futures.values():
        f.result(timeout=TIMEOUT_S)


def admin_checks(admin):
    create(admin, TOPIC, PARTITIONS)
    check(TOPIC in admin.list_topics(timeout=TIMEOUT_S).topics, "create_topics, then list_topics shows it")
    try:
        for f in admin.describe_configs([ConfigResource("topic", TOPIC)]).values():
            configs = f.result(timeout=TIMEOUT_S)
            check("retention.ms" in configs, f"describe_configs shows retention.ms ({len(configs)} entries)")
    except KafkaException as e:
        if e.args[0].code() not in (KafkaError.UNSUPPORTED_VERSION, KafkaError._UNSUPPORTED_FEATURE):
            raise
        skip("describe_configs", f"broker gap (issue 21 item 2): no DescribeConfigs API: {e}")
    create(admin, "ck-scratch", 1)
    for f in admin.delete_topics(["ck-scratch"]).values():
        f.result(timeout=TIMEOUT_S)
    check(wait_until(lambda: "ck-scratch" not in admin.list_topics(timeout=TIMEOUT_S).topics),
          "delete_topics removes the topic")


def produce(topic, pairs, **config):
    """Sends `pairs` and returns {(partition, offset): (key, value)} from the delivery reports."""
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all", "linger.ms": 5, **config})
    acked, errors = {}, []

    def on_delivery(err, msg):
        if err is None:
            acked[(msg.partition(), msg.offset())] = (msg.key().decode(), msg.value().decode())
        else:
            errors.append(err)

    for k, v in pairs:
        producer.produce(topic, key=k, value=v, on_delivery=on_delivery)
        producer.poll(0)
    left = producer.flush(TIMEOUT_S)
    check(not errors and left == 0, f"{topic}: no delivery errors ({errors[:3]}, {left} left)")
    return acked


def drain(consumer, want, timeout_s=2 * TIMEOUT_S):
    """Reads until `want` records arrived or the time is up; returns {(partition, offset): (key, value)}."""
    got = {}
    deadline = time.time() + timeout_s
    while len(got) < want and time.time() < deadline:
        m = consumer.poll(0.2)
        if m is None:
            continue
        if m.error():
            raise KafkaException(m.error())
        got[(m.partition(), m.offset())] = (m.key().decode(), m.value().decode())
    return got


def read_assigned(topic, partitions, want, **config):
    """Assigns `partitions` of `topic` at offset 0 and reads `want` records."""
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "ck-assign", "enable.auto.commit": False, **config})
    c.assign([TopicPartition(topic, p, 0) for p in partitions])
    got = drain(c, want)
    c.close()
    return got


def producer_checks():
    sent = {}
    for codec in CODECS + ["none"]:
        acked = produce(TOPIC, records(f"codec-{codec}"), **{"compression.type": codec})
        check(len(acked) == len(records("x")) and not set(acked) & set(sent),
              f"{codec}: acks=all acknowledges every record at its own offset ({len(acked)})")
        sent.update(acked)
    return sent


def offset_queries(sent):
    """ListOffsets: the watermarks and the offsets of timestamps."""
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "ck-offsets", "enable.auto.commit": False})
    for p in range(PARTITIONS):
        want = (0, sum(1 for q, _ in sent if q == p))
        marks = c.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=TIMEOUT_S, cached=False)
        check(marks == want, f"partition {p}: watermarks are {want} ({marks})")
    first = c.offsets_for_times([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)], timeout=TIMEOUT_S)
    check([tp.offset for tp in first] == [0] * PARTITIONS, f"offsets_for_times(0) is offset 0 ({first})")
    hour = int(time.time() * 1000) + 3_600_000
    future = c.offsets_for_times([TopicPartition(TOPIC, p, hour) for p in range(PARTITIONS)], timeout=TIMEOUT_S)
    # Offset -1 and, from confluent-kafka 2.1 on, which show it, no leader epoch either.
    check([(tp.offset, getattr(tp, "leader_epoch", None)) for tp in future] == [(-1, None)] * PARTITIONS,
          f"offsets_for_times(in an hour) finds none ({future})")
    c.close()


def group_checks(sent):
    """Two members split the partitions, read everything and commit; a new member of the
    group then reads only what came after."""
    conf = {"bootstrap.servers": BOOTSTRAP, "group.id": "ck-group", "auto.offset.reset": "earliest",
            "enable.auto.commit": False}
    stop = threading.Event()
    members = [{"seen": {}, "assigned": set()} for _ in range(2)]

    def member(state):
        c = Consumer(conf)
        c.subscribe([TOPIC])
        while not stop.is_set():
            state["seen"].update(drain(c, 1, timeout_s=0.2))
            state["assigned"] = {tp.partition for tp in c.assignment()}
        c.commit(asynchronous=False)
        c.close()

    threads = [threading.Thread(target=member, args=(m,)) for m in members]
    for t in threads:
        t.start()
    a, b = members

    def split():
        return a["assigned"] and b["assigned"] and not a["assigned"] & b["assigned"] \
            and a["assigned"] | b["assigned"] == set(range(PARTITIONS))

    started = time.time()
    wait_until(lambda: split() and {**a["seen"], **b["seen"]} == sent, timeout_s=6 * TIMEOUT_S)
    took = time.time() - started
    stop.set()
    for t in threads:
        t.join()
    check(split(), f"two members split the partitions ({sorted(a['assigned'])} / {sorted(b['assigned'])}, {took:.1f} s)")
    check({**a["seen"], **b["seen"]} == sent, f"the group read every record ({len(a['seen']) + len(b['seen'])})")

    late = produce(TOPIC, records("late", 10))
    c = Consumer(conf)
    c.subscribe([TOPIC])
    again = drain(c, len(late), timeout_s=4 * TIMEOUT_S)
    check(again == late, f"a new member resumes from the committed offsets ({len(again)} read, {len(late)} new)")
    committed = c.committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=TIMEOUT_S)
    check(sum(tp.offset for tp in committed) == len(sent),
          f"committed offsets cover what the group read ({[tp.offset for tp in committed]})")
    c.close()


def idempotence_checks(admin):
    create(admin, "ck-in", 3)
    acked = produce("ck-in", [(f"k{i % 7}", f"v{i}") for i in range(RECORDS)],
                    **{"enable.idempotence": True, "compression.type": "lz4"})
    check(len(acked) == RECORDS, f"idempotent producer: every record at its own offset ({len(acked)})")
    check(read_assigned("ck-in", range(3), RECORDS) == acked, "idempotent producer: assign+seek reads them back")


def transform_loop(admin):
    """Copies ck-in to ck-out, upper-casing values, one transaction per batch of input."""
    create(admin, "ck-out", 3)
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
        batch = consumer.consume(num_messages=20, timeout=0.5)
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

    committed = read_back("read_committed", RECORDS + 1, TIMEOUT_S / 3)
    check(sorted(v for _, v in committed.values()) == sorted(f"V{i}" for i in range(RECORDS)),
          f"read_committed sees each output exactly once, none of the aborted batch ({len(committed)} read)")
    dirty = read_back("read_uncommitted", RECORDS + 1, 2 * TIMEOUT_S)
    check(len(dirty) > RECORDS, f"read_uncommitted also sees the aborted batch ({len(dirty)} read)")


def read_back(isolation, want, timeout_s):
    """Reads ck-out from the start at `isolation`."""
    reader = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"ck-verify-{isolation}",
                       "enable.auto.commit": False, "isolation.level": isolation})
    reader.assign([TopicPartition("ck-out", p, 0) for p in range(3)])
    got = drain(reader, want, timeout_s=timeout_s)
    reader.close()
    return got


def main():
    print(f"confluent-kafka {confluent_kafka.version()}, librdkafka {confluent_kafka.libversion()}", flush=True)
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    admin_checks(admin)
    sent = producer_checks()
    got = read_assigned(TOPIC, range(PARTITIONS), len(sent))
    check(got == sent, f"assign+seek reads every record back at its offset ({len(got)} of {len(sent)})")
    offset_queries(sent)
    group_checks(sent)
    idempotence_checks(admin)
    transform_loop(admin)
    print("confluent-kafka: all checks passed", flush=True)


if __name__ == "__main__":
    main()
