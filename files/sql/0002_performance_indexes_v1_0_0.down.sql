-- dbtier:no-transaction
--
-- 0002 performance indexes v1.0.0, down: DROP INDEX CONCURRENTLY (one index per statement,
-- outside a transaction). IF EXISTS everywhere, so a half-done run can be run again.

DROP INDEX CONCURRENTLY IF EXISTS public.idx_logs_covering;
DROP INDEX CONCURRENTLY IF EXISTS public.idx_scenarios_covering;
DROP INDEX CONCURRENTLY IF EXISTS public.idx_apikeys_valid;
DROP INDEX CONCURRENTLY IF EXISTS public.idx_apikeys_active;
DROP INDEX CONCURRENTLY IF EXISTS public.idx_logs_recent;
DROP INDEX CONCURRENTLY IF EXISTS public.idx_logs_pii_only;
DROP INDEX CONCURRENTLY IF EXISTS public.idx_scenarios_running;
DROP INDEX CONCURRENTLY IF EXISTS public.idx_scenarios_active;
DROP INDEX CONCURRENTLY IF EXISTS public.idx_scenarios_region_status;
DROP INDEX CONCURRENTLY IF EXISTS public.idx_scenarios_status_created;
DROP INDEX CONCURRENTLY IF EXISTS public.idx_reports_scenario_created;
DROP INDEX CONCURRENTLY IF EXISTS public.idx_metrics_scenario_name;
DROP INDEX CONCURRENTLY IF EXISTS public.idx_metrics_scenario_time_type;
DROP INDEX CONCURRENTLY IF EXISTS public.idx_logs_scenario_size;
DROP INDEX CONCURRENTLY IF EXISTS public.idx_logs_scenario_pii;
DROP INDEX CONCURRENTLY IF EXISTS public.idx_logs_scenario_source;
DROP INDEX CONCURRENTLY IF EXISTS public.idx_logs_scenario_received;
