-- 0003 materialized views v1.0.0, down (their unique indexes go with them).

DROP MATERIALIZED VIEW public.mv_source_analytics;
DROP MATERIALIZED VIEW public.mv_monthly_costs;
DROP MATERIALIZED VIEW public.mv_scenario_daily_stats;
DROP TABLE public.query_performance_log;
