"""A deterministic mockupAWS data set, generated server-side (for the demo, tests, benchmarks)."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

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


# ---------------------------------------------------------------------------------------------
# Realistic data at a scale (`dbtier sample-data --scale S`): scale 1 is about 1 GB on disk
# (tables and indexes after every migration), scale 0.01 about 10 MB.
#
# Deterministic: every value comes from Python's seeded Random (scenarios, plans) or from
# hashint8extended(row key, seed) in the server (rows), never from random(), gen_random_uuid()
# or now(). Ids are computed, not drawn from the identity sequences (set afterwards), so the
# chunks can load on two connections in parallel and still give the same rows. Time is anchored
# at `anchor` (default: today 00:00 UTC, so the history always reaches the archive policies'
# 365/730 days); the same scale, seed and anchor give identical tables.
#
# Shape: scenarios are simulation runs created over `days` days (more recently than long ago:
# usage grows), each living hours to months; logs and metrics arrive in time order across all
# scenarios (ids follow time), so the physical layout is the interleaved one of a live system.
# Per-scenario log volume is Zipf-like (a few scenarios dominate), so are the log sources.
# ---------------------------------------------------------------------------------------------

SCALE_SCENARIOS = 5000  # at scale 1
SCALE_LOGS = 820_000
SCALE_METRIC_POINTS = 36  # points per series (regular timestamps over the scenario's life)
SCALE_API_KEYS = 3000
MAX_SCALE = 1000.0

# (source, weight): a few sources dominate (Zipf-like, exponent ~1.2)
LOG_SOURCES = (
    "api",
    "lambda",
    "sqs",
    "bedrock",
    "cloudwatch",
    "s3",
    "ecs",
    "dynamodb",
    "sns",
    "eventbridge",
    "kinesis",
    "import",
)
REGION_WEIGHTS = (
    ("us-east-1", 38),
    ("eu-west-1", 18),
    ("us-west-2", 12),
    ("eu-central-1", 10),
    ("ap-southeast-1", 8),
    ("ap-northeast-1", 6),
    ("eu-south-1", 4),
    ("sa-east-1", 4),
)
# (metric_type, metric_name, unit, typical value)
SERIES = (
    ("api", "requests", "count", 1200.0),
    ("sqs", "messages", "count", 800.0),
    ("lambda", "invocations", "count", 950.0),
    ("lambda", "duration", "ms", 180.0),
    ("bedrock", "tokens", "count", 25000.0),
    ("cost", "total", "USD", 0.42),
)
WORKLOADS = (
    "checkout",
    "search",
    "ingest",
    "etl-nightly",
    "chatbot",
    "image-resize",
    "billing",
    "recommendations",
    "fraud-check",
    "notifications",
    "media-transcode",
    "log-shipper",
)
COMPANIES = (
    "acme",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "stark",
    "wayne",
    "tyrell",
    "soylent",
    "wonka",
    "cyberdyne",
    "vandelay",
)
KINDS = ("load-test", "baseline", "peak", "what-if", "migration", "cost-review")


def source_thresholds() -> list[float]:
    """Cumulative upper bounds (exclusive of the last) for width_bucket: P(source k) ~ 1/k^1.2."""
    weights = [1 / (k + 1) ** 1.2 for k in range(len(LOG_SOURCES))]
    total = sum(weights)
    bounds, acc = [], 0.0
    for w in weights[:-1]:
        acc += w / total
        bounds.append(round(acc, 9))
    return bounds


@dataclass(frozen=True)
class Plan:
    """What a scale loads: counts per table (SampleSize-compatible) and the anchor."""

    scale: float
    seed: int
    anchor: datetime
    size: SampleSize

    @property
    def logs(self) -> int:
        return self.size.scenarios * self.size.logs_per_scenario


def parse_scale(text: str | float) -> float:
    try:
        scale = float(text)
    except (TypeError, ValueError):
        raise UsageError(f"--scale must be a number such as 0.01 or 1 (got {text!r})") from None
    if not (scale > 0 and scale <= MAX_SCALE) or scale != scale:
        raise UsageError(f"--scale must be > 0 and <= {MAX_SCALE:g} (got {text})")
    return scale


def size_for_scale(scale: float) -> SampleSize:
    """The SampleSize of a scale: averages per scenario (log volume is skewed around it)."""
    scale = parse_scale(scale)
    scenarios = max(20, round(SCALE_SCENARIOS * scale))
    logs = max(10, round(SCALE_LOGS * scale))
    return SampleSize(
        scenarios=scenarios,
        logs_per_scenario=max(1, round(logs / scenarios)),
        metrics_per_scenario=SCALE_METRIC_POINTS * len(SERIES),
        reports_per_scenario=0,  # weekly, from each scenario's life span
        api_keys=max(20, round(SCALE_API_KEYS * scale)),
        days=900,
    )


def default_anchor() -> datetime:
    now = datetime.now(UTC)
    return datetime(now.year, now.month, now.day, tzinfo=UTC)


def parse_anchor(text: str | None) -> datetime:
    if not text:
        return default_anchor()
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--anchor must be a date like 2026-01-01 (got {text!r})") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass
class _Scenario:
    no: int
    id: str
    created: datetime
    end: datetime
    status: str
    region: str
    logs: int
    name: str
    kind: str


def _uuid(seed: int, kind: str, n: int) -> str:
    h = hashlib.md5(f"{seed}:{kind}:{n}".encode(), usedforsecurity=False).hexdigest()
    # RFC 4122 shape (version 4, variant 10) so it looks like what gen_random_uuid() makes
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) % 4]}{h[17:20]}-{h[20:32]}"


def _scenarios(plan: Plan) -> list[_Scenario]:
    size = plan.size
    rng = random.Random(f"dbtier-sample:{plan.seed}:scenarios")  # noqa: S311 - sample data
    start = plan.anchor - timedelta(days=size.days)
    n = size.scenarios
    # Zipf-like volume: rank r gets 1/(r+1); ranks are shuffled over creation order.
    ranks = list(range(n))
    rng.shuffle(ranks)
    weights = [1.0 / (ranks[i] + 1) for i in range(n)]
    total_w = sum(weights)
    total_logs = plan.logs
    # at least one log per scenario, the rest by largest remainder: the sum is exact
    spare = max(0, total_logs - n)
    quotas = [spare * w / total_w for w in weights]
    counts = [int(q) for q in quotas]
    left = spare - sum(counts)
    for i in sorted(range(n), key=lambda i: (counts[i] - quotas[i], i))[:left]:
        counts[i] += 1
    counts = [c + (1 if total_logs >= n else 0) for c in counts]
    regions = [r for r, _ in REGION_WEIGHTS]
    region_w = [w for _, w in REGION_WEIGHTS]
    out = []
    for i in range(n):
        # growth: creation density rises linearly towards the anchor
        x = ((i + rng.random()) / n) ** 0.5
        created = start + timedelta(seconds=int(x * size.days * 86400 * 0.995))
        # most runs last days; a third are long-lived (months, up to the whole history)
        if rng.random() < 0.65:
            life_days = min(60.0, math.exp(rng.gauss(1.6, 1.1)))
        else:
            life_days = min(float(size.days), math.exp(rng.gauss(4.9, 0.8)))
        end = created + timedelta(seconds=int(life_days * 86400) + 3600)
        if end >= plan.anchor:
            end = plan.anchor
            status = "running" if rng.random() < 0.75 else "paused"
        elif end < plan.anchor - timedelta(days=180) and rng.random() < 0.6:
            status = "archived"
        else:
            status = "completed"
        kind = rng.choice(KINDS)
        name = f"{rng.choice(COMPANIES)}-{rng.choice(WORKLOADS)}-{kind}-{i:05d}"
        out.append(
            _Scenario(
                no=i,
                id=_uuid(plan.seed, "scenario", i),
                created=created,
                end=end,
                status=status,
                region=rng.choices(regions, region_w)[0],
                logs=counts[i],
                name=name,
                kind=kind,
            )
        )
    return out


def _insert_scenarios(conn, plan: Plan, scenarios: list[_Scenario]) -> None:
    rng = random.Random(f"dbtier-sample:{plan.seed}:scenario-rows")  # noqa: S311
    with conn.cursor().copy(
        "COPY scenarios (id, name, description, tags, region, status, created_at, updated_at, "
        "completed_at, total_requests, total_cost_estimate, sqs_blocks, lambda_invocations, "
        "llm_tokens, pii_violations) FROM STDIN"
    ) as copy:
        for s in scenarios:
            env = rng.choice(("dev", "staging", "prod", "sandbox"))
            team = rng.choice(("payments", "platform", "data", "ml", "growth", "infra", "mobile"))
            tags = json.dumps(
                [f"env:{env}", f"team:{team}", f"kind:{s.kind}"]
                + ([f"ticket:OPS-{rng.randint(100, 9999)}"] if rng.random() < 0.4 else [])
            )
            requests = s.logs * rng.randint(20, 400)
            lambdas = int(requests * rng.uniform(0.1, 1.2))
            tokens = int(requests * rng.uniform(0, 900)) if rng.random() < 0.5 else 0
            cost = round(requests * 4e-7 + lambdas * 2e-7 + tokens * 3e-6, 6)
            copy.write_row(
                (
                    s.id,
                    s.name,
                    f"{s.kind.replace('-', ' ')} of the {s.name.split('-')[1]} workload of "
                    f"{s.name.split('-')[0]} in {s.region}, {env}",
                    tags,
                    s.region,
                    s.status,
                    s.created,
                    s.end,
                    s.end if s.status in ("completed", "archived") else None,
                    requests,
                    min(cost, 999999.0),
                    int(requests * rng.uniform(0, 0.3)),
                    lambdas,
                    tokens,
                    round(s.logs * 0.05),
                )
            )


def _windows(
    plan: Plan, spans: list[tuple[datetime, datetime, float]], per_chunk: int
) -> list[tuple[datetime, datetime]]:
    """Time windows holding about `per_chunk` rows each (one INSERT per window), from each
    scenario's rows spread evenly over its life: (created, end, rows) per scenario. Equal
    windows keep both connections busy to the end (usage grows, so equal time spans would
    leave the last, largest window to one connection)."""
    start = plan.anchor - timedelta(days=plan.size.days)
    total = sum(rows for _c, _e, rows in spans)
    n = max(2, math.ceil(total / per_chunk))
    # cumulative row count F(t) is piecewise linear: sweep the rate changes in time order
    events: list[tuple[float, float]] = []
    for created, end, rows in spans:
        life = (end - created).total_seconds()
        if rows and life > 0:
            events.append((created.timestamp(), rows / life))
            events.append((end.timestamp(), -rows / life))
    events.sort()
    goals = [total * k / n for k in range(1, n)]
    edges = [start - timedelta(days=1)]
    rate = done = 0.0
    prev = events[0][0] if events else start.timestamp()
    for at, delta in events:
        while goals and rate > 0 and done + rate * (at - prev) >= goals[0]:
            cut = prev + (goals[0] - done) / rate
            edges.append(datetime.fromtimestamp(round(cut), tz=UTC))
            goals.pop(0)
        done += rate * (at - prev)
        rate += delta
        prev = at
    edges.append(plan.anchor + timedelta(days=1))
    edges = sorted(set(edges))
    return list(itertools.pairwise(edges))


# One pseudo-random float in [0, 1) per (scenario number, row number, stream): hashint8extended
# is a stable, built-in hash (the one hash partitioning relies on). The row number (< 2^31) is
# the value, scenario and stream go into the 64-bit seed, which the hash mixes in full (an int8
# value is folded to 32 bits first, so a combined key would collide).
def _u(sno: str, row: str, stream: int) -> str:
    return (
        f"((hashint8extended({row}, ({sno}::bigint * 64 + {stream}) * 65536 + %(seed)s)"
        " & 4503599627370495)::float8 / 4503599627370496.0)"
    )


LOGS_SQL = f"""
INSERT INTO scenario_logs (id, scenario_id, received_at, source, message_hash, message_preview,
                           size_bytes, token_count, sqs_blocks, has_pii, payload)
SELECT r.id, r.sid, r.t, r.src, encode(sha256(int8send(r.key) || int8send(%(seed)s)), 'hex'),
       left(CASE r.src
         WHEN 'api' THEN format('%%s /v1/%%s/%%s -> %%s in %%s ms (%%s)', r.method,
              r.resource, substr(r.h, 1, 12), r.status, r.latency, r.agent)
         WHEN 'sqs' THEN format('Received message %%s from queue %%s-%%s (%%s bytes, attempt %%s)',
              substr(r.h, 1, 20), r.resource, r.region, r.size, r.attempt)
         WHEN 'lambda' THEN format('REPORT RequestId: %%s Duration: %%s ms Billed Duration: %%s ms '
              'Memory Size: %%s MB Max Memory Used: %%s MB', r.rid, r.latency, ceil(r.latency),
              r.mem, (r.mem * (0.3 + r.u4 * 0.6))::int)
         WHEN 'bedrock' THEN format('InvokeModel %%s input_tokens=%%s output_tokens=%%s '
              'latency=%%sms', r.model, r.tokens, (r.tokens * (0.1 + r.u4))::int, r.latency)
         ELSE format('%%s %%s %%s: %%s %%s (%%s)', r.level, r.src, r.resource, r.event,
              substr(r.h, 1, 16), r.region)
       END, 500),
       r.size,
       CASE WHEN r.src IN ('bedrock', 'lambda') THEN r.tokens ELSE 0 END,
       CASE WHEN r.src = 'sqs' THEN ceil(r.size / 65536.0)::int ELSE 0 END,
       r.pii,
       CASE WHEN r.pii THEN r.doc::jsonb || jsonb_build_object('pii', jsonb_build_object(
              'types', CASE WHEN r.u6 < 0.5 THEN '["email"]'::jsonb
                            WHEN r.u6 < 0.8 THEN '["email", "phone"]'::jsonb
                            ELSE '["credit_card"]'::jsonb END,
              'redacted', r.u5 < 0.7))
            ELSE r.doc::jsonb END
FROM (
  SELECT d.*,
         -- json (text) is built far faster than jsonb; one cast at the end
         json_build_object(
           'event_id', d.rid,
           'ts', to_char(d.t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
           'source', d.src, 'level', d.level, 'region', d.region, 'event', d.event,
           'trace_id', substr(d.h, 1, 24), 'attempt', d.attempt,
           CASE d.src WHEN 'api' THEN 'http' WHEN 'sqs' THEN 'sqs' WHEN 'lambda' THEN 'lambda'
                      WHEN 'bedrock' THEN 'bedrock' ELSE 'detail' END,
           CASE d.src
             WHEN 'api' THEN json_build_object('method', d.method,
                  'path', '/v1/' || d.resource || '/' || substr(d.h, 25, 8), 'status', d.status,
                  'latency_ms', d.latency, 'user_agent', d.agent,
                  'client_ip', format('10.%%s.%%s.%%s', floor(d.u5 * 256)::int,
                                      floor(d.u6 * 256)::int, 1 + floor(d.u4 * 254)::int))
             WHEN 'sqs' THEN json_build_object('queue', d.resource || '-' || d.region,
                  'message_id', substr(d.h, 1, 8) || '-' || substr(d.h, 9, 4) || '-'
                                || substr(d.h, 13, 12),
                  'body_bytes', d.size, 'receive_count', 1 + floor(d.u5 * 3)::int)
             WHEN 'lambda' THEN json_build_object('function', d.resource || '-handler',
                  'duration_ms', d.latency, 'memory_mb', d.mem, 'cold_start', d.u5 < 0.08,
                  'runtime', (ARRAY['python3.11', 'nodejs20.x', 'java21', 'go1.x'])
                                 [1 + floor(d.u6 * 4)::int])
             WHEN 'bedrock' THEN json_build_object('model', d.model, 'input_tokens', d.tokens,
                  'output_tokens', (d.tokens * (0.1 + d.u4))::int, 'latency_ms', d.latency,
                  'stop_reason', CASE WHEN d.u5 < 0.9 THEN 'end_turn' ELSE 'max_tokens' END)
             ELSE json_build_object('resource', d.resource, 'bytes', d.size,
                  'tags', json_build_array(d.kind, d.region))
           END) AS doc
  FROM (
    SELECT q.sid, q.t, q.key, q.region, q.kind, q.u4, q.u5, q.u6,
           %(offset)s + row_number() OVER (ORDER BY q.t, q.sno, q.k) AS id,
           (%(sources)s::text[])[1 + width_bucket(q.u1, %(bounds)s::float8[])] AS src,
           (100 * exp(7.9 * q.u3 * q.u3))::int AS size,
           (20 + 4000 * q.u4 * q.u4)::int AS tokens,
           round((5 + 2500 * q.u5 * q.u5 * q.u5)::numeric, 1) AS latency,
           1 + floor(q.u4 * 3)::int AS attempt,
           (ARRAY['GET', 'GET', 'GET', 'POST', 'POST', 'PUT', 'DELETE'])
               [1 + floor(q.u5 * 7)::int] AS method,
           (ARRAY[200, 200, 200, 200, 200, 201, 204, 400, 404, 429, 500, 503])
               [1 + floor(q.u6 * 12)::int] AS status,
           (ARRAY['orders', 'users', 'carts', 'invoices', 'sessions', 'items', 'events',
                  'payments'])[1 + floor(q.u6 * 8)::int] AS resource,
           (ARRAY['INFO', 'INFO', 'INFO', 'INFO', 'INFO', 'INFO', 'DEBUG', 'WARN', 'WARN',
                  'ERROR'])[1 + floor(q.u4 * 10)::int] AS level,
           (ARRAY['ObjectCreated', 'TaskStateChange', 'ItemUpdated', 'PutRecord', 'Publish',
                  'AlarmStateChange', 'ScheduledEvent', 'BatchImported'])
               [1 + floor(q.u5 * 8)::int] AS event,
           (ARRAY['anthropic.claude-3-haiku', 'anthropic.claude-3-sonnet',
                  'amazon.titan-text-express', 'meta.llama3-70b-instruct'])
               [1 + floor(q.u6 * 4)::int] AS model,
           (ARRAY[128, 256, 512, 1024, 2048])[1 + floor(q.u6 * 5)::int] AS mem,
           (ARRAY['mockupaws-sdk-python/2.4.1', 'mockupaws-sdk-js/1.9.0', 'curl/8.5.0',
                  'Mozilla/5.0 (X11; Linux x86_64)', 'terraform-provider-mockupaws/0.7.2'])
               [1 + floor(q.u4 * 5)::int] AS agent,
           q.u2 < %(pii)s AS pii,
           md5(q.key::text || ':' || %(seed)s) AS h,
           md5(%(seed)s || ':' || q.key::text)::uuid::text AS rid
    FROM (
      SELECT seg.sno, seg.sid, seg.region, seg.kind, k,
             seg.sno::bigint * 4294967296 + k AS key,
             seg.created
                 + seg.span * ((k + {_u("seg.sno", "k", 0)}) / seg.n) AS t,
             {_u("seg.sno", "k", 1)} AS u1,
             {_u("seg.sno", "k", 2)} AS u2,
             {_u("seg.sno", "k", 3)} AS u3,
             {_u("seg.sno", "k", 4)} AS u4,
             {_u("seg.sno", "k", 5)} AS u5,
             {_u("seg.sno", "k", 6)} AS u6
      FROM unnest(%(sno)s::int[], %(sid)s::uuid[], %(region)s::text[], %(kind)s::text[],
                  %(created)s::timestamptz[], %(span)s::interval[], %(n)s::int[],
                  %(kfrom)s::int[], %(kto)s::int[])
               AS seg(sno, sid, region, kind, created, span, n, kfrom, kto),
           generate_series(seg.kfrom, seg.kto) AS k
    ) q
    OFFSET 0 /* d stays a subquery: its expressions computed once, in window order */
  ) d
) r
"""

METRICS_SQL = f"""
INSERT INTO scenario_metrics (id, scenario_id, "timestamp", metric_type, metric_name, value, unit,
                              extra_data)
SELECT %(offset)s + row_number() OVER (ORDER BY r.t, r.sno, r.m), r.sid, r.t, r.mtype, r.mname,
       round((r.base * r.level * (1 + 0.5 * sin(2 * pi() * extract(epoch FROM r.t) / 86400.0))
              * (0.75 + 0.5 * r.u1) * (1 + 0.3 * r.j / r.n))::numeric, 6),
       r.unit,
       CASE WHEN r.m = 1 THEN jsonb_build_object('p99_ms', round((40 + 900 * r.u2)::numeric, 1))
            ELSE '{{}}'::jsonb END
FROM (
  SELECT seg.sno, seg.sid, seg.n, j, mm.m, mm.mtype, mm.mname, mm.unit, mm.base,
         seg.level,
         seg.created + seg.step * j AS t,
         {_u("seg.sno", "j * 16 + mm.m", 7)} AS u1,
         {_u("seg.sno", "j * 16 + mm.m", 8)} AS u2
  FROM unnest(%(sno)s::int[], %(sid)s::uuid[], %(created)s::timestamptz[],
              %(step)s::interval[], %(n)s::int[], %(level)s::float8[],
              %(jfrom)s::int[], %(jto)s::int[])
           AS seg(sno, sid, created, step, n, level, jfrom, jto),
       generate_series(seg.jfrom, seg.jto) AS j,
       unnest(%(mtypes)s::text[], %(mnames)s::text[], %(units)s::text[], %(bases)s::float8[])
           WITH ORDINALITY AS mm(mtype, mname, unit, base, m)
) r
"""

REPORTS_SQL = f"""
INSERT INTO reports (id, scenario_id, created_at, report_format, file_path, file_size_bytes,
                     generated_by, extra_data)
SELECT md5(%(seed)s || ':report:' || r.sno || ':' || r.j)::uuid, r.sid, r.t, r.fmt,
       format('/var/lib/mockupaws/reports/%%s/%%s/%%s-%%s.%%s', to_char(r.t AT TIME ZONE 'UTC',
              'YYYY/MM'), r.sid,
              r.kind, r.j, r.fmt),
       CASE r.fmt WHEN 'pdf' THEN (80000 + 4e6 * r.u1 * r.u1)::bigint
                  ELSE (2000 + 2e7 * r.u1 * r.u1 * r.u1)::bigint END,
       CASE WHEN r.j %% 4 = 0 THEN 'user:' || substr(md5(r.sid::text), 1, 8) ELSE 'scheduler' END,
       jsonb_build_object('period_days', 7, 'sections',
                          CASE WHEN r.u2 < 0.5 THEN '["summary", "costs"]'::jsonb
                               ELSE '["summary", "costs", "logs", "pii"]'::jsonb END,
                          'pages', (2 + 30 * r.u2)::int, 'locale',
                          CASE WHEN r.u1 < 0.8 THEN 'en' ELSE 'it' END)
FROM (
  SELECT seg.sno, seg.sid, seg.kind, j,
         CASE WHEN {_u("seg.sno", "j", 9)} < 0.6 THEN 'pdf' ELSE 'csv' END
             AS fmt,
         least(seg.created + interval '7 days' * (j + 1), seg.ended)
             - interval '1 hour' * floor(6 * {_u("seg.sno", "j", 10)}) AS t,
         {_u("seg.sno", "j", 11)} AS u1,
         {_u("seg.sno", "j", 12)} AS u2
  FROM unnest(%(sno)s::int[], %(sid)s::uuid[], %(kind)s::text[], %(created)s::timestamptz[],
              %(ended)s::timestamptz[], %(n)s::int[]) AS seg(sno, sid, kind, created, ended, n),
       generate_series(0, seg.n - 1) AS j
) r
ORDER BY r.t, r.sno, r.j
"""

KEYS_SQL = f"""
INSERT INTO api_keys (id, user_id, key_hash, key_prefix, name, scopes, is_active, created_at,
                      expires_at, last_used_at)
SELECT md5(%(seed)s || ':key:' || g)::uuid,
       md5(%(seed)s || ':user:' || (g %% %(users)s))::uuid,
       encode(sha256(convert_to('mk_live_' || md5(%(seed)s || ':secret:' || g), 'UTF8')), 'hex'),
       'mk_' || substr(md5(%(seed)s || ':secret:' || g), 1, 8),
       (ARRAY['ci', 'terraform', 'grafana', 'local dev', 'backend', 'reporting', 'cli'])
           [1 + floor(u1 * 7)::int] || ' key ' || g,
       CASE WHEN u2 < 0.5 THEN '["scenarios:read"]'::jsonb
            WHEN u2 < 0.8 THEN '["scenarios:read", "scenarios:write"]'::jsonb
            ELSE '["scenarios:read", "scenarios:write", "reports:read", "admin"]'::jsonb END,
       u3 >= 0.15, c,
       CASE WHEN u4 < 0.4 THEN 'infinity'::timestamptz
            WHEN u4 < 0.7 THEN c + interval '365 days' ELSE c + interval '90 days' END,
       CASE WHEN u5 < 0.1 THEN NULL ELSE c + (%(anchor)s::timestamptz - c) * u5 END
FROM (
  SELECT g, %(anchor)s::timestamptz - interval '1 day' * (%(days)s * {_u("0", "g", 13)} + 1) AS c,
         {_u("0", "g", 14)} AS u1, {_u("0", "g", 15)} AS u2, {_u("0", "g", 16)} AS u3,
         {_u("0", "g", 17)} AS u4, {_u("0", "g", 18)} AS u5
  FROM generate_series(1, %(keys)s) AS g
) k
ORDER BY c, g
"""

TABLES = ("scenarios", "scenario_logs", "scenario_metrics", "reports", "api_keys")


def _log_chunks(plan: Plan, scenarios: list[_Scenario], per_chunk: int) -> list[dict]:
    chunks, offset = [], 0
    spans = [(s.created, s.end, float(s.logs)) for s in scenarios]
    for a, b in _windows(plan, spans, per_chunk):
        seg: dict[str, list] = {k: [] for k in ("sno", "sid", "region", "kind", "created")}
        seg.update({k: [] for k in ("span", "n", "kfrom", "kto")})
        rows = 0
        for s in scenarios:
            if s.logs == 0 or s.end <= a or s.created >= b:
                continue
            span = (s.end - s.created).total_seconds()
            lo = max(0, math.ceil((a - s.created).total_seconds() * s.logs / span))
            hi = min(s.logs, math.ceil((b - s.created).total_seconds() * s.logs / span)) - 1
            if hi < lo:
                continue
            for key, value in (
                ("sno", s.no),
                ("sid", s.id),
                ("region", s.region),
                ("kind", s.kind),
                ("created", s.created),
                ("span", s.end - s.created),
                ("n", s.logs),
                ("kfrom", lo),
                ("kto", hi),
            ):
                seg[key].append(value)
            rows += hi - lo + 1
        if rows:
            chunks.append({**seg, "offset": offset, "rows": rows})
            offset += rows
    return chunks


def _metric_chunks(plan: Plan, scenarios: list[_Scenario], per_chunk: int) -> list[dict]:
    points = max(2, plan.size.metrics_per_scenario // len(SERIES))
    rng = random.Random(f"dbtier-sample:{plan.seed}:metric-levels")  # noqa: S311
    levels = {s.no: rng.lognormvariate(0, 0.8) for s in scenarios}
    steps = {}
    for s in scenarios:
        # a regular step of whole seconds, aligned on the scenario's start
        steps[s.no] = max(60, int((s.end - s.created).total_seconds() // (points - 1)))
    chunks, offset = [], 0
    spans = [(s.created, s.end, float(points * len(SERIES))) for s in scenarios]
    for a, b in _windows(plan, spans, per_chunk):
        seg: dict[str, list] = {k: [] for k in ("sno", "sid", "created", "step", "n", "level")}
        seg.update({"jfrom": [], "jto": []})
        rows = 0
        for s in scenarios:
            step = steps[s.no]
            lo = max(0, math.ceil((a - s.created).total_seconds() / step))
            hi = min(points, math.ceil((b - s.created).total_seconds() / step)) - 1
            if hi < lo:
                continue
            for key, value in (
                ("sno", s.no),
                ("sid", s.id),
                ("created", s.created),
                ("step", timedelta(seconds=step)),
                ("n", points),
                ("level", levels[s.no]),
                ("jfrom", lo),
                ("jto", hi),
            ):
                seg[key].append(value)
            rows += (hi - lo + 1) * len(SERIES)
        if rows:
            chunks.append({**seg, "offset": offset, "rows": rows})
            offset += rows
    return chunks


def _run_chunks(
    dsn: str | None,
    statement: str,
    chunks: list[dict],
    common: dict,
    jobs: int,
    label: str,
    report: Callable[[str], None],
) -> int:
    """Each chunk is one INSERT (own transaction); `jobs` connections take chunks in order."""
    total = sum(c["rows"] for c in chunks)
    todo = list(reversed(chunks))
    lock = threading.Lock()
    done = [0, 0]
    errors: list[BaseException] = []
    started = time.monotonic()

    def worker() -> None:
        try:
            with db.connect(dsn, autocommit=True) as conn:
                conn.execute("SET synchronous_commit = off")
                conn.execute("SET jit = off")
                while True:
                    with lock:
                        if errors or not todo:
                            return
                        chunk = todo.pop()
                    params = {**common, **{k: v for k, v in chunk.items() if k != "rows"}}
                    conn.execute(statement, params)
                    with lock:
                        done[0] += chunk["rows"]
                        done[1] += 1
                        if done[1] % max(1, len(chunks) // 10) == 0 or done[0] == total:
                            rate = done[0] / max(time.monotonic() - started, 1e-6)
                            report(
                                f"  {label}: {done[0]:,}/{total:,} rows "
                                f"({100 * done[0] // max(total, 1)} %, {rate:,.0f} rows/s)"
                            )
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return total


def plan_for(scale: float, *, seed: int = 42, anchor: datetime | None = None) -> Plan:
    return Plan(
        scale=parse_scale(scale),
        seed=int(seed),
        anchor=anchor or default_anchor(),
        size=size_for_scale(scale),
    )


def load_scale(
    dsn: str | None,
    scale: float,
    *,
    seed: int = 42,
    anchor: datetime | None = None,
    jobs: int = 2,
    report: Callable[[str], None] = lambda _m: None,
) -> dict:
    """Load realistic data at `scale` into empty tables (migration 0001 or later); returns the
    row counts, the seconds per table and the size on disk. Deterministic for (scale, seed,
    anchor). Big tables load in time-window chunks on `jobs` connections."""
    plan = plan_for(scale, seed=seed, anchor=anchor)
    if not 0 <= seed < 65536:
        raise UsageError(f"--seed must be between 0 and 65535 (got {seed})")
    scenarios = _scenarios(plan)
    seconds: dict[str, float] = {}
    started = time.monotonic()
    with db.connect(dsn) as conn:
        missing = [
            t
            for t in TABLES
            if conn.execute("SELECT to_regclass(%s)", (f"public.{t}",)).fetchone()[0] is None
        ]
        if missing:
            raise UsageError(
                f"table {missing[0]} not found: run `dbtier migrate up` before sample-data"
            )
        busy = [t for t in TABLES if conn.execute(f"SELECT EXISTS (SELECT FROM {t})").fetchone()[0]]
        if busy:
            raise UsageError(
                f"sample-data --scale loads into empty tables, but {busy[0]} has rows "
                "(use a fresh database)"
            )
        report(
            f"sample data: scale {plan.scale:g}, seed {plan.seed}, anchor {plan.anchor:%Y-%m-%d}"
        )
        t0 = time.monotonic()
        with conn.transaction():
            _insert_scenarios(conn, plan, scenarios)
        seconds["scenarios"] = time.monotonic() - t0
        report(f"  scenarios: {len(scenarios):,} rows ({seconds['scenarios']:.1f} s)")
    common = {"seed": plan.seed}
    per_chunk = 25_000
    t0 = time.monotonic()
    logs = _run_chunks(
        dsn,
        LOGS_SQL,
        _log_chunks(plan, scenarios, per_chunk),
        {**common, "sources": list(LOG_SOURCES), "bounds": source_thresholds(), "pii": 0.05},
        jobs,
        "scenario_logs",
        report,
    )
    seconds["scenario_logs"] = time.monotonic() - t0
    t0 = time.monotonic()
    metrics = _run_chunks(
        dsn,
        METRICS_SQL,
        _metric_chunks(plan, scenarios, per_chunk * 2),
        {
            **common,
            "mtypes": [m[0] for m in SERIES],
            "mnames": [m[1] for m in SERIES],
            "units": [m[2] for m in SERIES],
            "bases": [m[3] for m in SERIES],
        },
        jobs,
        "scenario_metrics",
        report,
    )
    seconds["scenario_metrics"] = time.monotonic() - t0
    with db.connect(dsn, autocommit=True) as conn:
        t0 = time.monotonic()
        weekly = [
            max(1, int((s.end - s.created).total_seconds() // (7 * 86400))) for s in scenarios
        ]
        reports = conn.execute(
            REPORTS_SQL,
            {
                **common,
                "sno": [s.no for s in scenarios],
                "sid": [s.id for s in scenarios],
                "kind": [s.kind for s in scenarios],
                "created": [s.created for s in scenarios],
                "ended": [s.end for s in scenarios],
                "n": weekly,
            },
        ).rowcount
        seconds["reports"] = time.monotonic() - t0
        report(f"  reports: {reports:,} rows ({seconds['reports']:.1f} s)")
        t0 = time.monotonic()
        keys = conn.execute(
            KEYS_SQL,
            {
                **common,
                "keys": plan.size.api_keys,
                "users": max(1, plan.size.api_keys // 3),
                "anchor": plan.anchor,
                "days": plan.size.days,
            },
        ).rowcount
        seconds["api_keys"] = time.monotonic() - t0
        report(f"  api_keys: {keys:,} rows ({seconds['api_keys']:.1f} s)")
        for table in ("scenario_logs", "scenario_metrics"):
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
            )
        t0 = time.monotonic()
        report("  VACUUM ANALYZE ...")
        conn.execute("VACUUM ANALYZE scenarios, scenario_logs, scenario_metrics, reports, api_keys")
        seconds["vacuum_analyze"] = time.monotonic() - t0
        size = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(format('public.%%I', t)::regclass)), 0)"
            "::bigint FROM unnest(%s::text[]) t",
            (list(TABLES),),
        ).fetchone()[0]
    elapsed = time.monotonic() - started
    report(f"sample data loaded in {elapsed:.1f} s, {size / 1e6:,.0f} MB (tables + indexes)")
    return {
        "scale": plan.scale,
        "seed": plan.seed,
        "anchor": plan.anchor.isoformat(),
        "rows": {
            "scenarios": len(scenarios),
            "scenario_logs": logs,
            "scenario_metrics": metrics,
            "reports": reports,
            "api_keys": keys,
        },
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "load_seconds": round(elapsed, 2),
        "bytes": size,
    }
