-- 0004 archive tables v1.0.0, down: views first, then the helper, then the tables. Dropping a
-- partitioned table drops all its partitions (DEFAULT and those the helper created) and the
-- sequence of scenario_metrics_archive.archive_id.

DROP TABLE public.backup_history;
DROP VIEW public.v_archive_statistics;
DROP VIEW public.v_scenario_metrics_all;
DROP VIEW public.v_scenario_logs_all;
DROP FUNCTION public.dbtier_archive_ensure_partition(regclass, date);
DROP TABLE public.reports_archive;
DROP TABLE public.scenario_metrics_archive;
DROP TABLE public.scenario_logs_archive;
DROP TABLE public.archive_jobs;
DROP TRIGGER archive_policies_set_updated_at ON public.archive_policies;
DROP TABLE public.archive_policies;
