"""kcat (librdkafka), unmodified, against a Weir broker that creates topics on first use:
metadata, every codec at acks=all, consume at an offset, a balanced-consumer group of two that
split the partitions and commit, the idempotent producer, and transactions (one committed, one
aborted when its producer died). kcat has no admin commands; that step says that it skips.

Usage: python3 kcat_clients.py BOOTSTRAP (no packages needed). Exits non-zero at the first
failed check.
"""

import json
import shutil
import signal
import subprocess
import sys
import threading
import time

from matrix_common import CODECS, TIMEOUT_S, check, records, skip, wait_until

BOOTSTRAP = sys.argv[1]
TOPIC = "kc-orders"
# The broker's --default-partitions.
PARTITIONS = 2
FORMAT = "%p %o %k %s\\n"


def kcat(*args, stdin=None):
    out = subprocess.run(["kcat", "-b", BOOTSTRAP, *args], input=stdin, capture_output=True, text=True,
                         timeout=3 * TIMEOUT_S)
    check(out.returncode == 0, f"kcat {' '.join(args)} exits 0 ({out.stderr.strip()[-500:]})")
    return out.stdout


def parse(lines):
    """{(partition, offset): (key, value)} from lines in FORMAT."""
    got = {}
    for line in lines:
        p, o, k, v = line.split(" ")
        got[(int(p), int(o))] = (k, v)
    return got


def produce(topic, partition, pairs, *config):
    """Sends `pairs` to one partition; returns nothing, kcat exits non-zero on a failed delivery."""
    kcat("-P", "-t", topic, "-p", str(partition), "-K", ":", "-X", "acks=all", *config,
         stdin="".join(f"{k}:{v}\n" for k, v in pairs))


def read_partition(topic, partition, start="beginning", *extra):
    out = kcat("-C", "-t", topic, "-p", str(partition), "-o", str(start), "-e", "-f", FORMAT, *extra)
    return parse(out.splitlines())


def produce_checks():
    """Each codec's records go half to partition 0, half to 1; returns what each holds."""
    sent = {}
    next_offset = [0] * PARTITIONS
    for codec in CODECS + ["none"]:
        pairs = records(f"codec-{codec}")
        for p in range(PARTITIONS):
            mine = pairs[p::PARTITIONS]
            produce(TOPIC, p, mine, "-z", codec)
            for k, v in mine:
                sent[(p, next_offset[p])] = (k, v)
                next_offset[p] += 1
        print(f"ok: {codec}: produced {len(pairs)} records at acks=all", flush=True)
    return sent


def metadata_checks():
    md = json.loads(kcat("-L", "-J"))
    names = {t["topic"]: len(t["partitions"]) for t in md["topics"]}
    check(names.get(TOPIC) == PARTITIONS, f"metadata lists {TOPIC} with {PARTITIONS} partitions ({names})")
    skip("admin create/describe configs/delete", "kcat has no admin commands; the broker auto-creates topics")


class Member:
    """A `kcat -G` balanced consumer whose records and rebalance lines are collected."""

    def __init__(self, group):
        self.proc = subprocess.Popen(
            ["kcat", "-b", BOOTSTRAP, "-u", "-G", group, TOPIC, "-f", FORMAT, "-X", "auto.offset.reset=earliest",
             "-X", "enable.auto.commit=true", "-X", "auto.commit.interval.ms=100",
             "-X", "heartbeat.interval.ms=500", "-X", "session.timeout.ms=10000"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines, self.log = [], []
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.log), daemon=True).start()

    @staticmethod
    def _read(stream, into):
        for line in stream:
            into.append(line.rstrip("\n"))

    def seen(self):
        return parse(list(self.lines))

    def assigned(self):
        """The partitions of the last 'assigned:' rebalance line kcat printed."""
        last = [line for line in self.log if "assigned:" in line]
        if not last:
            return set()
        return {int(word.strip("[]")) for word in last[-1].split("assigned:")[1].split() if word.strip("[]").isdigit()}

    def stop(self):
        """SIGTERM: kcat commits what it read and leaves the group."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=TIMEOUT_S)


def group_checks(sent):
    a, b = Member("kc-group"), Member("kc-group")

    def split():
        pa, pb = a.assigned(), b.assigned()
        return pa and pb and not pa & pb and pa | pb == set(range(PARTITIONS))

    started = time.time()
    wait_until(lambda: split() and {**a.seen(), **b.seen()} == sent, timeout_s=6 * TIMEOUT_S)
    took = time.time() - started
    # Let the auto-commit (every 100 ms) catch up before the members leave.
    time.sleep(0.5)
    a.stop()
    b.stop()
    logs = "" if split() else f"\n{a.log[-5:]}\n{b.log[-5:]}"
    check(split(), f"two members split the partitions ({sorted(a.assigned())} / {sorted(b.assigned())}, {took:.1f} s){logs}")
    check({**a.seen(), **b.seen()} == sent, f"the group read every record ({len(a.seen())} + {len(b.seen())})")

    late = records("late", 2 * PARTITIONS)
    want = {}
    for p in range(PARTITIONS):
        end = max(o for q, o in sent if q == p) + 1
        produce(TOPIC, p, late[p::PARTITIONS])
        want.update({(p, end + i): kv for i, kv in enumerate(late[p::PARTITIONS])})
    c = Member("kc-group")
    wait_until(lambda: len(c.seen()) >= len(want), timeout_s=4 * TIMEOUT_S)
    time.sleep(0.5)
    c.stop()
    check(c.seen() == want, f"a new member resumes from the committed offsets ({len(c.seen())} read, {len(want)} new)")


def transaction_checks():
    """`kcat -P -X transactional.id=..` commits when its input ends. Its SIGINT abort does not
    happen while it is blocked reading input (kcat 1.7.1 exits with "Program terminated while
    producing"), so the aborted transaction here is one whose producer died: the broker aborts
    it when the next producer with the same transactional.id initialises, as Kafka does."""
    txn = ["-X", "transactional.id=kc-txn-0"]
    produce("kc-txn", 0, records("committed", 5), *txn)
    aborting = subprocess.Popen(["kcat", "-b", BOOTSTRAP, "-P", "-t", "kc-txn", "-p", "0", "-K", ":", *txn],
                                stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # kcat reads its input in blocks of some kilobytes: the filler records (64 KiB) push the
    # aborted ones through.
    aborting.stdin.write("".join(f"{k}:{v}\n" for k, v in records("aborted", 5)))
    aborting.stdin.write("".join(f"filler:{i:01000}\n" for i in range(64)))
    aborting.stdin.flush()
    uncommitted = ("-X", "isolation.level=read_uncommitted")

    def aborted_in_log():
        values = [v for _, v in read_partition("kc-txn", 0, "beginning", *uncommitted).values()]
        return all(v in values for _, v in records("aborted", 5))

    check(wait_until(aborted_in_log), "transactions: the open transaction's records reach the log")
    # kcat notices SIGINT once its blocked read of stdin returns, and exits.
    aborting.send_signal(signal.SIGINT)
    aborting.stdin.close()
    aborting.wait(timeout=TIMEOUT_S)
    print(f"the transactional kcat stopped: {aborting.stderr.read().strip()!r}", flush=True)
    produce("kc-txn", 0, records("sentinel", 1), *txn)
    committed = [v for _, v in records("committed", 5) + records("sentinel", 1)]
    every = [v for _, v in records("committed", 5) + records("aborted", 5) + records("sentinel", 1)]
    for isolation, want in [("read_committed", committed), ("read_uncommitted", every)]:
        got = read_partition("kc-txn", 0, "beginning", "-X", f"isolation.level={isolation}")
        values = [v for _, (k, v) in sorted(got.items()) if isolation == "read_committed" or k != "filler"]
        check(values == want, f"transactions: {isolation} reads {len(want)} records in order ({values})")


def offset_queries(sent):
    """`kcat -Q`: ListOffsets for the latest (-1), the earliest (-2) and by timestamp, one
    query per run (kcat merges queries of one partition)."""
    hour = int(time.time() * 1000) + 3_600_000
    for p in range(PARTITIONS):
        end = sum(1 for q, _ in sent if q == p)
        for ts, want in [(-1, end), (-2, 0), (0, 0), (hour, -1)]:
            got = json.loads(kcat("-Q", "-J", "-t", f"{TOPIC}:{p}:{ts}"))[TOPIC][str(p)]["offset"]
            check(got == want, f"partition {p}: the offset for timestamp {ts} is {want} ({got})")


def main():
    if shutil.which("kcat") is None:
        raise SystemExit("FAILED: kcat is not installed (.ci/run installs Debian's: apt-get install kcat)")
    about = subprocess.run(["kcat", "-V"], capture_output=True, text=True).stdout.splitlines()
    print("kcat", *[line.strip() for line in about if line.startswith("Version")], flush=True)
    sent = produce_checks()
    metadata_checks()
    got = {}
    for p in range(PARTITIONS):
        got.update(read_partition(TOPIC, p))
    check(got == sent, f"consume each partition from the beginning: every record at its offset ({len(got)})")
    mid = read_partition(TOPIC, 1, 5, "-c", "3")
    check(mid == {(1, o): sent[(1, o)] for o in (5, 6, 7)}, f"consume from offset 5 reads offsets 5, 6, 7 ({mid})")
    offset_queries(sent)
    group_checks(sent)
    pairs = records("idem")
    produce("kc-idem", 0, pairs, "-X", "enable.idempotence=true")
    got = read_partition("kc-idem", 0)
    check(got == {(0, i): kv for i, kv in enumerate(pairs)}, f"idempotent producer: every record once ({len(got)})")
    transaction_checks()
    print("kcat: all checks passed", flush=True)


if __name__ == "__main__":
    main()
