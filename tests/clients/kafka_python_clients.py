"""kafka-python, unmodified, against a Weir broker: admin, every codec at acks=all, assign and
seek, a group of two that split the partitions and commit, the idempotent producer, and
transactions. Runs with kafka-python 2.0.2 to 3.x; a step the version lacks says it skips.

Usage: python kafka_python_clients.py BOOTSTRAP. Exits non-zero at the first failed check.
"""

import sys
import threading
import time

import kafka
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
from kafka.errors import IncompatibleBrokerVersion, TopicAlreadyExistsError, UnsupportedVersionError

from matrix_common import CODECS, TIMEOUT_S, check, records, skip, wait_until

BOOTSTRAP = sys.argv[1]
TOPIC = "kp-orders"
PARTITIONS = 4
# Members heartbeat often so that a rebalance reaches them quickly.
GROUP = dict(heartbeat_interval_ms=500, session_timeout_ms=10_000)


def admin_checks(admin):
    configs = {"retention.ms": "3600000", "compression.type": "producer", "min.insync.replicas": "1"}
    admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=1, topic_configs=configs)])
    check(TOPIC in admin.list_topics(), "create_topics with configs, then list_topics shows it")
    try:
        admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=1)])
        check(False, "a second create_topics raises TopicAlreadyExistsError")
    except TopicAlreadyExistsError:
        check(True, "a second create_topics raises TopicAlreadyExistsError")
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, TOPIC)])
        check("retention.ms" in str(described), f"describe_configs shows retention.ms ({described})")
    except (IncompatibleBrokerVersion, UnsupportedVersionError) as e:
        skip("describe_configs", f"broker gap (issue 21 item 2): no DescribeConfigs API: {e!r}")
    admin.create_topics([NewTopic("kp-scratch", num_partitions=1, replication_factor=1)])
    admin.delete_topics(["kp-scratch"])
    check(wait_until(lambda: "kp-scratch" not in admin.list_topics()), "delete_topics removes the topic")


def produce(topic, pairs, **config):
    """Sends `pairs` and returns {(partition, offset): (key, value)} from the acks."""
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=10, **config)
    futures = [(k, v, producer.send(topic, key=k.encode(), value=v.encode())) for k, v in pairs]
    producer.flush(timeout=TIMEOUT_S)
    acked = {}
    for k, v, f in futures:
        md = f.get(timeout=TIMEOUT_S)
        acked[(md.partition, md.offset)] = (k, v)
    producer.close(timeout=TIMEOUT_S)
    return acked


def producer_checks():
    sent = {}
    for codec in CODECS + [None]:
        acked = produce(TOPIC, records(f"codec-{codec}"), compression_type=codec)
        check(len(acked) == len(records("x")) and not set(acked) & set(sent),
              f"{codec}: acks=all acknowledges every record at its own offset ({len(acked)})")
        sent.update(acked)
    return sent


def read_assigned(topic, partitions, want, **config):
    """Assigns `partitions` of `topic`, seeks to offset 0 and reads until `want` records
    arrived or the time is up; returns {(partition, offset): (key, value)}."""
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False, **config)
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, 0)
    got = {}
    deadline = time.time() + 2 * TIMEOUT_S
    while len(got) < want and time.time() < deadline:
        for tp, msgs in consumer.poll(timeout_ms=200).items():
            for m in msgs:
                got[(m.partition, m.offset)] = (m.key.decode(), m.value.decode())
    consumer.close()
    return got


def offset_queries(sent):
    """ListOffsets: the earliest and latest offsets and the offsets of timestamps."""
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)
    tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
    ends = {tp: sum(1 for p, _ in sent if p == tp.partition) for tp in tps}
    check(consumer.beginning_offsets(tps) == {tp: 0 for tp in tps}, "beginning_offsets are 0")
    check(consumer.end_offsets(tps) == ends, f"end_offsets count each partition's records ({ends})")
    first = consumer.offsets_for_times({tp: 0 for tp in tps})
    check({tp: o.offset for tp, o in first.items()} == {tp: 0 for tp in tps}, "offsets_for_times(0) is offset 0")
    future = consumer.offsets_for_times({tp: int(time.time() * 1000) + 3_600_000 for tp in tps})
    check(all(o is None for o in future.values()), f"offsets_for_times(in an hour) finds none ({future})")
    consumer.close()


def group_checks(sent):
    """Two members split the partitions, read everything and commit; a third member of the
    group then reads only what came after."""
    stop = threading.Event()
    members = [{"seen": {}, "assigned": set()} for _ in range(2)]

    def member(state):
        c = KafkaConsumer(TOPIC, bootstrap_servers=BOOTSTRAP, group_id="kp-group", auto_offset_reset="earliest",
                          enable_auto_commit=False, **GROUP)
        while not stop.is_set():
            for tp, msgs in c.poll(timeout_ms=200).items():
                for m in msgs:
                    state["seen"][(m.partition, m.offset)] = (m.key.decode(), m.value.decode())
            state["assigned"] = {tp.partition for tp in c.assignment()}
        c.commit()
        c.close(autocommit=False)

    threads = [threading.Thread(target=member, args=(m,)) for m in members]
    for t in threads:
        t.start()
    a, b = members

    def done():
        split = a["assigned"] and b["assigned"] and not a["assigned"] & b["assigned"]
        return split and a["assigned"] | b["assigned"] == set(range(PARTITIONS)) and \
            {**a["seen"], **b["seen"]} == sent

    started = time.time()
    wait_until(done, timeout_s=6 * TIMEOUT_S)
    took = time.time() - started
    stop.set()
    for t in threads:
        t.join()
    check(a["assigned"] and b["assigned"] and not a["assigned"] & b["assigned"]
          and a["assigned"] | b["assigned"] == set(range(PARTITIONS)),
          f"two members split the partitions ({sorted(a['assigned'])} / {sorted(b['assigned'])}, {took:.1f} s)")
    check({**a["seen"], **b["seen"]} == sent, f"the group read every record ({len(a['seen']) + len(b['seen'])})")

    late = produce(TOPIC, records("late", 10))
    c = KafkaConsumer(TOPIC, bootstrap_servers=BOOTSTRAP, group_id="kp-group", auto_offset_reset="earliest",
                      enable_auto_commit=False, **GROUP)
    again = {}
    deadline = time.time() + 4 * TIMEOUT_S
    while len(again) < len(late) and time.time() < deadline:
        for tp, msgs in c.poll(timeout_ms=200).items():
            for m in msgs:
                again[(m.partition, m.offset)] = (m.key.decode(), m.value.decode())
    check(again == late, f"a new member resumes from the committed offsets ({len(again)} read, {len(late)} new)")
    committed = {p: c.committed(TopicPartition(TOPIC, p)) for p in range(PARTITIONS)}
    check(sum(committed.values()) == len(sent), f"committed offsets cover what the group read: {committed}")
    c.close(autocommit=False)


def idempotence_checks(admin):
    if "enable_idempotence" not in KafkaProducer.DEFAULT_CONFIG:
        skip("idempotent producer", f"kafka-python {kafka.__version__} has no enable_idempotence")
        return
    admin.create_topics([NewTopic("kp-idem", num_partitions=2, replication_factor=1)])
    acked = produce("kp-idem", records("idem"), enable_idempotence=True)
    check(len(acked) == len(records("idem")), f"idempotent producer: every record acked once ({len(acked)})")
    check(read_assigned("kp-idem", [0, 1], len(acked)) == acked, "idempotent producer: assign+seek reads them back")


def transaction_checks(admin):
    if "transactional_id" not in KafkaProducer.DEFAULT_CONFIG:
        skip("transactions", f"kafka-python {kafka.__version__} has no transactional producer")
        return
    admin.create_topics([NewTopic("kp-txn", num_partitions=1, replication_factor=1)])
    p = KafkaProducer(bootstrap_servers=BOOTSTRAP, transactional_id="kp-txn-0", acks="all")
    p.init_transactions()
    for tag, end in [("committed", p.commit_transaction), ("aborted", p.abort_transaction),
                     ("sentinel", p.commit_transaction)]:
        p.begin_transaction()
        for k, v in records(tag, 5 if tag != "sentinel" else 1):
            p.send("kp-txn", key=k.encode(), value=v.encode())
        p.flush(timeout=TIMEOUT_S)
        end()
    p.close(timeout=TIMEOUT_S)
    committed = [v for _, v in records("committed", 5) + records("sentinel", 1)]
    every = [v for _, v in records("committed", 5) + records("aborted", 5) + records("sentinel", 1)]
    for isolation, want in [("read_committed", committed), ("read_uncommitted", every)]:
        got = read_assigned("kp-txn", [0], len(want), isolation_level=isolation)
        values = [v for _, (_, v) in sorted(got.items())]
        check(values == want, f"transactions: {isolation} reads {len(want)} records in order ({values})")


def main():
    print(f"kafka-python {kafka.__version__}", flush=True)
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=TIMEOUT_S * 1000)
    admin_checks(admin)
    sent = producer_checks()
    got = read_assigned(TOPIC, range(PARTITIONS), len(sent))
    check(got == sent, f"assign+seek reads every record back at its offset ({len(got)} of {len(sent)})")
    offset_queries(sent)
    group_checks(sent)
    idempotence_checks(admin)
    transaction_checks(admin)
    admin.close()
    print("kafka-python: all checks passed", flush=True)


if __name__ == "__main__":
    main()
