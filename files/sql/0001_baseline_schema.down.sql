-- 0001 baseline schema, down: drops exactly what the up created, dependents first.

DROP TABLE public.api_keys;
DROP TABLE public.reports;
DROP TABLE public.scenario_metrics;
DROP TABLE public.scenario_logs;
DROP TRIGGER scenarios_set_updated_at ON public.scenarios;
DROP TABLE public.scenarios;
DROP FUNCTION public.dbtier_set_updated_at();
