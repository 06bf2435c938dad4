-- dbtier:no-transaction
--
-- 0008 down: idx_logs_scenario_received back to 0002's plain (scenario_id, received_at DESC).

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_logs_scenario_received_old
    ON public.scenario_logs (scenario_id, received_at DESC);

DROP INDEX CONCURRENTLY IF EXISTS public.idx_logs_scenario_received;

ALTER INDEX IF EXISTS public.idx_logs_scenario_received_old RENAME TO idx_logs_scenario_received;

COMMENT ON INDEX public.idx_logs_scenario_received IS
    'Logs of a scenario in a time range, newest first.';
