DROP INDEX IF EXISTS public.backup_history_running_idx;
ALTER TABLE public.backup_history DROP COLUMN IF EXISTS pid;
