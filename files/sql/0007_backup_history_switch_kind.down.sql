-- Rows of kind 'switch' cannot satisfy the old constraint: they are removed first.
DELETE FROM public.backup_history WHERE kind = 'switch';
ALTER TABLE public.backup_history DROP CONSTRAINT backup_history_kind_check;
ALTER TABLE public.backup_history ADD CONSTRAINT backup_history_kind_check
    CHECK (kind IN ('logical', 'base', 'wal', 'safety', 'restore', 'pitr', 'verify', 'cleanup'));
COMMENT ON COLUMN public.backup_history.kind IS
    'logical | base | safety (backups), restore | pitr (restores), verify | cleanup (maintenance), '
    'wal (reserved; WAL pushes report through metrics).';
