"""Orders written the way a user's existing order producer writes them, with kafka-python:
text ids such as "ORD-12345", `timestamp` as float seconds, the record timestamp as event time,
acks=all with retries and five requests in flight, keyed by customer.

Usage: python seed_order_producer.py BOOTSTRAP EXPECTED_JSON END_MARKER

Writes ORDERS orders over MINUTES minutes of event time to a PARTITIONS-partition `orders`
topic, then END_MARKER once to every partition. It computes, on its own and without Weir, what
`weir job order-aggregates` must write: per customer and 5-minute window, the count and total of
the orders above 100.00, and saves it to EXPECTED_JSON as a list of output values.
"""

import json
import random
import sys

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

BOOTSTRAP, EXPECTED_PATH, END_MARKER = sys.argv[1], sys.argv[2], sys.argv[3]
ORDERS = 5_000
CUSTOMERS = 10
MINUTES = 40
PARTITIONS = 4
WINDOW_MS = 5 * 60 * 1000
# Event time starts here, in seconds since the epoch (2023-11-14), at a window boundary.
START_S = 1_700_000_100.0
# Each order's time trails the latest by at most this: below the job's 5 s out-of-orderness.
JITTER_S = 2.0
TIMEOUT_S = 30


def orders(rng):
    """(key, value, record timestamp in ms) of each order, in the order they are sent."""
    span_s = MINUTES * 60.0
    for i in range(ORDERS):
        ts = START_S + span_s * i / ORDERS - rng.uniform(0.0, JITTER_S)
        ts = max(ts, START_S)
        customer = f"CUST-{rng.randrange(CUSTOMERS) + 1}"
        items = [
            {"product_id": f"PROD-{rng.randrange(100)}", "quantity": rng.randrange(1, 4),
             "price": round(rng.uniform(5.0, 200.0), 2)}
            for _ in range(rng.randrange(1, 4))
        ]
        order = {
            "order_id": f"ORD-{rng.randrange(10_000, 100_000)}",
            "customer_id": customer,
            "items": items,
            "total_amount": round(rng.uniform(10.0, 400.0), 2),
            "status": "created",
            "timestamp": ts,
        }
        yield customer, order, int(ts * 1000)


def main():
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    admin.create_topics([NewTopic("orders", num_partitions=PARTITIONS, replication_factor=1)])
    admin.close()

    producer = KafkaProducer(
        bootstrap_servers=BOOTSTRAP,
        acks="all",
        retries=3,
        max_in_flight_requests_per_connection=5,
        linger_ms=5,
        key_serializer=lambda k: k.encode(),
        value_serializer=lambda v: json.dumps(v).encode(),
    )
    windows = {}
    for key, order, ts_ms in orders(random.Random(7)):
        producer.send("orders", key=key, value=order, timestamp_ms=ts_ms)
        cents = round(order["total_amount"] * 100)
        if cents > 10_000:
            end = ts_ms // WINDOW_MS * WINDOW_MS + WINDOW_MS
            count, total = windows.get((key, end), (0, 0))
            windows[(key, end)] = (count + 1, total + cents)
    producer.flush(timeout=TIMEOUT_S)
    # The end marker is not JSON: a raw producer writes it to each partition.
    raw = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    for p in range(PARTITIONS):
        raw.send("orders", value=END_MARKER.encode(), partition=p, timestamp_ms=int(START_S * 1000))
    raw.flush(timeout=TIMEOUT_S)
    producer.close(timeout=TIMEOUT_S)
    raw.close(timeout=TIMEOUT_S)

    expected = [
        {"customer_id": c, "window_end": end, "count": n, "total": cents / 100}
        for (c, end), (n, cents) in sorted(windows.items())
    ]
    with open(EXPECTED_PATH, "w") as f:
        json.dump(expected, f)
    print(f"seed producer: {ORDERS} orders sent, {len(expected)} windows expected", flush=True)


main()
