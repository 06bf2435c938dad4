-- dbtier:no-transaction
--
-- 0008: idx_logs_scenario_received becomes covering for the log listing of a scenario.
--
-- Measured with `dbtier bench queries --scale 1` (820,000 logs, a few scenarios holding most of
-- them): "the newest 50 logs of a scenario"
--     SELECT id, received_at, source, message_preview, size_bytes, has_pii FROM scenario_logs
--     WHERE scenario_id = $1 ORDER BY received_at DESC LIMIT 50
-- took 210-1,060 ms for the largest scenario (11 % of the rows, all from a few days a year ago):
-- the planner walked idx_logs_recent newest-first and filtered on scenario_id, expecting a
-- match every ninth row (it assumes the scenario's rows are spread evenly in time), and read
-- 430,000 rows before the first one. With 0002's plain (scenario_id, received_at DESC) index
-- every row costs a random heap fetch (random_page_cost 4), which made the walk look cheaper.
-- INCLUDE-ing the listed columns turns the listing into an index-only scan (0.06 ms, 5 buffers)
-- that the planner prefers whatever the skew. Cost: the index grows from 52 MB to 130 MB at
-- scale 1 (message_preview is at most 500 characters). Same name and key, so every other query
-- of 0002 that used it still does.
--
-- Built beside the old one (CONCURRENTLY: no write lock), then swapped by name. Idempotent: a
-- run stopped half-way can be repeated (an INVALID _new index is dropped by dbtier first).

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_logs_scenario_received_new
    ON public.scenario_logs (scenario_id, received_at DESC)
    INCLUDE (id, source, size_bytes, has_pii, message_preview);

DROP INDEX CONCURRENTLY IF EXISTS public.idx_logs_scenario_received;

ALTER INDEX IF EXISTS public.idx_logs_scenario_received_new RENAME TO idx_logs_scenario_received;

COMMENT ON INDEX public.idx_logs_scenario_received IS
    'Logs of a scenario in a time range, newest first; covering (id, source, size_bytes, has_pii, '
    'message_preview): the log listing of a scenario is an index-only scan (0008).';
