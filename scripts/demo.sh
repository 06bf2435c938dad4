#!/usr/bin/env bash
# make demo / make demo-down: a scratch PostgreSQL 15 cluster under .run/demo, migrated.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
BASE="$PWD/.run/demo"

cluster() {  # cluster ACTION: init+start, or stop+remove, the scratch cluster in $BASE
  "$PY" - "$1" "$BASE" <<'PYEOF'
import sys
from pathlib import Path
from dbtier.pgcluster import LocalCluster, free_port
action, base = sys.argv[1], Path(sys.argv[2])
port_file = base / "port"
port = int(port_file.read_text()) if port_file.exists() else free_port()
cluster = LocalCluster(base=base, port=port)
if action == "up":
    cluster.init()
    if not cluster.is_running():
        cluster.start()
    port_file.write_text(str(port))
    print(port)
else:
    cluster.destroy()
PYEOF
}

case "${1:-up}" in
  up)
    port=$(cluster up)
    dsn="postgresql://postgres@127.0.0.1:${port}/mockupaws"
    "$PY" -c "import psycopg,sys; c=psycopg.connect(sys.argv[1],autocommit=True); \
c.execute('CREATE DATABASE mockupaws') if not c.execute(\"SELECT 1 FROM pg_database WHERE datname='mockupaws'\").fetchone() else None" \
      "postgresql://postgres@127.0.0.1:${port}/postgres"
    .venv/bin/dbtier migrate up --dsn "$dsn"
    .venv/bin/dbtier migrate status --dsn "$dsn"
    echo
    echo "demo cluster: $dsn   (stop with: make demo-down)"
    ;;
  down)
    cluster down
    echo "demo cluster removed"
    ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
