"""The Flink side of the Flink peer run (see flink.sh): a keyed 5-minute tumbling-window
count and sum over the CSV file that `weir bench orders-csv` writes, in Flink SQL at
parallelism 1, into a blackhole sink. Prints one JSON line with its figures.

After the timed job, a second (untimed) batch job counts the windows and the events they hold, so the
report can show that Flink and Weir computed the same windows from the same input.

Usage: python flink_window.py CSV_PATH OUT_OF_ORDERNESS_MS
"""

import json
import sys
import time

STARTED = time.monotonic()

from pyflink.table import EnvironmentSettings, TableEnvironment  # noqa: E402


def environment(settings: EnvironmentSettings, path: str, disorder_ms: int) -> TableEnvironment:
    """A table environment at parallelism 1 in UTC, with the CSV file as table `orders`."""
    env = TableEnvironment.create(settings)
    config = env.get_config()
    config.set("parallelism.default", "1")
    config.set("table.local-time-zone", "UTC")
    env.execute_sql(
        f"""
        CREATE TABLE orders (
            customer_id STRING,
            total_amount DOUBLE,
            event_ms BIGINT,
            ts AS TO_TIMESTAMP_LTZ(event_ms, 3),
            WATERMARK FOR ts AS ts - INTERVAL '{disorder_ms / 1000.0}' SECOND
        ) WITH (
            'connector' = 'filesystem',
            'path' = 'file://{path}',
            'format' = 'csv'
        )
        """
    )
    return env


def main() -> None:
    path, disorder_ms = sys.argv[1], int(sys.argv[2])
    env = environment(EnvironmentSettings.in_streaming_mode(), path, disorder_ms)
    env.execute_sql(
        """
        CREATE TABLE sink (
            customer_id STRING,
            window_end TIMESTAMP(3),
            orders BIGINT,
            total DOUBLE
        ) WITH ('connector' = 'blackhole')
        """
    )
    windows = """
        SELECT customer_id, window_end, COUNT(*) AS orders, SUM(total_amount) AS total
        FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(ts), INTERVAL '5' MINUTES))
        GROUP BY customer_id, window_start, window_end
    """
    submitted = time.monotonic()
    result = env.execute_sql(f"INSERT INTO sink {windows}")
    result.wait()
    finished = time.monotonic()
    net_ms = None
    client = result.get_job_client()
    if client is not None:
        try:
            net_ms = client.get_job_execution_result().result().get_net_runtime()
        except Exception as e:  # the figure is optional; its absence is reported
            print(f"flink peer: no net runtime from the job client: {e}", file=sys.stderr)
    wall_s = finished - submitted
    job_s = net_ms / 1000.0 if net_ms else wall_s
    # In batch mode the check is one row, not a changelog of every window's update.
    batch = environment(EnvironmentSettings.in_batch_mode(), path, disorder_ms)
    check = batch.execute_sql(f"SELECT COUNT(*), SUM(orders) FROM ({windows})")
    with check.collect() as rows:
        row = next(iter(rows), None)
    if row is None:
        sys.exit("flink peer: the check query returned no row")
    window_count, events = int(row[0]), int(row[1])
    print(
        json.dumps(
            {
                "engine": "flink",
                "events": events,
                "windows": window_count,
                "startup_s": round(submitted - STARTED, 3),
                "submit_and_run_s": round(wall_s, 3),
                "job_s": round(job_s, 3),
                "job_s_source": "net runtime" if net_ms else "wall time of the insert",
                "events_per_s": events / job_s,
            }
        )
    )


if __name__ == "__main__":
    main()
