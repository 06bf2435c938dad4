"""A deterministic mockupAWS data set, generated server-side (for the demo, tests, benchmarks)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from . import db
from .errors import UsageError

SOURCES = ("api", "sqs", "lambda", "bedrock", "cloudwatch", "s3", "ecs", "import")
REGIONS = ("us-east-1", "eu-west-1", "eu-central-1", "ap-southeast-1")
STATUSES = ("running", "paused", "completed", "archived")
METRICS = (
    ("sqs", "messages", "count"),
    ("lambda", "invocations", "count"),
    ("lambda", "duration", "ms"),
    ("bedrock", "tokens", "count"),
    ("cost", "total", "USD"),
)


@dataclass(frozen=True)
class SampleSize:
    scenarios: int = 20
    logs_per_scenario: int = 500
    metrics_per_scenario: int = 500
    reports_per_scenario: int = 3
    api_keys: int = 50
    days: int = 900  # history spread, long enough to reach the archive policies (365/730 days)

    def validate(self) -> None:
        for name, value in asdict(self).items():
            if value < 0:
                raise UsageError(f"sample size {name} must be >= 0 (got {value})")
        if self.days < 1:
            raise UsageError("sample size days must be >= 1")


def load(dsn: str | None, size: SampleSize = SampleSize(), *, seed: float = 0.42) -> dict:
    """Insert the data set in one transaction; returns the row counts inserted."""
    size.validate()
    params = {
        **asdict(size),
        "seed": seed,
        "sources": list(SOURCES),
        "regions": list(REGIONS),
        "statuses": list(STATUSES),
        "mtypes": [m[0] for m in METRICS],
        "mnames": [m[1] for m in METRICS],
        "munits": [m[2] for m in METRICS],
    }
    with db.connect(dsn) as conn, conn.transaction():
        conn.execute("SELECT setseed(%(seed)s)", params)
        conn.execute(
            """
            CREATE TEMP TABLE sample_scenarios ON COMMIT DROP AS
            SELECT gen_random_uuid() AS id, g AS n,
                   now() - make_interval(days => %(days)s) + (g * interval '1 hour') AS created_at
            FROM generate_series(1, %(scenarios)s) g
            """,
            params,
        )
        conn.execute(
            """
            INSERT INTO scenarios (id, name, description, region, status, created_at, updated_at,
                                   total_requests, total_cost_estimate, sqs_blocks,
                                   lambda_invocations, llm_tokens)
            SELECT id, 'scenario-' || n, 'sample scenario ' || n,
                   (%(regions)s::text[])[1 + n %% cardinality(%(regions)s::text[])],
                   (%(statuses)s::text[])[1 + n %% cardinality(%(statuses)s::text[])],
                   created_at, created_at, n * 1000, round((n * 1.37)::numeric, 6), n * 10,
                   n * 100, n * 5000
            FROM sample_scenarios
            """,
            params,
        )
        logs = conn.execute(
            """
            INSERT INTO scenario_logs (scenario_id, received_at, source, message_hash,
                                       message_preview, size_bytes, token_count, sqs_blocks,
                                       has_pii, payload)
            SELECT s.id,
                   now() - random() * make_interval(days => %(days)s),
                   (%(sources)s::text[])
                       [1 + floor(random() * cardinality(%(sources)s::text[]))::int],
                   encode(sha256((s.n || ':' || g)::bytea), 'hex'),
                   'message ' || g || ' of scenario ' || s.n,
                   (random() * 64000)::int, (random() * 2000)::int, (random() * 4)::int,
                   random() < 0.05,
                   jsonb_build_object('seq', g)
            FROM sample_scenarios s, generate_series(1, %(logs_per_scenario)s) g
            """,
            params,
        ).rowcount
        metrics = conn.execute(
            """
            INSERT INTO scenario_metrics (scenario_id, "timestamp", metric_type, metric_name,
                                          value, unit)
            SELECT s.id, now() - random() * make_interval(days => %(days)s),
                   (%(mtypes)s::text[])[k], (%(mnames)s::text[])[k],
                   round((random() * 1000)::numeric, 6),
                   (%(munits)s::text[])[k]
            FROM sample_scenarios s, generate_series(1, %(metrics_per_scenario)s) g,
                 LATERAL (SELECT 1 + (g %% cardinality(%(mtypes)s::text[])) AS k) pick
            """,
            params,
        ).rowcount
        reports = conn.execute(
            """
            INSERT INTO reports (scenario_id, created_at, report_format, file_path,
                                 file_size_bytes, generated_by)
            SELECT s.id, now() - random() * make_interval(days => %(days)s),
                   CASE WHEN g %% 2 = 0 THEN 'pdf' ELSE 'csv' END,
                   '/var/lib/mockupaws/reports/' || s.n || '-' || g ||
                       CASE WHEN g %% 2 = 0 THEN '.pdf' ELSE '.csv' END,
                   (random() * 5e6)::bigint, 'sample'
            FROM sample_scenarios s, generate_series(1, %(reports_per_scenario)s) g
            """,
            params,
        ).rowcount
        keys = conn.execute(
            """
            INSERT INTO api_keys (user_id, key_hash, key_prefix, name, is_active, created_at,
                                  expires_at, last_used_at)
            SELECT ('00000000-0000-4000-8000-' || lpad((g %% 40)::text, 12, '0'))::uuid,
                   encode(sha256(('key-' || g)::bytea), 'hex'), 'mk_' || lpad(g::text, 5, '0'),
                   'sample key ' || g, g %% 5 <> 0, now() - interval '400 days',
                   CASE g %% 3 WHEN 0 THEN 'infinity' WHEN 1 THEN now() + interval '90 days'
                        ELSE now() - interval '10 days' END,
                   now() - random() * interval '30 days'
            FROM generate_series(1, %(api_keys)s) g
            """,
            params,
        ).rowcount
        conn.execute("ANALYZE scenarios, scenario_logs, scenario_metrics, reports, api_keys")
    return {
        "scenarios": size.scenarios,
        "scenario_logs": logs,
        "scenario_metrics": metrics,
        "reports": reports,
        "api_keys": keys,
    }
