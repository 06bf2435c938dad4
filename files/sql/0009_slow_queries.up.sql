-- 0009: `dbtier slow-queries collect` fills query_performance_log from pg_stat_statements.
--
-- Every 5 minutes the ops host reads pg_stat_statements and keeps the cumulative counters of
-- each statement in query_stats_sample / query_stats_snapshot (the previous sample only, kept
-- in the database so that any ops host continues where another stopped); the difference to the
-- previous sample is one window, and each statement whose estimated p95 in that window exceeds
-- slow_query_threshold_ms becomes one query_performance_log row. The new columns are NULL on
-- rows written before 0009 (or by the application).
--
-- Ownership and grants as every other table: owned by the migrating role (the owner), DML for the
-- application through roles/database_bootstrap's default privileges; no GRANT here.

ALTER TABLE public.query_performance_log
    ADD COLUMN queryid       bigint,
    ADD COLUMN window_start  timestamptz,
    ADD COLUMN window_end    timestamptz,
    ADD COLUMN p95_ms        numeric(14,3),
    ADD COLUMN max_ms        numeric(14,3),
    ADD COLUMN total_time_ms numeric(18,3),
    ADD CONSTRAINT query_performance_log_window_check
        CHECK (window_start IS NULL OR window_end >= window_start),
    ADD CONSTRAINT query_performance_log_p95_ms_check CHECK (p95_ms IS NULL OR p95_ms >= 0),
    ADD CONSTRAINT query_performance_log_total_time_ms_check
        CHECK (total_time_ms IS NULL OR total_time_ms >= 0);
COMMENT ON COLUMN public.query_performance_log.queryid IS
    'pg_stat_statements.queryid (query_hash holds it as text too); NULL before 0009.';
COMMENT ON COLUMN public.query_performance_log.p95_ms IS
    'Estimated p95 of the window: mean + 1.645 x standard deviation of the window, clamped to '
    '[mean, max_exec_time] (pg_stat_statements keeps no percentiles).';
COMMENT ON COLUMN public.query_performance_log.max_ms IS
    'Slowest call of the window when known (pg_stat_statements'' max rose in it, or the window '
    'holds every call since the counters started); NULL otherwise.';
COMMENT ON COLUMN public.query_performance_log.total_time_ms IS
    'Total execution time of the window''s calls (execution_time_ms is their mean).';
-- `dbtier slow-queries report --since 24h`: the rows seen in the period (the window's end; the
-- capture time of rows without a window).
CREATE INDEX query_performance_log_seen_idx
    ON public.query_performance_log ((coalesce(window_end, captured_at)) DESC);

-- One row per collect; only the newest sample is kept (a collect replaces it in the same
-- transaction that writes the log rows: an interrupted collect never counts a window twice).
CREATE TABLE public.query_stats_sample (
    id                bigint      GENERATED ALWAYS AS IDENTITY,
    taken_at          timestamptz NOT NULL,
    stats_reset       timestamptz,
    dealloc           bigint,
    statements        integer     NOT NULL,
    hidden_statements integer     NOT NULL DEFAULT 0,
    last_pruned_at    timestamptz,
    host              text,
    CONSTRAINT query_stats_sample_pkey PRIMARY KEY (id),
    CONSTRAINT query_stats_sample_statements_check
        CHECK (statements >= 0 AND hidden_statements >= 0)
);
COMMENT ON TABLE public.query_stats_sample IS
    'dbtier slow-queries collect: when the pg_stat_statements counters in query_stats_snapshot '
    'were read, pg_stat_statements_info.stats_reset and dealloc then, hidden_statements = '
    '<insufficient privilege> rows (not snapshotted), last_pruned_at = last retention run.';

CREATE TABLE public.query_stats_snapshot (
    sample_id       bigint           NOT NULL,
    dbid            oid              NOT NULL,
    userid          oid              NOT NULL,
    queryid         bigint           NOT NULL,
    calls           bigint           NOT NULL,
    total_exec_ms   double precision NOT NULL,
    sumsq_exec_ms2  double precision NOT NULL,
    max_exec_ms     double precision NOT NULL,
    rows            bigint           NOT NULL,
    CONSTRAINT query_stats_snapshot_pkey PRIMARY KEY (sample_id, dbid, userid, queryid),
    CONSTRAINT query_stats_snapshot_sample_id_fkey FOREIGN KEY (sample_id)
        REFERENCES public.query_stats_sample (id) ON DELETE CASCADE
);
COMMENT ON TABLE public.query_stats_snapshot IS
    'Cumulative pg_stat_statements counters (top-level statements) of a query_stats_sample: '
    'sumsq_exec_ms2 = calls x (stddev_exec_time^2 + mean_exec_time^2), the sum of squares.';
