-- Rows of the newer kinds cannot satisfy the old constraint: they are removed first.
DROP INDEX public.backup_history_kind_started_idx;
DELETE FROM public.backup_history
    WHERE kind NOT IN ('logical', 'base', 'wal', 'safety');
ALTER TABLE public.backup_history DROP CONSTRAINT backup_history_kind_check;
ALTER TABLE public.backup_history ADD CONSTRAINT backup_history_kind_check
    CHECK (kind IN ('logical', 'base', 'wal', 'safety'));
COMMENT ON COLUMN public.backup_history.kind IS NULL;
