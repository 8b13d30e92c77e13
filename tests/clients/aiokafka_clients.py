"""aiokafka, unmodified, against a Weir broker: admin, every codec at acks=all, assign and
seek, a group of two that split the partitions and commit, the idempotent producer, and
transactions. Runs with aiokafka 0.8 (on kafka-python) to 0.14.

Usage: python aiokafka_clients.py BOOTSTRAP. Exits non-zero at the first failed check.
"""

import asyncio
import sys
import time

import aiokafka
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

try:  # aiokafka >= 0.11 has its own admin types and errors.
    from aiokafka.admin import NewTopic
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
    from aiokafka.errors import IncompatibleBrokerVersion, UnsupportedVersionError
except ImportError:  # aiokafka 0.8 to 0.10 reuse kafka-python's.
    from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
    from kafka.errors import IncompatibleBrokerVersion, UnsupportedVersionError

from matrix_common import CODECS, TIMEOUT_S, check, records, skip

BOOTSTRAP = sys.argv[1]
TOPIC = "ak-orders"
PARTITIONS = 4
GROUP = dict(heartbeat_interval_ms=500, session_timeout_ms=10_000)


async def topics(admin):
    return set(await admin.list_topics())


async def admin_checks(admin):
    await admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=1),
                               NewTopic("ak-scratch", num_partitions=1, replication_factor=1),
                               NewTopic("ak-idem", num_partitions=2, replication_factor=1),
                               NewTopic("ak-txn", num_partitions=1, replication_factor=1)])
    check({TOPIC, "ak-scratch"} <= await topics(admin), "create_topics, then list_topics shows them")
    try:
        described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, TOPIC)])
        check("retention.ms" in str(described), f"describe_configs shows retention.ms ({described})")
    except (IncompatibleBrokerVersion, UnsupportedVersionError) as e:
        skip("describe_configs", f"broker gap (issue 21 item 2): no DescribeConfigs API: {e!r}")
    await admin.delete_topics(["ak-scratch"])
    deadline = time.time() + TIMEOUT_S
    while "ak-scratch" in await topics(admin) and time.time() < deadline:
        await asyncio.sleep(0.1)
    check("ak-scratch" not in await topics(admin), "delete_topics removes the topic")


async def produce(topic, pairs, **config):
    """Sends `pairs` and returns {(partition, offset): (key, value)} from the acks."""
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=10, **config)
    await producer.start()
    try:
        futures = [(k, v, await producer.send(topic, key=k.encode(), value=v.encode())) for k, v in pairs]
        acked = {}
        for k, v, f in futures:
            md = await asyncio.wait_for(f, TIMEOUT_S)
            acked[(md.partition, md.offset)] = (k, v)
        return acked
    finally:
        await producer.stop()


async def drain(consumer, want, timeout_s=2 * TIMEOUT_S, stop=None):
    """Reads until `want` records arrived, `stop` is set, or the time is up."""
    got = {}
    deadline = time.time() + timeout_s
    while len(got) < want and time.time() < deadline and not (stop and stop.is_set()):
        for tp, msgs in (await consumer.getmany(timeout_ms=200)).items():
            for m in msgs:
                got[(m.partition, m.offset)] = (m.key.decode(), m.value.decode())
    return got


async def read_assigned(topic, partitions, want, **config):
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False, **config)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        return await drain(consumer, want)
    finally:
        await consumer.stop()


async def producer_checks():
    sent = {}
    for codec in CODECS + [None]:
        acked = await produce(TOPIC, records(f"codec-{codec}"), compression_type=codec)
        check(len(acked) == len(records("x")) and not set(acked) & set(sent),
              f"{codec}: acks=all acknowledges every record at its own offset ({len(acked)})")
        sent.update(acked)
    return sent


async def offset_queries(sent):
    """ListOffsets: the earliest and latest offsets and the offsets of timestamps."""
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)
    await consumer.start()
    tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
    ends = {tp: sum(1 for p, _ in sent if p == tp.partition) for tp in tps}
    check(await consumer.beginning_offsets(tps) == {tp: 0 for tp in tps}, "beginning_offsets are 0")
    check(await consumer.end_offsets(tps) == ends, f"end_offsets count each partition's records ({ends})")
    first = await consumer.offsets_for_times({tp: 0 for tp in tps})
    check({tp: o.offset for tp, o in first.items()} == {tp: 0 for tp in tps}, "offsets_for_times(0) is offset 0")
    future = await consumer.offsets_for_times({tp: int(time.time() * 1000) + 3_600_000 for tp in tps})
    check(all(o is None for o in future.values()), f"offsets_for_times(in an hour) finds none ({future})")
    await consumer.stop()


async def group_checks(sent):
    stop = asyncio.Event()
    members = [{"seen": {}, "assigned": set()} for _ in range(2)]

    async def member(state):
        c = AIOKafkaConsumer(TOPIC, bootstrap_servers=BOOTSTRAP, group_id="ak-group",
                             auto_offset_reset="earliest", enable_auto_commit=False, **GROUP)
        await c.start()
        while not stop.is_set():
            state["seen"].update(await drain(c, 1, timeout_s=0.2))
            state["assigned"] = {tp.partition for tp in c.assignment()}
        await c.commit()
        await c.stop()

    tasks = [asyncio.create_task(member(m)) for m in members]
    a, b = members

    def split():
        return a["assigned"] and b["assigned"] and not a["assigned"] & b["assigned"] \
            and a["assigned"] | b["assigned"] == set(range(PARTITIONS))

    started = time.time()
    while not (split() and {**a["seen"], **b["seen"]} == sent) and time.time() < started + 6 * TIMEOUT_S:
        await asyncio.sleep(0.1)
    took = time.time() - started
    stop.set()
    await asyncio.gather(*tasks)
    check(split(), f"two members split the partitions ({sorted(a['assigned'])} / {sorted(b['assigned'])}, {took:.1f} s)")
    check({**a["seen"], **b["seen"]} == sent, f"the group read every record ({len(a['seen']) + len(b['seen'])})")

    late = await produce(TOPIC, records("late", 10))
    c = AIOKafkaConsumer(TOPIC, bootstrap_servers=BOOTSTRAP, group_id="ak-group", auto_offset_reset="earliest",
                         enable_auto_commit=False, **GROUP)
    await c.start()
    again = await drain(c, len(late), timeout_s=4 * TIMEOUT_S)
    check(again == late, f"a new member resumes from the committed offsets ({len(again)} read, {len(late)} new)")
    committed = {p: await c.committed(TopicPartition(TOPIC, p)) for p in range(PARTITIONS)}
    check(sum(committed.values()) == len(sent), f"committed offsets cover what the group read: {committed}")
    await c.stop()


async def idempotence_checks():
    acked = await produce("ak-idem", records("idem"), enable_idempotence=True)
    check(len(acked) == len(records("idem")), f"idempotent producer: every record acked once ({len(acked)})")
    check(await read_assigned("ak-idem", [0, 1], len(acked)) == acked, "idempotent producer: assign+seek reads them back")


async def transaction_checks():
    p = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, transactional_id="ak-txn-0")
    await p.start()
    for tag, n, commit in [("committed", 5, True), ("aborted", 5, False), ("sentinel", 1, True)]:
        await p.begin_transaction()
        for k, v in records(tag, n):
            await p.send("ak-txn", key=k.encode(), value=v.encode())
        await p.flush()
        await (p.commit_transaction() if commit else p.abort_transaction())
    await p.stop()
    committed = [v for _, v in records("committed", 5) + records("sentinel", 1)]
    every = [v for _, v in records("committed", 5) + records("aborted", 5) + records("sentinel", 1)]
    for isolation, want in [("read_committed", committed), ("read_uncommitted", every)]:
        got = await read_assigned("ak-txn", [0], len(want), isolation_level=isolation)
        values = [v for _, (_, v) in sorted(got.items())]
        check(values == want, f"transactions: {isolation} reads {len(want)} records in order ({values})")


async def main():
    print(f"aiokafka {aiokafka.__version__}", flush=True)
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=TIMEOUT_S * 1000)
    await admin.start()
    await admin_checks(admin)
    sent = await producer_checks()
    got = await read_assigned(TOPIC, range(PARTITIONS), len(sent))
    check(got == sent, f"assign+seek reads every record back at its offset ({len(got)} of {len(sent)})")
    await offset_queries(sent)
    await group_checks(sent)
    await idempotence_checks()
    await transaction_checks()
    await admin.close()
    print("aiokafka: all checks passed", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
