#!/usr/bin/env bash
# make demo / make demo-down: the local database tier in the podman pod dbtier-local.
#
#   scripts/demo.sh up     stack up (scripts/stack.sh), ansible/site.yml on inventories/local,
#                          sample data on ops1 (only into an empty database), a short summary
#   scripts/demo.sh down   remove the containers, the pod and the stack's volumes
#
# Rerunning `up` is fast and changes nothing: the playbook reports changed=0 and the sample data
# is loaded only when the scenarios table is empty. Run it through make (which provides .venv and
# ANSIBLE_CONFIG) or set those yourself.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export ANSIBLE_CONFIG="${ANSIBLE_CONFIG:-$PWD/ansible.cfg}"

POD="${DBTIER_POD:-dbtier-local}"
DB="$POD-db1" BOUNCER="$POD-pgbouncer1" OPS="$POD-ops1"
# The local stack's insecure defaults (inventories/local/group_vars/all/insecure-local-secrets.yml).
OWNER_PASSWORD="${DBTIER_LOCAL_OWNER_PASSWORD:-insecure-local-owner-password}"

say() { printf '\n== %s\n' "$*"; }

# Runs a command on ops1 as the dbtier user with the settings and credentials of its cron jobs
# (/usr/local/bin/dbtier-job loads /etc/dbtier/credentials.env; the password is in its pgpass).
as_dbtier() { podman exec "$OPS" runuser -u dbtier -- "$@"; }
ops_sql() { as_dbtier sh -c 'set -a; . /etc/dbtier/credentials.env; exec psql -X -At -c "$1"' sh "$1"; }
ops_sql_table() { as_dbtier sh -c 'set -a; . /etc/dbtier/credentials.env; exec psql -X -c "$1"' sh "$1"; }

sample_data() {
  local rows
  rows=$(ops_sql "SELECT count(*) FROM scenarios")
  if [ "$rows" -gt 0 ]; then
    echo "sample data: already loaded ($rows scenarios), skipped"
  else
    as_dbtier /usr/local/bin/dbtier-job sample-data --quiet
    echo "sample data: loaded ($(ops_sql "SELECT count(*) FROM scenarios") scenarios)"
  fi
  # The reporting views read the data just loaded; afterwards cron refreshes them hourly
  # (dbtier_cron_schedule.refresh_views on ops1).
  as_dbtier /usr/local/bin/dbtier-job refresh-views --quiet
  echo "reporting views: refreshed ($(ops_sql "SELECT count(*) FROM mv_scenario_daily_stats") rows in mv_scenario_daily_stats)"
  # The slow-query log's first sample (its baseline; cron collects every 5 minutes from here on,
  # dbtier_cron_schedule.slow_queries). A cron run during the first playbook run, before the
  # migrations, failed and said why in /var/log/dbtier/slow_queries.log; this one supersedes it.
  as_dbtier /usr/local/bin/dbtier-job slow-queries collect --quiet
  echo "slow queries: collected (docs/MONITORING.md#slow-queries)"
}

summary() {
  say "PostgreSQL (db1)"
  podman exec "$DB" runuser -u postgres -- psql -X -At -c "SELECT version()"
  say "dbtier migrate status (ops1)"
  as_dbtier /usr/local/bin/dbtier-job migrate status
  say "PgBouncer pools (pgbouncer1, the admin console of each process, on its own socket)"
  # shellcheck disable=SC2016 # expanded by the container's shell
  podman exec -e PGPASSWORD="$OWNER_PASSWORD" "$BOUNCER" sh -c '
    for dir in /var/run/postgresql /run/pgbouncer-*; do
      [ -S "$dir/.s.PGSQL.6432" ] || continue
      echo "-- $dir"
      psql -X -h "$dir" -p 6432 -U mockupaws_owner -d pgbouncer -c "SHOW POOLS"
    done'
  say "Connect"
  cat <<EOF
  through PgBouncer:  podman exec -it $BOUNCER psql -h 127.0.0.1 -p 6432 -U mockupaws_app mockupaws
                      (password: insecure-local-app-password, or \$DBTIER_LOCAL_APP_PASSWORD)
  as the superuser:   podman exec -it $DB runuser -u postgres -- psql mockupaws
  dbtier on ops1:     podman exec -it $OPS runuser -u dbtier -- dbtier-job migrate status
  remove the stack:   make demo-down
EOF
}

# What Prometheus on ops1 sees: every target and its health (the targets come from the inventory),
# then the alerts firing now, and where to look. Asked inside ops1: nothing is published on the
# host unless the pod was created with DBTIER_PUBLISH_MONITORING=1 (scripts/stack.sh).
prometheus_api() { podman exec "$OPS" curl -sf "localhost:9090/api/v1/$1"; }

monitoring() {
  say "Monitoring (Prometheus and Alertmanager on ops1)"
  local down waited=0 since
  # the alerts as of now: wait for a scrape and a rule evaluation that began after the drill
  since=$(podman exec "$OPS" date +%s)
  while ! prometheus_api rules | python3 -c '
import json, re, sys
from datetime import datetime
def seconds(ts):  # RFC 3339 with nanoseconds, as Prometheus writes it
    return datetime.fromisoformat(re.sub(r"(\.\d{1,6})\d*", r"\1", ts).replace("Z", "+00:00")).timestamp()
groups = json.load(sys.stdin)["data"]["groups"]
last = min(seconds(g["lastEvaluation"]) for g in groups)
sys.exit(0 if groups and last > float(sys.argv[1]) + 5 else 1)' "$since" 2>/dev/null &&
    [ "$waited" -lt 30 ]; do
    sleep 2
    waited=$((waited + 2))
  done
  waited=0
  # a fresh Prometheus needs a scrape or two before every target has a health
  while down=$(prometheus_api targets | python3 -c '
import json, sys
print(sum(t["health"] != "up" for t in json.load(sys.stdin)["data"]["activeTargets"]))') &&
    [ "$down" != 0 ] && [ "$waited" -lt 30 ]; do
    sleep 2
    waited=$((waited + 2))
  done
  prometheus_api targets | python3 -c '
import json, sys
for t in json.load(sys.stdin)["data"]["activeTargets"]:
    labels = t["labels"]
    print("  %-13s %-11s %-5s %s" % (labels["job"], labels["instance"], t["health"], t["lastError"]))'
  echo "alerts firing:"
  prometheus_api alerts | python3 -c '
import json, sys
alerts = [a for a in json.load(sys.stdin)["data"]["alerts"] if a["state"] == "firing"]
for a in alerts:
    labels = a["labels"]
    print("  %s on %s: %s" % (labels["alertname"], labels.get("instance", "-"), a["annotations"].get("summary", "")))
if not alerts:
    print("  (none)")'
  cat <<EOF
  targets, alerts:    podman exec $OPS curl -s localhost:9090/api/v1/targets
                      podman exec $OPS curl -s localhost:9090/api/v1/alerts
  Alertmanager:       podman exec $OPS amtool alert query --alertmanager.url=http://127.0.0.1:9093
  in a browser:       make demo-down && DBTIER_PUBLISH_MONITORING=1 make demo, then open
                      http://127.0.0.1:9090 (Prometheus) and http://127.0.0.1:9093 (Alertmanager)
  more:               docs/MONITORING.md
EOF
}

# The application's report files: mockupAWS writes them to /var/lib/mockupaws/reports, which
# the ops host that archives them mounts. On the local stack they are made up (random bytes of
# the size the row says) for the reports the sample data lists, once.
report_files() {
  podman exec "$OPS" install -d -o dbtier -g dbtier -m 0750 /var/lib/mockupaws/reports
  ops_sql "SELECT file_path || ' ' || coalesce(file_size_bytes, 4096) FROM reports" |
    podman exec -i -u dbtier "$OPS" sh -c 'while read -r path size; do
      [ -e "$path" ] || head -c "$size" /dev/urandom > "$path"; done'
}

archiving() {
  say "data archiving (ops1): dbtier-job archive --all (the nightly job, cron 03:00)"
  report_files
  as_dbtier /usr/local/bin/dbtier-job archive --all --quiet
  ops_sql_table "SELECT table_name, live_rows, archived_rows, aggregated_rows,
      pg_size_pretty(live_size_bytes) AS live_size, pg_size_pretty(archive_size_bytes) AS archive_size,
      pg_size_pretty(s3_bytes) AS offloaded, last_job_status FROM v_archive_statistics"
}

# ==== PLACEHOLDER: backup / verify / PITR drill ==================================================
# Filled in by the backup work (issue 4): a base backup, a verify, and a PITR drill that prints
# the measured RTO and RPO. Intentionally empty for now.
backup_drill() {  # backup, verify, PITR drill; prints measured RTO and RPO
  bash scripts/backup-drill.sh
}
# =================================================================================================

case "${1:-up}" in
  up)
    started=$SECONDS
    bash scripts/stack.sh up
    say "ansible-playbook ansible/site.yml -i inventories/local"
    ansible-playbook ansible/site.yml -i inventories/local
    say "sample data (ops1)"
    sample_data
    summary
    archiving
    backup_drill
    monitoring
    echo
    echo "demo ready in $((SECONDS - started)) s"
    ;;
  down)
    bash scripts/stack.sh down
    ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
