#!/usr/bin/env bash
# The four execution models on this machine, wall clock: for each model, a fresh `weir broker`
# gets the same backlog of generated orders (with an end marker per partition), and
# `weir job order-aggregates` runs under the model until it has read and committed all of it.
# It writes each model's time and throughput, and each one's ratio to the pipelined model's
# measured in the same run, to reports/models-real.md.
#
# The backlog is read as fast as each model goes, so this measures throughput and the cost of
# each model's commits, not latency. Kafka Streams runs with a grace longer than the input, so
# that no row is late however far its sources drift apart while they read the backlog.
# Run it on an idle machine. It is not part of CI.
#
# Usage: benches/models-real.sh
# Env:   EVENTS=500000  KEYS=1000  SEED=7  PARTITIONS=4  PARALLELISM=2  ROUNDS=2
#        EVENT_RATE=20                events per second of event time (a 5-minute window
#                                     holds about 6 000 of them)
#        WEIR=path/to/weir          a built weir (else cargo builds --release)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
events="${EVENTS:-500000}"
keys="${KEYS:-1000}"
seed="${SEED:-7}"
partitions="${PARTITIONS:-4}"
parallelism="${PARALLELISM:-2}"
rounds="${ROUNDS:-2}"
event_rate="${EVENT_RATE:-20}"
models=(pipelined micro-batch kafka-streams storm)

if [ -z "${WEIR:-}" ]; then
  (cd "$root" && cargo build --release --quiet -p weir)
  WEIR="${CARGO_TARGET_DIR:-$root/target}/release/weir"
fi

work="$(mktemp -d)"
broker_pid=""
cleanup() {
  [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# One run: a fresh broker and backlog, then the job; prints its wall seconds.
run() {
  local model="$1" dir="$work/$1-$2"
  mkdir -p "$dir"
  local port
  port="$(free_port)"
  "$WEIR" broker --listen "127.0.0.1:$port" --data-dir "$dir/broker" >"$dir/broker.log" 2>&1 &
  broker_pid=$!
  # Serving once it has joined its one-node cluster.
  for _ in $(seq 1 100); do
    grep -q "serving" "$dir/broker.log" 2>/dev/null && break
    sleep 0.1
  done
  "$WEIR" produce orders --bootstrap "127.0.0.1:$port" --events "$events" --seed "$seed" \
    --partitions "$partitions" --keys "$keys" --start-ms 1700000000000 --event-rate "$event_rate" \
    --end-marker END >"$dir/produce.log" 2>&1 \
    || { echo "models-real: produce failed; its log:" >&2; tail -5 "$dir/produce.log" >&2; exit 1; }
  local extra=()
  case "$model" in
    micro-batch) extra=(--trigger-ms 1000) ;;
    kafka-streams) extra=(--grace-ms 100000000000) ;;
    # A window holds its tuples' trees open until it fires: the bound on open trees must
    # exceed what a window holds, or the sources stop and the windows never fire (as in Storm).
    storm) extra=(--max-spout-pending 100000) ;;
  esac
  local start end
  start="$(date +%s.%N)"
  timeout 900 "$WEIR" job order-aggregates --bootstrap "127.0.0.1:$port" --checkpoint-dir "$dir/ckpt" \
    --parallelism "$parallelism" --end-marker END --checkpoint-interval-ms 1000 \
    --job-manager-port "$(free_port)" --model "$model" "${extra[@]}" >"$dir/job.log" 2>&1 \
    && ok=1 || ok=0
  end="$(date +%s.%N)"
  kill "$broker_pid"
  wait "$broker_pid" 2>/dev/null || true
  broker_pid=""
  if [ "$ok" = 1 ]; then
    python3 -c "print(f'{$end - $start:.3f}')"
  else
    echo "models-real: $model did not finish; the end of its log:" >&2
    tail -3 "$dir/job.log" >&2
    echo failed
  fi
}

declare -A best
for round in $(seq 1 "$rounds"); do
  for model in "${models[@]}"; do
    s="$(run "$model" "$round")"
    echo "models-real: round $round, $model: $s" >&2
    if [ "$s" = failed ]; then
      best[$model]="${best[$model]:-failed}"
    elif [ -z "${best[$model]:-}" ] || [ "${best[$model]}" = failed ] \
      || python3 -c "import sys; sys.exit(0 if $s < ${best[$model]} else 1)"; then
      best[$model]="$s"
    fi
  done
done

out="$root/reports/models-real.md"
{
  echo "# The execution models on this machine (wall clock)"
  echo
  echo "Regenerate with \`benches/models-real.sh\` (EVENTS=$events KEYS=$keys SEED=$seed" \
    "PARTITIONS=$partitions PARALLELISM=$parallelism ROUNDS=$rounds EVENT_RATE=$event_rate)." \
    "Date: $(date -u +%F)." \
    "Machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)."
  echo
  echo "Each run starts a fresh \`weir broker\`, writes $events generated orders to a" \
    "$partitions-partition topic with an end marker per partition, then times" \
    "\`weir job order-aggregates\` (parallelism $parallelism, one process: job manager and" \
    "task manager) from its start until it has read the whole backlog and committed its" \
    "output. The best of $rounds rounds is shown; the ratio is to the pipelined model's time" \
    "in the same run. Settings: pipelined checkpoints and the micro-batch trigger every" \
    "second; Kafka Streams commits every 100 ms with a grace longer than the input; Storm" \
    "commits offsets every second, at least once, with up to 100 000 open trees per source."
  echo
  echo "| model | job time (s) | events/s | events/s, relative to pipelined |"
  echo "| --- | --- | --- | --- |"
  for model in "${models[@]}"; do
    if [ "${best[$model]}" = failed ] || [ "${best[pipelined]}" = failed ]; then
      echo "| $model | did not finish in any round | | |"
      continue
    fi
    python3 -c "
t = ${best[$model]}; p = ${best[pipelined]}
print(f'| $model | {t:.2f} | {$events / t:,.0f} | {p / t:.2f} |')"
  done
  echo
  echo "\`weir job\` learns that the job finished by asking its job manager every 500 ms, so" \
    "each time carries up to half a second of that. On a backlog this small the commit" \
    "cadence dominates: the pipelined model finishes at the checkpoint after its input" \
    "ended, the micro-batch model after the batch that follows its trigger, Kafka Streams and" \
    "Storm at their next commit. The micro-batch model reads a backlog in batches of at most" \
    "100 000 offsets per source subtask (\`--batch-offsets-max\`), one per trigger. Before" \
    "that bound its first batch read the whole backlog with every window still open at the" \
    "batch's barrier, and with 500 000 events the snapshot (16.8 MB) was over the job" \
    "manager's 8 MiB control frame limit: the job never finished."
  echo
  echo "The time includes each process's start and the job's final commit. It measures a" \
    "backlog read flat out, so it shows what each model's commits and tracking cost, not" \
    "its latency. Latency and crashes on this machine: \`weir bench real\`, in" \
    "[framework-comparison.md](framework-comparison.md), which also has the simulator's" \
    "comparison."
} >"$out"
echo "models-real: wrote $out" >&2
