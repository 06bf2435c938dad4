-- 0005: backup_history records every backup job, restores, verifies and cleanups included
-- (dbtier backup/restore write one row per job; WAL pushes are tracked by metrics only: one row
-- per 16 MB segment would grow the table by thousands of rows a day for no reader).
ALTER TABLE public.backup_history DROP CONSTRAINT backup_history_kind_check;
ALTER TABLE public.backup_history ADD CONSTRAINT backup_history_kind_check
    CHECK (kind IN ('logical', 'base', 'wal', 'safety', 'restore', 'pitr', 'verify', 'cleanup'));
CREATE INDEX backup_history_kind_started_idx ON public.backup_history (kind, started_at DESC);
COMMENT ON COLUMN public.backup_history.kind IS
    'logical | base | safety (backups), restore | pitr (restores), verify | cleanup (maintenance), '
    'wal (reserved; WAL pushes report through metrics).';
