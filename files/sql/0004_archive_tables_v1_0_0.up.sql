-- 0004 archive tables v1.0.0 (transactional): DB-003 data archiving, plus backup_history (DB-002).
--
--   archive_policies          what to archive when (seeded: logs 365 d, metrics 730 d with daily
--                             aggregation, reports 180 d compressed to S3)
--   archive_jobs              one row per archiving run, with a resume cursor
--   scenario_logs_archive     RANGE-partitioned by month on received_at, DEFAULT partition
--   scenario_metrics_archive  RANGE-partitioned by month on "timestamp", raw rows and daily
--                             aggregates, DEFAULT partition
--   reports_archive           report files moved to S3 (bucket, key, version, sizes, sha256)
--   dbtier_archive_ensure_partition(parent, month)   creates <parent>_yYYYYmMM idempotently
--   v_scenario_logs_all / v_scenario_metrics_all     live UNION ALL archived (is_archived)
--   v_archive_statistics      live vs archived rows and sizes, last job per table
--   backup_history            one row per backup job (written by dbtier backup)
--
-- Monthly partitions are bounded by UTC month boundaries. The DEFAULT partition catches every
-- row whose month has no partition yet, so no insert is ever rejected; the helper moves such
-- rows out of DEFAULT when it creates their month's partition.

-- ------------------------------------------------------------------ archive_policies
CREATE TABLE public.archive_policies (
    id                       integer     GENERATED ALWAYS AS IDENTITY,
    table_name               text        NOT NULL,
    archive_table            text        NOT NULL,
    archive_after_days       integer     NOT NULL,
    aggregate_before_archive boolean     NOT NULL DEFAULT false,
    aggregation_level        text        NOT NULL DEFAULT 'none',
    compress                 boolean     NOT NULL DEFAULT false,
    s3_offload               boolean     NOT NULL DEFAULT false,
    enabled                  boolean     NOT NULL DEFAULT true,
    batch_size               integer     NOT NULL DEFAULT 10000,
    description              text,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT archive_policies_pkey PRIMARY KEY (id),
    CONSTRAINT archive_policies_table_name_key UNIQUE (table_name),
    CONSTRAINT archive_policies_archive_after_days_check CHECK (archive_after_days > 0),
    CONSTRAINT archive_policies_aggregation_level_check
        CHECK (aggregation_level IN ('none', 'day')),
    CONSTRAINT archive_policies_aggregation_consistent_check
        CHECK (aggregate_before_archive = (aggregation_level <> 'none')),
    CONSTRAINT archive_policies_batch_size_check CHECK (batch_size BETWEEN 1 AND 1000000)
);
COMMENT ON TABLE public.archive_policies IS
    'Archiving policy per live table: rows older than archive_after_days move to archive_table, '
    'optionally aggregated (aggregation_level day) or compressed and offloaded to S3.';

CREATE TRIGGER archive_policies_set_updated_at
    BEFORE UPDATE ON public.archive_policies
    FOR EACH ROW EXECUTE FUNCTION public.dbtier_set_updated_at();

INSERT INTO public.archive_policies
    (table_name, archive_table, archive_after_days, aggregate_before_archive, aggregation_level,
     compress, s3_offload, batch_size, description)
VALUES
    ('scenario_logs', 'scenario_logs_archive', 365, false, 'none', false, false, 10000,
     'Logs older than one year move to the monthly partitions of scenario_logs_archive.'),
    ('scenario_metrics', 'scenario_metrics_archive', 730, true, 'day', false, false, 10000,
     'Metrics older than two years are rolled up per day into scenario_metrics_archive.'),
    ('reports', 'reports_archive', 180, false, 'none', true, true, 100,
     'Report files older than six months are compressed and moved to S3 (reports_archive).');

-- ------------------------------------------------------------------ archive_jobs
CREATE TABLE public.archive_jobs (
    id                bigint      GENERATED ALWAYS AS IDENTITY,
    job_type          text        NOT NULL,
    status            text        NOT NULL DEFAULT 'pending',
    dry_run           boolean     NOT NULL DEFAULT false,
    batch_size        integer     NOT NULL DEFAULT 10000,
    cutoff_at         timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    completed_at      timestamptz,
    records_processed bigint      NOT NULL DEFAULT 0,
    records_archived  bigint      NOT NULL DEFAULT 0,
    records_aggregated bigint     NOT NULL DEFAULT 0,
    records_deleted   bigint      NOT NULL DEFAULT 0,
    bytes_archived    bigint      NOT NULL DEFAULT 0,
    last_processed_id bigint,
    resume_cursor     jsonb,
    error_message     text,
    host              text,
    CONSTRAINT archive_jobs_pkey PRIMARY KEY (id),
    CONSTRAINT archive_jobs_job_type_check CHECK (job_type IN ('logs', 'metrics', 'reports')),
    CONSTRAINT archive_jobs_status_check
        CHECK (status IN ('pending', 'running', 'completed', 'failed', 'partial')),
    CONSTRAINT archive_jobs_batch_size_check CHECK (batch_size BETWEEN 1 AND 1000000),
    CONSTRAINT archive_jobs_started_check
        CHECK (status = 'pending' OR started_at IS NOT NULL),
    CONSTRAINT archive_jobs_completed_check
        CHECK ((status IN ('pending', 'running')) = (completed_at IS NULL)),
    CONSTRAINT archive_jobs_completed_after_started_check
        CHECK (completed_at IS NULL OR completed_at >= started_at),
    CONSTRAINT archive_jobs_counters_check CHECK (
        records_processed >= 0 AND records_archived >= 0 AND records_aggregated >= 0
        AND records_deleted >= 0 AND bytes_archived >= 0
    ),
    CONSTRAINT archive_jobs_resume_cursor_check
        CHECK (resume_cursor IS NULL OR jsonb_typeof(resume_cursor) = 'object')
);
COMMENT ON TABLE public.archive_jobs IS
    'One row per archiving run (job_type logs | metrics | reports; status pending | running | '
    'completed | failed | partial). last_processed_id (logs, metrics) or resume_cursor (any, '
    'e.g. a report id) is where an interrupted run resumes. At most one non-dry-run job per '
    'type is running at a time.';
CREATE INDEX archive_jobs_type_started_idx
    ON public.archive_jobs (job_type, started_at DESC);
CREATE UNIQUE INDEX archive_jobs_one_running_per_type
    ON public.archive_jobs (job_type)
    WHERE status = 'running' AND NOT dry_run;

-- ------------------------------------------------------------------ scenario_logs_archive
CREATE TABLE public.scenario_logs_archive (
    id               bigint      NOT NULL,
    scenario_id      uuid        NOT NULL,
    received_at      timestamptz NOT NULL,
    source           text        NOT NULL,
    message_hash     char(64)    NOT NULL,
    message_preview  text,
    size_bytes       integer     NOT NULL,
    token_count      integer     NOT NULL DEFAULT 0,
    sqs_blocks       integer     NOT NULL DEFAULT 0,
    has_pii          boolean     NOT NULL DEFAULT false,
    payload          jsonb,
    archived_at      timestamptz NOT NULL DEFAULT now(),
    archive_batch_id bigint,
    CONSTRAINT scenario_logs_archive_pkey PRIMARY KEY (id, received_at),
    CONSTRAINT scenario_logs_archive_scenario_id_fkey FOREIGN KEY (scenario_id)
        REFERENCES public.scenarios (id) ON DELETE CASCADE,
    CONSTRAINT scenario_logs_archive_counters_check
        CHECK (size_bytes >= 0 AND token_count >= 0 AND sqs_blocks >= 0)
) PARTITION BY RANGE (received_at);
COMMENT ON TABLE public.scenario_logs_archive IS
    'Archived scenario_logs (same columns and ids), partitioned by UTC month of received_at '
    '(partitions <table>_yYYYYmMM via dbtier_archive_ensure_partition, DEFAULT partition for the '
    'rest). archive_batch_id = archive_jobs.id of the run that moved the row.';
CREATE INDEX scenario_logs_archive_scenario_received_idx
    ON public.scenario_logs_archive (scenario_id, received_at DESC);
CREATE INDEX scenario_logs_archive_batch_idx
    ON public.scenario_logs_archive (archive_batch_id);

CREATE TABLE public.scenario_logs_archive_default
    PARTITION OF public.scenario_logs_archive DEFAULT;
COMMENT ON TABLE public.scenario_logs_archive_default IS
    'DEFAULT partition of scenario_logs_archive: rows whose month has no partition yet.';

-- ------------------------------------------------------------------ scenario_metrics_archive
-- Raw rows keep their original id (aggregation_level none, sample_count 1). Daily aggregates
-- have id NULL, "timestamp" = start of the UTC day, value = avg_value. archive_id is the
-- table's own key (a sequence: identity columns on partitioned tables need PostgreSQL 17).
CREATE TABLE public.scenario_metrics_archive (
    archive_id        bigserial     NOT NULL,
    id                bigint,
    scenario_id       uuid          NOT NULL,
    "timestamp"       timestamptz   NOT NULL,
    metric_type       text          NOT NULL,
    metric_name       text          NOT NULL,
    value             numeric(20,6) NOT NULL,
    unit              text          NOT NULL DEFAULT 'count',
    extra_data        jsonb         NOT NULL DEFAULT '{}'::jsonb,
    is_aggregated     boolean       NOT NULL DEFAULT false,
    aggregation_level text          NOT NULL DEFAULT 'none',
    sample_count      integer       NOT NULL DEFAULT 1,
    min_value         numeric(20,6),
    max_value         numeric(20,6),
    avg_value         numeric(20,6),
    archived_at       timestamptz   NOT NULL DEFAULT now(),
    archive_batch_id  bigint,
    CONSTRAINT scenario_metrics_archive_pkey PRIMARY KEY (archive_id, "timestamp"),
    CONSTRAINT scenario_metrics_archive_id_key UNIQUE (id, "timestamp"),
    CONSTRAINT scenario_metrics_archive_scenario_id_fkey FOREIGN KEY (scenario_id)
        REFERENCES public.scenarios (id) ON DELETE CASCADE,
    CONSTRAINT scenario_metrics_archive_aggregation_level_check
        CHECK (aggregation_level IN ('none', 'day')),
    CONSTRAINT scenario_metrics_archive_sample_count_check CHECK (sample_count >= 1),
    CONSTRAINT scenario_metrics_archive_aggregate_check CHECK (
        CASE WHEN is_aggregated
             THEN aggregation_level = 'day' AND id IS NULL
                  AND min_value IS NOT NULL AND max_value IS NOT NULL AND avg_value IS NOT NULL
                  AND min_value <= avg_value AND avg_value <= max_value
             ELSE aggregation_level = 'none' AND id IS NOT NULL AND sample_count = 1
        END
    ),
    CONSTRAINT scenario_metrics_archive_extra_data_check
        CHECK (jsonb_typeof(extra_data) = 'object')
) PARTITION BY RANGE ("timestamp");
COMMENT ON TABLE public.scenario_metrics_archive IS
    'Archived scenario_metrics, partitioned by UTC month of "timestamp": raw rows (original id, '
    'is_aggregated false) and daily aggregates (id NULL, is_aggregated true, aggregation_level '
    'day, sample_count, min/max/avg_value, value = avg_value). DEFAULT partition for months '
    'without a partition.';
CREATE INDEX scenario_metrics_archive_scenario_time_idx
    ON public.scenario_metrics_archive (scenario_id, "timestamp" DESC, metric_type);
CREATE UNIQUE INDEX scenario_metrics_archive_aggregate_key
    ON public.scenario_metrics_archive (scenario_id, metric_type, metric_name, unit, "timestamp")
    WHERE is_aggregated;
CREATE INDEX scenario_metrics_archive_batch_idx
    ON public.scenario_metrics_archive (archive_batch_id);

CREATE TABLE public.scenario_metrics_archive_default
    PARTITION OF public.scenario_metrics_archive DEFAULT;
COMMENT ON TABLE public.scenario_metrics_archive_default IS
    'DEFAULT partition of scenario_metrics_archive: rows whose month has no partition yet.';

-- ------------------------------------------------------------------ reports_archive
CREATE TABLE public.reports_archive (
    id               uuid        NOT NULL,
    scenario_id      uuid        NOT NULL,
    created_at       timestamptz NOT NULL,
    report_format    text        NOT NULL,
    file_path        text        NOT NULL,
    generated_by     text,
    extra_data       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    s3_bucket        text        NOT NULL,
    s3_key           text        NOT NULL,
    s3_version_id    text,
    storage_class    text        NOT NULL DEFAULT 'STANDARD_IA',
    compression      text        NOT NULL DEFAULT 'zstd',
    original_size    bigint      NOT NULL,
    compressed_size  bigint      NOT NULL,
    sha256           char(64)    NOT NULL,
    archived_at      timestamptz NOT NULL DEFAULT now(),
    archive_batch_id bigint,
    CONSTRAINT reports_archive_pkey PRIMARY KEY (id),
    CONSTRAINT reports_archive_s3_object_key UNIQUE (s3_bucket, s3_key),
    CONSTRAINT reports_archive_scenario_id_fkey FOREIGN KEY (scenario_id)
        REFERENCES public.scenarios (id) ON DELETE CASCADE,
    CONSTRAINT reports_archive_report_format_check CHECK (report_format IN ('pdf', 'csv')),
    CONSTRAINT reports_archive_s3_bucket_check CHECK (length(s3_bucket) BETWEEN 3 AND 63),
    CONSTRAINT reports_archive_s3_key_check CHECK (length(s3_key) BETWEEN 1 AND 1024),
    CONSTRAINT reports_archive_compression_check CHECK (compression IN ('none', 'gzip', 'zstd')),
    CONSTRAINT reports_archive_sizes_check CHECK (original_size >= 0 AND compressed_size >= 0),
    CONSTRAINT reports_archive_sha256_check CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    CONSTRAINT reports_archive_extra_data_check CHECK (jsonb_typeof(extra_data) = 'object')
);
COMMENT ON TABLE public.reports_archive IS
    'Reports whose file moved to S3: the original report row plus the S3 reference (s3_bucket, '
    's3_key, s3_version_id), compression, original and compressed size, and the sha256 (hex) '
    'of the stored object.';
CREATE INDEX reports_archive_scenario_created_idx
    ON public.reports_archive (scenario_id, created_at DESC);

-- ------------------------------------------------------------------ partition helper
CREATE FUNCTION public.dbtier_archive_ensure_partition(parent regclass, month date)
    RETURNS regclass
    LANGUAGE plpgsql
    SET search_path = pg_catalog
AS $$
DECLARE
    lo        date := date_trunc('month', month)::date;
    hi        date := (date_trunc('month', month) + interval '1 month')::date;
    nsp_oid   oid;
    nsp       name;
    base      name;
    key_col   name;
    key_type  regtype;
    part_name text;
    part      regclass;
    dflt      regclass;
    lo_bound  text;
    hi_bound  text;
    stray     boolean := false;
BEGIN
    IF parent IS NULL OR month IS NULL THEN
        RAISE EXCEPTION 'dbtier_archive_ensure_partition: parent and month are required';
    END IF;
    SELECT c.relnamespace, n.nspname, c.relname INTO nsp_oid, nsp, base
    FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
    WHERE c.oid = parent AND c.relkind = 'p';
    IF NOT FOUND THEN
        RAISE EXCEPTION '% is not a partitioned table', parent;
    END IF;
    SELECT a.attname, a.atttypid::regtype INTO key_col, key_type
    FROM pg_partitioned_table AS p
    JOIN pg_attribute AS a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
    WHERE p.partrelid = parent AND p.partstrat = 'r' AND p.partnatts = 1 AND p.partattrs[0] > 0;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% is not range-partitioned on one column', parent;
    END IF;

    part_name := format('%s_y%sm%s', base, to_char(lo, 'YYYY'), to_char(lo, 'MM'));
    IF length(part_name) > 63 THEN
        RAISE EXCEPTION 'partition name % is longer than 63 characters', part_name;
    END IF;

    -- Serialise concurrent callers for the same parent, then look again.
    PERFORM pg_advisory_xact_lock(hashtext('dbtier_archive_ensure_partition'),
                                  hashtext(parent::oid::text));

    SELECT c.oid::regclass INTO part
    FROM pg_class AS c WHERE c.relnamespace = nsp_oid AND c.relname = part_name;
    IF FOUND THEN
        IF NOT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = part AND inhparent = parent) THEN
            RAISE EXCEPTION '% exists but is not a partition of %', part, parent;
        END IF;
        RETURN part;
    END IF;

    IF key_type = 'timestamp with time zone'::regtype THEN
        lo_bound := (lo::timestamp AT TIME ZONE 'UTC')::text;
        hi_bound := (hi::timestamp AT TIME ZONE 'UTC')::text;
    ELSIF key_type IN ('timestamp without time zone'::regtype, 'date'::regtype) THEN
        lo_bound := lo::text;
        hi_bound := hi::text;
    ELSE
        RAISE EXCEPTION 'partition key %.% has type %, expected a date or timestamp',
            parent, key_col, key_type;
    END IF;

    SELECT i.inhrelid::regclass INTO dflt
    FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
    WHERE i.inhparent = parent AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT';
    IF dflt IS NOT NULL THEN
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE %I >= %L AND %I < %L)',
                       dflt, key_col, lo_bound, key_col, hi_bound)
            INTO stray;
    END IF;

    IF stray THEN
        -- Rows of this month already sit in DEFAULT: CREATE ... PARTITION OF would fail, so
        -- build the table, move the rows into it, then attach it.
        EXECUTE format('CREATE TABLE %I.%I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS '
                       'INCLUDING STORAGE)', nsp, part_name, parent);
        EXECUTE format('WITH moved AS (DELETE FROM %s WHERE %I >= %L AND %I < %L RETURNING *) '
                       'INSERT INTO %I.%I SELECT * FROM moved',
                       dflt, key_col, lo_bound, key_col, hi_bound, nsp, part_name);
        EXECUTE format('ALTER TABLE %s ATTACH PARTITION %I.%I FOR VALUES FROM (%L) TO (%L)',
                       parent, nsp, part_name, lo_bound, hi_bound);
    ELSE
        EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                       nsp, part_name, parent, lo_bound, hi_bound);
    END IF;
    EXECUTE format('COMMENT ON TABLE %I.%I IS %L', nsp, part_name,
                   format('Partition of %s for %s (UTC month), created by '
                          'dbtier_archive_ensure_partition.', base, to_char(lo, 'YYYY-MM')));
    RETURN format('%I.%I', nsp, part_name)::regclass;
END;
$$;
COMMENT ON FUNCTION public.dbtier_archive_ensure_partition(regclass, date) IS
    'Creates the monthly partition <parent>_yYYYYmMM of a RANGE-partitioned table for the UTC '
    'month containing "month", idempotently (returns the existing one), moving any rows of that '
    'month out of the DEFAULT partition. Returns the partition.';

-- ------------------------------------------------------------------ unified views
CREATE VIEW public.v_scenario_logs_all AS
SELECT id, scenario_id, received_at, source, message_hash, message_preview, size_bytes,
       token_count, sqs_blocks, has_pii, payload,
       false AS is_archived, NULL::timestamptz AS archived_at
FROM public.scenario_logs
UNION ALL
SELECT id, scenario_id, received_at, source, message_hash, message_preview, size_bytes,
       token_count, sqs_blocks, has_pii, payload,
       true AS is_archived, archived_at
FROM public.scenario_logs_archive;
COMMENT ON VIEW public.v_scenario_logs_all IS
    'Live and archived logs together (same columns as scenario_logs, plus is_archived and '
    'archived_at).';

CREATE VIEW public.v_scenario_metrics_all AS
SELECT id, scenario_id, "timestamp", metric_type, metric_name, value, unit, extra_data,
       false AS is_aggregated, 'none'::text AS aggregation_level, 1 AS sample_count,
       value AS min_value, value AS max_value, value AS avg_value,
       false AS is_archived, NULL::timestamptz AS archived_at
FROM public.scenario_metrics
UNION ALL
SELECT id, scenario_id, "timestamp", metric_type, metric_name, value, unit, extra_data,
       is_aggregated, aggregation_level, sample_count,
       coalesce(min_value, value), coalesce(max_value, value), coalesce(avg_value, value),
       true AS is_archived, archived_at
FROM public.scenario_metrics_archive;
COMMENT ON VIEW public.v_scenario_metrics_all IS
    'Live and archived metrics together (same columns as scenario_metrics, plus is_archived, '
    'archived_at and the aggregate columns; id is NULL for daily aggregates).';

-- ------------------------------------------------------------------ v_archive_statistics
-- Exact counts (count(*)): an operator view, not for hot paths. Sizes of the partitioned
-- archives are summed over pg_partition_tree (a partitioned parent has no storage itself).
CREATE VIEW public.v_archive_statistics AS
WITH per_table AS (
    SELECT 'scenario_logs'::text          AS table_name,
           'scenario_logs_archive'::text  AS archive_table,
           'logs'::text                   AS job_type,
           (SELECT count(*) FROM public.scenario_logs) AS live_rows,
           a.archived_rows,
           0::bigint                      AS aggregated_rows,
           pg_total_relation_size('public.scenario_logs'::regclass) AS live_size_bytes,
           (SELECT coalesce(sum(pg_total_relation_size(t.relid)), 0)::bigint
              FROM pg_partition_tree('public.scenario_logs_archive'::regclass) AS t)
                                          AS archive_size_bytes,
           NULL::bigint                   AS s3_bytes,
           a.oldest_archived, a.newest_archived, a.last_archived_at
    FROM (SELECT count(*) AS archived_rows, min(received_at) AS oldest_archived,
                 max(received_at) AS newest_archived, max(archived_at) AS last_archived_at
          FROM public.scenario_logs_archive) AS a
    UNION ALL
    SELECT 'scenario_metrics', 'scenario_metrics_archive', 'metrics',
           (SELECT count(*) FROM public.scenario_metrics),
           a.archived_rows, a.aggregated_rows,
           pg_total_relation_size('public.scenario_metrics'::regclass),
           (SELECT coalesce(sum(pg_total_relation_size(t.relid)), 0)::bigint
              FROM pg_partition_tree('public.scenario_metrics_archive'::regclass) AS t),
           NULL::bigint,
           a.oldest_archived, a.newest_archived, a.last_archived_at
    FROM (SELECT count(*) AS archived_rows,
                 count(*) FILTER (WHERE is_aggregated) AS aggregated_rows,
                 min("timestamp") AS oldest_archived, max("timestamp") AS newest_archived,
                 max(archived_at) AS last_archived_at
          FROM public.scenario_metrics_archive) AS a
    UNION ALL
    SELECT 'reports', 'reports_archive', 'reports',
           (SELECT count(*) FROM public.reports),
           a.archived_rows, 0::bigint,
           pg_total_relation_size('public.reports'::regclass),
           pg_total_relation_size('public.reports_archive'::regclass),
           a.s3_bytes,
           a.oldest_archived, a.newest_archived, a.last_archived_at
    FROM (SELECT count(*) AS archived_rows, coalesce(sum(compressed_size), 0)::bigint AS s3_bytes,
                 min(created_at) AS oldest_archived, max(created_at) AS newest_archived,
                 max(archived_at) AS last_archived_at
          FROM public.reports_archive) AS a
)
SELECT t.table_name,
       t.archive_table,
       p.enabled                AS policy_enabled,
       p.archive_after_days,
       t.live_rows,
       t.archived_rows,
       t.aggregated_rows,
       t.live_size_bytes,
       t.archive_size_bytes,
       t.s3_bytes,
       t.oldest_archived,
       t.newest_archived,
       t.last_archived_at,
       j.id                     AS last_job_id,
       j.status                 AS last_job_status,
       j.started_at             AS last_job_started_at,
       j.completed_at           AS last_job_completed_at,
       j.error_message          AS last_job_error
FROM per_table AS t
LEFT JOIN public.archive_policies AS p ON p.table_name = t.table_name
LEFT JOIN LATERAL (
    SELECT id, status, started_at, completed_at, error_message
    FROM public.archive_jobs
    WHERE job_type = t.job_type AND NOT dry_run
    ORDER BY coalesce(started_at, created_at) DESC, id DESC
    LIMIT 1
) AS j ON true;
COMMENT ON VIEW public.v_archive_statistics IS
    'Per archived table: live vs archived row counts (exact), sizes (pg_total_relation_size, '
    'summed over partitions; s3_bytes = compressed bytes in S3 for reports), oldest/newest '
    'archived data time, and the last non-dry-run archive job.';

-- ------------------------------------------------------------------ backup_history
CREATE TABLE public.backup_history (
    id               bigint        GENERATED ALWAYS AS IDENTITY,
    backup_id        text          NOT NULL,
    kind             text          NOT NULL,
    status           text          NOT NULL DEFAULT 'running',
    started_at       timestamptz   NOT NULL DEFAULT now(),
    completed_at     timestamptz,
    duration_seconds numeric(12,3),
    size_bytes       bigint,
    database_name    text,
    server_version   text,
    repository       text,
    location         text,
    manifest_key     text,
    checksum         text,
    encrypted        boolean       NOT NULL DEFAULT false,
    compression      text,
    start_lsn        pg_lsn,
    stop_lsn         pg_lsn,
    timeline         integer,
    error            text,
    host             text,
    tool_version     text,
    created_at       timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT backup_history_pkey PRIMARY KEY (id),
    CONSTRAINT backup_history_backup_id_key UNIQUE (backup_id),
    CONSTRAINT backup_history_backup_id_check CHECK (length(backup_id) BETWEEN 1 AND 200),
    CONSTRAINT backup_history_kind_check CHECK (kind IN ('logical', 'base', 'wal', 'safety')),
    CONSTRAINT backup_history_status_check CHECK (status IN ('running', 'completed', 'failed')),
    CONSTRAINT backup_history_completed_check
        CHECK ((status = 'running') = (completed_at IS NULL)),
    CONSTRAINT backup_history_completed_after_started_check
        CHECK (completed_at IS NULL OR completed_at >= started_at),
    CONSTRAINT backup_history_duration_seconds_check
        CHECK (duration_seconds IS NULL OR duration_seconds >= 0),
    CONSTRAINT backup_history_size_bytes_check CHECK (size_bytes IS NULL OR size_bytes >= 0),
    CONSTRAINT backup_history_compression_check
        CHECK (compression IS NULL OR compression IN ('none', 'gzip', 'zstd', 'lz4')),
    CONSTRAINT backup_history_lsn_check
        CHECK (start_lsn IS NULL OR stop_lsn IS NULL OR stop_lsn >= start_lsn),
    CONSTRAINT backup_history_timeline_check CHECK (timeline IS NULL OR timeline >= 1)
);
COMMENT ON TABLE public.backup_history IS
    'One row per backup job (dbtier backup): kind logical | base | wal | safety, status running '
    '| completed | failed. repository = repository URL, location = this backup''s URL or prefix, '
    'manifest_key = object key of its manifest (written last), checksum = of the manifest.';
CREATE INDEX backup_history_started_idx
    ON public.backup_history (started_at DESC);
CREATE INDEX backup_history_kind_status_started_idx
    ON public.backup_history (kind, status, started_at DESC);
