#!/usr/bin/env bash
# The Flink peer run: Apache Flink (PyFlink, local mini-cluster, parallelism 1) and Weir's
# stream engine (one core) run the same keyed 5-minute tumbling-window count and sum over the
# same pre-generated CSV file of orders, in the same run. It writes both throughputs and their
# ratio to reports/flink-peer.md (and the raw figures to target/peers/flink-peer.json).
#
# Flink's startup (JVM, planning, mini-cluster) is reported apart from its job's own runtime.
# Run it on an idle machine: a concurrent build slows either engine. It is not part of CI.
#
# Usage: benches/peers/flink.sh                  (from anywhere)
# Env:   EVENTS=10000000  KEYS=10000  SEED=1  OUT_OF_ORDERNESS_MS=1000
#        FLINK_VERSION=2.3.0                     the apache-flink wheel from pip
#        WEIR=path/to/weir                       a built weir (else cargo builds --release)
#
# When Java 17+ or pip is missing, or PyFlink cannot be installed, it says so and exits 0
# without writing any figure.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
peers="$root/target/peers"
mkdir -p "$peers"
events="${EVENTS:-10000000}"
keys="${KEYS:-10000}"
seed="${SEED:-1}"
disorder_ms="${OUT_OF_ORDERNESS_MS:-1000}"
flink_version="${FLINK_VERSION:-2.3.0}"

skip() {
  echo "flink peer: skipped: $*" >&2
  exit 0
}

command -v java >/dev/null 2>&1 || skip "no java on PATH (Flink needs Java 17)"
java_major="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1)"
[ -n "$java_major" ] && [ "$java_major" -ge 17 ] || skip "java is version '${java_major:-unknown}', Flink needs 17 or newer"
command -v python3 >/dev/null 2>&1 || skip "no python3 on PATH"

venv="$peers/flink-venv-$flink_version"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" || skip "python3 cannot make a venv (apt install python3-venv)"
fi
if ! "$venv/bin/python" -c "import pyflink" >/dev/null 2>&1; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check "apache-flink==$flink_version" \
    || skip "pip could not install apache-flink==$flink_version"
fi

if [ -z "${WEIR:-}" ]; then
  (cd "$root" && cargo build --release --quiet -p weir)
  WEIR="${CARGO_TARGET_DIR:-$root/target}/release/weir"
fi

csv="$peers/orders-$events-$keys-$seed-$disorder_ms.csv"
if [ ! -s "$csv" ]; then
  "$WEIR" bench orders-csv --out "$csv.tmp" --events "$events" --keys "$keys" --seed "$seed" \
    --out-of-orderness-ms "$disorder_ms"
  mv "$csv.tmp" "$csv"
fi

echo "flink peer: Flink $flink_version on $csv" >&2
flink_json="$("$venv/bin/python" "$root/benches/peers/flink_window.py" "$csv" "$disorder_ms")"
echo "flink peer: Weir on $csv" >&2
weir_json="$("$WEIR" bench window-csv --input "$csv" --out-of-orderness-ms "$disorder_ms")"

machine="$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)"
java_version="$(java -version 2>&1 | head -n 1)"
"$venv/bin/python" - "$flink_json" "$weir_json" "$peers/flink-peer.json" "$root/reports/flink-peer.md" \
  "$events" "$keys" "$seed" "$disorder_ms" "$flink_version" "$machine" "$java_version" <<'PY'
import datetime, json, sys
flink, weir = json.loads(sys.argv[1]), json.loads(sys.argv[2])
raw, report = sys.argv[3], sys.argv[4]
events, keys, seed, disorder, version, machine, java = sys.argv[5:12]
ratio = weir["events_per_s"] / flink["events_per_s"]
same = flink["windows"] == weir["windows"] and flink["events"] == weir["events"]
json.dump({"flink": flink, "weir": weir, "weir_over_flink": ratio}, open(raw, "w"), indent=2)
date = datetime.date.today().isoformat()
def m(x): return f"{x / 1e6:.2f} M"
lines = [
    "# Flink peer: the same windowed job on Apache Flink and on Weir",
    "",
    f"Command: `EVENTS={events} benches/peers/flink.sh`. Date: {date}. Machine: {machine}; {java}.",
    "",
    f"The job: a keyed count and sum of `total_amount` per `customer_id` in 5-minute tumbling",
    f"event-time windows, with the watermark {disorder} ms behind the largest event time seen.",
    f"The input: one CSV file of {int(events):,} orders over {int(keys):,} customers (uniform), event",
    f"times up to {disorder} ms out of order, written by `weir bench orders-csv --seed {seed}`. Both",
    "engines read that file and parse it. Flink: PyFlink " + version + ", Flink SQL, filesystem",
    "source, blackhole sink, local mini-cluster, parallelism 1, session time zone UTC. Weir: the",
    "stream engine on one core (`weir bench window-csv`), a sink that counts windows and keeps none.",
    "",
    "| engine | events | windows | job runtime | events/s | startup |",
    "| --- | --- | --- | --- | --- | --- |",
    f"| Flink {version} | {flink['events']:,} | {flink['windows']:,} | {flink['job_s']:.1f} s ({flink['job_s_source']}) | {m(flink['events_per_s'])} | {flink['startup_s']:.1f} s (JVM, table environment); the insert took {flink['submit_and_run_s']:.1f} s from submission |",
    f"| Weir | {weir['events']:,} | {weir['windows']:,} | {weir['job_s']:.1f} s | {m(weir['events_per_s'])} | reading the file: {weir['read_s']:.1f} s |",
    "",
    f"**Weir / Flink throughput: {ratio:.2f}** (job runtimes only, measured in the same run).",
    "",
    f"Counting Weir's read of the file as well, it ran at {m(weir['events'] / (weir['job_s'] + weir['read_s']))}"
    f" events/s, {weir['events'] / (weir['job_s'] + weir['read_s']) / flink['events_per_s']:.2f} times Flink's job rate.",
    "",
    ("Both engines emitted the same number of windows over the same number of events." if same else
     "The engines disagree on the windows or events counted: the ratio compares unequal work."),
    "",
    "Caveats: one run on a shared machine; Flink's job runtime includes its own task deployment",
    "inside the mini-cluster, and Weir's excludes reading the file into memory (it parses every",
    "line inside the job, as Flink's CSV format does).",
    "",
]
open(report, "w").write("\n".join(lines))
print(f"flink peer: Flink {m(flink['events_per_s'])} events/s, Weir {m(weir['events_per_s'])} events/s, ratio {ratio:.2f}; wrote {report}", file=sys.stderr)
PY
