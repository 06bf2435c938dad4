-- 0006: backup_history remembers the process that runs a job, so a job killed without a chance to
-- record its end (SIGKILL, OOM, a host crash) is marked failed by the next job on that host
-- instead of staying 'running' forever.
ALTER TABLE public.backup_history ADD COLUMN pid integer;
COMMENT ON COLUMN public.backup_history.pid IS
    'OS process id of the job on host; a running row whose process is gone is marked failed.';
CREATE INDEX backup_history_running_idx ON public.backup_history (host)
    WHERE status = 'running';
