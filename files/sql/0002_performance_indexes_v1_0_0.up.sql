-- dbtier:no-transaction
--
-- 0002 performance indexes v1.0.0: the 17 indexes of DB-001 (9 composite, 6 partial, 2 covering).
-- Built with CREATE INDEX CONCURRENTLY (no write lock on the tables), so this file runs
-- statement by statement in autocommit. Every statement is idempotent (IF NOT EXISTS, COMMENT
-- overwrites), so a run that failed half-way can simply be run again: dbtier drops an INVALID
-- index left by a failed build before it retries.
--
-- now() cannot appear in an index predicate (it is not IMMUTABLE), so the plan's
-- "last 30 days" and "not expired" partial indexes are designed differently:
--   idx_logs_recent   = plain B-tree on (received_at DESC). A range scan for
--                       received_at >= now() - interval '30 days' reads only the recent entries,
--                       it never goes stale and needs no refresh job, and it also serves
--                       ORDER BY received_at DESC LIMIT n. Not BRIN: the archiver deletes old rows
--                       and new rows reuse that space, which breaks the physical ordering BRIN
--                       relies on. Not a partial index with a literal date: it would freeze.
--   idx_apikeys_valid = partial B-tree on (expires_at) WHERE is_active. The immutable half of
--                       "valid" (is_active) is the predicate, the time-dependent half
--                       (expires_at > now()) is an index range condition evaluated at query
--                       time. expires_at is NOT NULL ('infinity' = never expires), so validity
--                       is a single range, no OR IS NULL. Lookups by key use the unique key_hash.
-- Representative queries for every index: docs/SCHEMA.md.

-- ---------------------------------------------------------------- composite (9)
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_logs_scenario_received
    ON public.scenario_logs (scenario_id, received_at DESC);

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_logs_scenario_source
    ON public.scenario_logs (scenario_id, source);

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_logs_scenario_pii
    ON public.scenario_logs (scenario_id, has_pii);

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_logs_scenario_size
    ON public.scenario_logs (scenario_id, size_bytes DESC);

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_metrics_scenario_time_type
    ON public.scenario_metrics (scenario_id, "timestamp" DESC, metric_type);

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_metrics_scenario_name
    ON public.scenario_metrics (scenario_id, metric_name);

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_reports_scenario_created
    ON public.reports (scenario_id, created_at DESC);

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_scenarios_status_created
    ON public.scenarios (status, created_at DESC);

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_scenarios_region_status
    ON public.scenarios (region, status);

-- ---------------------------------------------------------------- partial (6)
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_scenarios_active
    ON public.scenarios (updated_at DESC)
    WHERE status <> 'archived';

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_scenarios_running
    ON public.scenarios (updated_at)
    INCLUDE (id, name, region)
    WHERE status = 'running';

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_logs_pii_only
    ON public.scenario_logs (received_at DESC)
    WHERE has_pii;

-- Not partial (see the header): a B-tree on the time column stays "recent" by itself.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_logs_recent
    ON public.scenario_logs (received_at DESC);

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_apikeys_active
    ON public.api_keys (user_id, created_at DESC)
    WHERE is_active;

-- Partial on the immutable half of "valid", range on the time-dependent half (see the header).
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_apikeys_valid
    ON public.api_keys (expires_at)
    WHERE is_active;

-- ---------------------------------------------------------------- covering (2)
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_scenarios_covering
    ON public.scenarios (created_at DESC)
    INCLUDE (id, name, status, region, total_requests, total_cost_estimate);

-- Keyed on scenario_id alone (idx_logs_scenario_received already orders by time): per-scenario
-- summaries (counts, bytes, PII, tokens, first/last log) are index-only scans.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_logs_covering
    ON public.scenario_logs (scenario_id)
    INCLUDE (received_at, source, size_bytes, has_pii, token_count, sqs_blocks);

-- ---------------------------------------------------------------- documentation
COMMENT ON INDEX public.idx_logs_scenario_received IS
    'Logs of a scenario in a time range, newest first.';
COMMENT ON INDEX public.idx_logs_scenario_source IS
    'Per-scenario analytics by log source.';
COMMENT ON INDEX public.idx_logs_scenario_pii IS
    'PII reports of one scenario.';
COMMENT ON INDEX public.idx_logs_scenario_size IS
    'Largest logs of a scenario (top-N by size_bytes).';
COMMENT ON INDEX public.idx_metrics_scenario_time_type IS
    'Metric time series of a scenario, newest first, filtered by metric_type.';
COMMENT ON INDEX public.idx_metrics_scenario_name IS
    'Aggregations of one metric_name of a scenario.';
COMMENT ON INDEX public.idx_reports_scenario_created IS
    'Report listing of a scenario, newest first.';
COMMENT ON INDEX public.idx_scenarios_status_created IS
    'Dashboard: scenarios of a status, newest first.';
COMMENT ON INDEX public.idx_scenarios_region_status IS
    'Filtering scenarios by region and status.';
COMMENT ON INDEX public.idx_scenarios_active IS
    'Partial (status <> archived): active scenarios, most recently updated first.';
COMMENT ON INDEX public.idx_scenarios_running IS
    'Partial (status = running), covering id, name, region: monitoring of running scenarios '
    '(e.g. stalled ones, oldest update first) as an index-only scan.';
COMMENT ON INDEX public.idx_logs_pii_only IS
    'Partial (has_pii): security audit of PII logs across scenarios, newest first.';
COMMENT ON INDEX public.idx_logs_recent IS
    'B-tree on received_at: "last N days" ranges and the newest-first feed. Not a partial index '
    'because now() is not allowed in an index predicate and a literal date would go stale.';
COMMENT ON INDEX public.idx_apikeys_active IS
    'Partial (is_active): the active keys of a user.';
COMMENT ON INDEX public.idx_apikeys_valid IS
    'Partial (is_active) on expires_at: "expires_at > now()" becomes an index range condition '
    'at query time (now() is not allowed in the predicate itself).';
COMMENT ON INDEX public.idx_scenarios_covering IS
    'Covering: the scenario list page as an index-only scan.';
COMMENT ON INDEX public.idx_logs_covering IS
    'Covering: per-scenario log summaries (count, bytes, PII, tokens, SQS blocks, first/last '
    'log) as an index-only scan.';
