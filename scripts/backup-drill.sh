#!/usr/bin/env bash
# The backup drill that ends `make demo`, on the local stack (scripts/stack.sh):
#   1. base backup and logical backup on db1 (as postgres, through the cron wrapper);
#   2. verify the newest backup and list the repository from ops1 (as dbtier);
#   3. point-in-time recovery on db1 into a scratch data directory: a row committed before the
#      target must be there, one committed after it must not;
# and prints the measured RTO (restore to a promoted server) and RPO (age of the newest archived
# WAL when the drill started; archive_timeout bounds it).
set -euo pipefail

POD="${DBTIER_POD:-dbtier-local}"
DB="$POD-db1"
OPS="$POD-ops1"
DRILL_DIR=/var/lib/postgresql/15/pitr-drill
DRILL_PORT=5499

say() { printf '%s\n' "$*" >&2; }
on_db() { podman exec -u postgres "$DB" "$@"; }
job_db() { on_db /usr/local/bin/dbtier-job "$@"; }
job_ops() { podman exec -u dbtier "$OPS" /usr/local/bin/dbtier-job "$@"; }
sql() { on_db psql -X -qAt -v ON_ERROR_STOP=1 "$@"; }
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

cleanup_drill() {
  on_db sh -c "if [ -f $DRILL_DIR/postmaster.pid ]; then
    /usr/lib/postgresql/15/bin/pg_ctl -D $DRILL_DIR stop -m immediate >/dev/null 2>&1 || true; fi
    rm -rf $DRILL_DIR" || true
}
trap cleanup_drill EXIT
cleanup_drill

rpo=$(sql -d postgres -c \
  "SELECT coalesce(round(extract(epoch FROM now() - last_archived_time))::text, 'n/a')
     FROM pg_stat_archiver")
timeout=$(sql -d postgres -c "SHOW archive_timeout")

say "drill: base backup on db1"
base_id=$(job_db backup base --quiet --json | field backup_id)
say "drill: logical backup on db1"
full_id=$(job_db backup full --quiet --json | field backup_id)
say "drill: verify $full_id from ops1"
job_ops backup verify "$full_id" --quiet --json >/dev/null
job_ops backup list

say "drill: point-in-time recovery"
sql -d postgres -c "SELECT 1 FROM pg_database WHERE datname = 'dbtier_drill'" | grep -q 1 ||
  sql -d postgres -c "CREATE DATABASE dbtier_drill"
sql -d dbtier_drill -c "CREATE TABLE IF NOT EXISTS marks (label text, at timestamptz)"
run=$(date +%s)
sql -d dbtier_drill -c "INSERT INTO marks VALUES ('before-$run', clock_timestamp())"
target=$(sql -d dbtier_drill -c "SELECT clock_timestamp()")
sleep 1
sql -d dbtier_drill -c "INSERT INTO marks VALUES ('after-$run', clock_timestamp())"
segment=$(sql -d postgres -c "SELECT pg_walfile_name(pg_switch_wal())")
for _ in $(seq 1 60); do
  last=$(sql -d postgres -c "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
  [[ "${last:0:24}" > "$segment" || "${last:0:24}" == "$segment" ]] && break
  sleep 1
done
started=$(date +%s.%N)
job_db restore pitr --quiet --json --target-time "$target" --data-dir "$DRILL_DIR" \
  --port "$DRILL_PORT" --keep-running >/dev/null
rto=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" \
  "$started" "$(date +%s.%N)")
found=$(on_db psql -X -qAt -h /var/lib/postgresql/15 -p "$DRILL_PORT" -d dbtier_drill -c \
  "SELECT string_agg(label, ',' ORDER BY at) FROM marks WHERE label LIKE '%-$run'")
if [ "$found" != "before-$run" ]; then
  say "drill: FAILED: recovered server has '$found', expected only before-$run"
  exit 1
fi

cat <<EOF

Backup drill
  base backup          $base_id
  logical backup       $full_id (verified from ops1)
  PITR target          $target
  recovered            row before the target present, row after it absent
  RTO (measured)       ${rto} s  (unpack base backup, replay WAL, promote)
  RPO (measured)       ${rpo} s  (age of the newest archived WAL; archive_timeout = $timeout)
EOF

echo
say "drill: dbtier-job status on ops1 (exit 0 = fresh backups and a working WAL archive)"
job_ops status || say "status: needs attention (exit $?), see the PROBLEMS above"
