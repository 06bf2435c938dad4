-- 0003 materialized views v1.0.0 (transactional): the three materialized views of DB-001 and
-- the query_performance_log table for slow queries.
--
-- Each view has a UNIQUE index on its natural key, over NOT NULL columns only, so that
-- REFRESH MATERIALIZED VIEW CONCURRENTLY works (it needs a unique index covering all rows).
-- Days and months are computed in UTC, whatever the session's TimeZone, so that a refresh
-- always produces the same buckets.

-- ------------------------------------------------------------------ query_performance_log
CREATE TABLE public.query_performance_log (
    id                bigint        GENERATED ALWAYS AS IDENTITY,
    query_hash        text          NOT NULL,
    query_text        text          NOT NULL,
    execution_time_ms numeric(14,3) NOT NULL,
    rows              bigint,
    calls             bigint        NOT NULL DEFAULT 1,
    database_name     text,
    user_name         text,
    application_name  text,
    plan              jsonb,
    captured_at       timestamptz   NOT NULL DEFAULT now(),
    created_at        timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT query_performance_log_pkey PRIMARY KEY (id),
    CONSTRAINT query_performance_log_query_hash_check CHECK (length(query_hash) BETWEEN 1 AND 128),
    CONSTRAINT query_performance_log_execution_time_ms_check CHECK (execution_time_ms >= 0),
    CONSTRAINT query_performance_log_rows_check CHECK (rows IS NULL OR rows >= 0),
    CONSTRAINT query_performance_log_calls_check CHECK (calls >= 1)
);
COMMENT ON TABLE public.query_performance_log IS
    'Slow queries captured by the application or from pg_stat_statements: query_hash (queryid or '
    'a hash of the normalised text), execution_time_ms (mean per call when calls > 1), optional '
    'EXPLAIN (FORMAT JSON) in plan. captured_at = when the query ran, created_at = row insert.';
CREATE INDEX idx_query_perf_created
    ON public.query_performance_log (created_at);
CREATE INDEX idx_query_perf_hash_created
    ON public.query_performance_log (query_hash, created_at);

-- ------------------------------------------------------------------ mv_scenario_daily_stats
CREATE MATERIALIZED VIEW public.mv_scenario_daily_stats AS
SELECT
    l.scenario_id,
    (l.received_at AT TIME ZONE 'UTC')::date              AS day,
    count(*)                                              AS log_count,
    sum(l.size_bytes)::bigint                             AS total_size_bytes,
    round(avg(l.size_bytes), 2)                           AS avg_size_bytes,
    max(l.size_bytes)                                     AS max_size_bytes,
    count(*) FILTER (WHERE l.has_pii)                     AS pii_count,
    count(DISTINCT l.source)                              AS distinct_sources,
    sum(l.token_count)::bigint                            AS total_tokens,
    sum(l.sqs_blocks)::bigint                             AS total_sqs_blocks,
    min(l.received_at)                                    AS first_received_at,
    max(l.received_at)                                    AS last_received_at
FROM public.scenario_logs AS l
GROUP BY l.scenario_id, (l.received_at AT TIME ZONE 'UTC')::date
WITH DATA;
COMMENT ON MATERIALIZED VIEW public.mv_scenario_daily_stats IS
    'Per scenario per UTC day: log count, sizes, PII count, distinct sources, tokens, SQS blocks. '
    'Refresh with REFRESH MATERIALIZED VIEW CONCURRENTLY.';
CREATE UNIQUE INDEX mv_scenario_daily_stats_key
    ON public.mv_scenario_daily_stats (scenario_id, day);

-- ------------------------------------------------------------------ mv_monthly_costs
-- One row per scenario and UTC month in which the scenario has logs or metrics.
-- estimated_cost_share spreads the scenario's total_cost_estimate over its months in proportion
-- to their log count, metric_cost_usd sums the metrics whose unit is USD.
CREATE MATERIALIZED VIEW public.mv_monthly_costs AS
WITH log_months AS (
    SELECT scenario_id,
           date_trunc('month', received_at AT TIME ZONE 'UTC')::date AS month,
           count(*)                    AS log_count,
           sum(size_bytes)::bigint     AS log_bytes,
           sum(token_count)::bigint    AS tokens,
           sum(sqs_blocks)::bigint     AS sqs_blocks,
           count(*) FILTER (WHERE has_pii) AS pii_count
    FROM public.scenario_logs
    GROUP BY 1, 2
),
metric_months AS (
    SELECT scenario_id,
           date_trunc('month', "timestamp" AT TIME ZONE 'UTC')::date AS month,
           count(*)                                                     AS metric_points,
           coalesce(sum(value) FILTER (WHERE unit = 'USD'), 0)          AS metric_cost_usd,
           coalesce(sum(value) FILTER (WHERE metric_type = 'sqs'), 0)    AS sqs_metric_total,
           coalesce(sum(value) FILTER (WHERE metric_type = 'lambda'), 0) AS lambda_metric_total,
           coalesce(sum(value) FILTER (WHERE metric_type = 'bedrock'), 0) AS bedrock_metric_total
    FROM public.scenario_metrics
    GROUP BY 1, 2
),
months AS (
    SELECT scenario_id, month FROM log_months
    UNION
    SELECT scenario_id, month FROM metric_months
),
log_totals AS (
    SELECT scenario_id, sum(log_count) AS log_count FROM log_months GROUP BY scenario_id
)
SELECT
    m.scenario_id,
    m.month,
    s.name                                          AS scenario_name,
    s.region,
    s.status,
    coalesce(lm.log_count, 0)                       AS log_count,
    coalesce(lm.log_bytes, 0)                       AS log_bytes,
    coalesce(lm.tokens, 0)                          AS tokens,
    coalesce(lm.sqs_blocks, 0)                      AS sqs_blocks,
    coalesce(lm.pii_count, 0)                       AS pii_count,
    coalesce(mm.metric_points, 0)                   AS metric_points,
    coalesce(mm.metric_cost_usd, 0)                 AS metric_cost_usd,
    coalesce(mm.sqs_metric_total, 0)                AS sqs_metric_total,
    coalesce(mm.lambda_metric_total, 0)             AS lambda_metric_total,
    coalesce(mm.bedrock_metric_total, 0)            AS bedrock_metric_total,
    s.total_cost_estimate                           AS scenario_total_cost_estimate,
    CASE WHEN coalesce(lt.log_count, 0) = 0 THEN 0::numeric(12,6)
         ELSE round(s.total_cost_estimate * coalesce(lm.log_count, 0) / lt.log_count, 6)
    END                                             AS estimated_cost_share
FROM months AS m
JOIN public.scenarios AS s ON s.id = m.scenario_id
LEFT JOIN log_months AS lm ON lm.scenario_id = m.scenario_id AND lm.month = m.month
LEFT JOIN metric_months AS mm ON mm.scenario_id = m.scenario_id AND mm.month = m.month
LEFT JOIN log_totals AS lt ON lt.scenario_id = m.scenario_id
WITH DATA;
COMMENT ON MATERIALIZED VIEW public.mv_monthly_costs IS
    'Per scenario per UTC month (first day of the month): log volume, metrics-based sums '
    '(metric_cost_usd = metrics with unit USD) and the scenario''s total_cost_estimate spread '
    'over months by log count (estimated_cost_share).';
CREATE UNIQUE INDEX mv_monthly_costs_key
    ON public.mv_monthly_costs (scenario_id, month);

-- ------------------------------------------------------------------ mv_source_analytics
CREATE MATERIALIZED VIEW public.mv_source_analytics AS
SELECT
    l.source,
    count(*)                                               AS log_count,
    count(DISTINCT l.scenario_id)                          AS scenario_count,
    sum(l.size_bytes)::bigint                              AS total_size_bytes,
    round(avg(l.size_bytes), 2)                            AS avg_size_bytes,
    count(*) FILTER (WHERE l.has_pii)                      AS pii_count,
    round(count(*) FILTER (WHERE l.has_pii)::numeric / count(*), 4) AS pii_ratio,
    sum(l.token_count)::bigint                             AS total_tokens,
    min(l.received_at)                                     AS first_seen_at,
    max(l.received_at)                                     AS last_seen_at
FROM public.scenario_logs AS l
GROUP BY l.source
WITH DATA;
COMMENT ON MATERIALIZED VIEW public.mv_source_analytics IS
    'Per log source: counts, sizes, PII ratio (0..1), first and last seen.';
CREATE UNIQUE INDEX mv_source_analytics_key
    ON public.mv_source_analytics (source);
