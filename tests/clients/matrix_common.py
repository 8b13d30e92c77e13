"""What the client scripts of tests/client_matrix.rs share: checks, skips and the records.

A check that fails exits non-zero with "FAILED: ...". A step that a client cannot do, or that
the broker does not serve yet, prints "skip: STEP: REASON" so that the test's output says it.
"""

import time

TIMEOUT_S = 15
# Records per codec, per partition count; small, for CI's time.
RECORDS = 20
CODECS = ["gzip", "snappy", "lz4", "zstd"]


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}", flush=True)


def skip(step, reason):
    print(f"skip: {step}: {reason}", flush=True)


def records(tag, n=RECORDS):
    """The (key, value) pairs that the step `tag` sends."""
    return [(f"{tag}-k{i % 5}", f"{tag}-v{i}") for i in range(n)]


def wait_until(cond, timeout_s=TIMEOUT_S):
    deadline = time.time() + timeout_s
    while not cond() and time.time() < deadline:
        time.sleep(0.1)
    return cond()
