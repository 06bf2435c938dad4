"""Data archiving throughput and its cost to the application (`make bench-archive`).

Builds a scratch PostgreSQL 15 cluster, migrates it, loads the mockupAWS sample data set with
BENCH_ARCHIVE_LOGS log rows (default 5,000,000; spread over 900 days, so about 60 % are older
than the 365-day logs policy), then, side by side in one run:

  idle      an application inserting single log rows (BENCH_ARCHIVE_RATE per second, default
            200) for BENCH_ARCHIVE_IDLE seconds: its insert latency with nothing else running;
  archive   the same inserter while `dbtier archive --logs` moves every old row, then
            `dbtier archive --metrics` (daily roll-up): rows/s, the job's longest batch, and the
            inserter's latency meanwhile;

and prints rows/s, p50/p99/max insert latency in both phases and their ratio, and the storage
before and after (live tables with their indexes, archive partitions). Asserts nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

from dbtier import migrations, sampledata
from dbtier.pgcluster import LocalCluster, chown_to_server_user

ROOT = Path(__file__).resolve().parents[1]
DBTIER = str(Path(sys.executable).parent / "dbtier")
SIZES = """
SELECT relname, pg_total_relation_size(oid) FROM pg_class
WHERE relname IN ('scenario_logs', 'scenario_metrics')
UNION ALL
SELECT 'scenario_logs_archive', coalesce(sum(pg_total_relation_size(relid)), 0)::bigint
FROM pg_partition_tree('scenario_logs_archive')
UNION ALL
SELECT 'scenario_metrics_archive', coalesce(sum(pg_total_relation_size(relid)), 0)::bigint
FROM pg_partition_tree('scenario_metrics_archive')
"""


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


class Inserter(threading.Thread):
    """An application writing log rows at a fixed rate; records each insert's latency."""

    def __init__(self, dsn: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.dsn, self.interval = dsn, 1.0 / rate
        self.latencies: list[float] = []
        self.stopped = threading.Event()
        self.errors = 0

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            scenario = conn.execute("SELECT id FROM scenarios LIMIT 1").fetchone()[0]
            next_at = time.monotonic()
            while not self.stopped.is_set():
                started = time.monotonic()
                try:
                    conn.execute(
                        "INSERT INTO scenario_logs (scenario_id, message_hash, size_bytes) "
                        "VALUES (%s, md5(random()::text) || md5(random()::text), 100)",
                        (scenario,),
                    )
                    self.latencies.append(time.monotonic() - started)
                except psycopg.Error:
                    self.errors += 1
                next_at += self.interval
                time.sleep(max(0.0, next_at - time.monotonic()))

    def take(self) -> list[float]:
        taken, self.latencies = self.latencies, []
        return taken


def percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"n": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(p99 * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def archive(dsn: str, kind: str) -> tuple[float, dict]:
    started = time.monotonic()
    batch = os.environ.get("BENCH_ARCHIVE_BATCH")  # default: the policy's batch_size
    proc = subprocess.run(
        [
            DBTIER,
            "archive",
            f"--{kind}",
            "--json",
            "--quiet",
            "--dsn",
            dsn,
            *(["--batch-size", batch] if batch else []),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"bench: dbtier archive --{kind} failed: {proc.stderr.strip()}")
    return elapsed, json.loads(proc.stdout)


def sizes(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute(SIZES).fetchall())


def main() -> None:
    logs = int(os.environ.get("BENCH_ARCHIVE_LOGS", "5000000"))
    rate = float(os.environ.get("BENCH_ARCHIVE_RATE", "200"))
    idle = float(os.environ.get("BENCH_ARCHIVE_IDLE", "20"))
    scenarios = 100
    work = Path(tempfile.mkdtemp(prefix="dbtier-bench-archive-", dir=os.environ.get("BENCH_DIR")))
    work.chmod(0o755)
    chown_to_server_user(work)
    cluster = LocalCluster(
        base=work / "pg",
        settings={"shared_buffers": "512MB", "max_wal_size": "4GB", "checkpoint_timeout": "15min"},
    )
    try:
        cluster.init()
        cluster.start()
        dsn = cluster.dsn()
        migrations.migrate(dsn, ROOT / "files" / "sql")
        progress(f"loading sample data: {logs:,} log rows over 900 days ...")
        started = time.monotonic()
        sampledata.load(
            dsn,
            sampledata.SampleSize(
                scenarios=scenarios,
                logs_per_scenario=logs // scenarios,
                metrics_per_scenario=logs // scenarios // 5,
                days=900,
            ),
        )
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
            conn.execute("CHECKPOINT")
            old = conn.execute(
                "SELECT count(*) FROM scenario_logs WHERE received_at < now() - interval '365 days'"
            ).fetchone()[0]
        progress(f"loaded in {time.monotonic() - started:.0f} s; {old:,} log rows to archive")
        before = sizes(dsn)

        inserter = Inserter(dsn, rate)
        inserter.start()
        progress(f"idle phase: {rate:g} inserts/s for {idle:g} s ...")
        time.sleep(idle)
        idle_latency = percentiles(inserter.take())
        progress("archive phase: dbtier archive --logs, then --metrics ...")
        log_seconds, log_result = archive(dsn, "logs")
        metric_seconds, metric_result = archive(dsn, "metrics")
        busy_latency = percentiles(inserter.take())
        inserter.stopped.set()
        inserter.join()
        after = sizes(dsn)
        # The live tables keep their size (the space is free for new rows); what compacting
        # them would give back, as a maintenance window (or pg_repack) would:
        progress("VACUUM FULL of the live tables (measuring the space archiving freed) ...")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("VACUUM FULL scenario_logs, scenario_metrics")
            aggregates = conn.execute(
                "SELECT count(*) FROM scenario_metrics_archive WHERE is_aggregated"
            ).fetchone()[0]
        compacted = sizes(dsn)
    finally:
        cluster.destroy()
        shutil.rmtree(work, ignore_errors=True)

    ratio = busy_latency["p99_ms"] / idle_latency["p99_ms"] if idle_latency["p99_ms"] else 0
    print(f"\nmachine: {os.cpu_count()} cores; {logs:,} log rows, {old:,} older than 365 days")
    print(f"{'job':<22} {'seconds':>8} {'rows':>11} {'rows/s':>9}")
    for name, secs, result in (
        ("archive --logs", log_seconds, log_result),
        ("archive --metrics", metric_seconds, metric_result),
    ):
        policy = result["policies"][0]
        moved = policy["rows_processed"]
        print(f"{name:<22} {secs:>8.1f} {moved:>11,} {moved / secs:>9,.0f}")
    print(f"\n{'insert latency':<22} {'n':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, lat in (("idle", idle_latency), ("while archiving", busy_latency)):
        print(f"{name:<22} {lat['n']:>7} {lat['p50_ms']:>8} {lat['p99_ms']:>8} {lat['max_ms']:>8}")
    print(f"p99 while archiving / idle: {ratio:.2f}x (inserter errors: {inserter.errors})")
    print(f"metrics: {metric_result['policies'][0]['rows_processed']:,} raw rows became "
          f"{aggregates:,} daily aggregates")  # fmt: skip
    print(f"\n{'relation (with indexes), MiB':<30} {'before':>8} {'after':>8} {'compacted':>10}")
    for name in before:
        print(f"{name:<30} {before[name] / 2**20:>8.0f} {after[name] / 2**20:>8.0f} "
              f"{compacted[name] / 2**20:>10.0f}")  # fmt: skip
    total = [sum(d.values()) / 2**20 for d in (before, after, compacted)]
    print(f"{'total':<30} {total[0]:>8.0f} {total[1]:>8.0f} {total[2]:>10.0f}")
    summary = {
        "logs": logs,
        "old_logs": old,
        "archive_logs": {"seconds": log_seconds, **log_result["policies"][0]},
        "archive_metrics": {"seconds": metric_seconds, **metric_result["policies"][0]},
        "insert_latency": {"idle": idle_latency, "archiving": busy_latency, "p99_ratio": ratio},
        "sizes": {"before": before, "after": after, "compacted": compacted},
        "metric_aggregates": aggregates,
    }
    out = ROOT / ".run" / "bench-archive.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, default=str))
    print(f"\nfigures: {out}")


if __name__ == "__main__":
    main()
