-- 0007: backup_history records `dbtier restore switch` (a PITR-recovered cluster put into service
-- in place of the live one) as kind 'switch'.
ALTER TABLE public.backup_history DROP CONSTRAINT backup_history_kind_check;
ALTER TABLE public.backup_history ADD CONSTRAINT backup_history_kind_check
    CHECK (kind IN ('logical', 'base', 'wal', 'safety', 'restore', 'pitr', 'switch', 'verify',
                    'cleanup'));
COMMENT ON COLUMN public.backup_history.kind IS
    'logical | base | safety (backups), restore | pitr | switch (restores), verify | cleanup '
    '(maintenance), wal (reserved; WAL pushes report through metrics).';
