#!/usr/bin/env bash
# Installs the Debian packages that dbtier's tests and demo need. Idempotent: only missing
# packages are installed, and `apt-get update` runs only when something is missing.
set -euo pipefail

PACKAGES=(
  postgresql-15 postgresql-client-15   # the server the tests start, pg_dump/pg_restore/psql
  pgbouncer                            # the real pooler the tests start
  pgbackrest                           # the peer `make bench` measures dbtier against
  zstd openssl                         # make bench: pg_basebackup | zstd -T2, the old pg_dump | gzip | openssl pipeline
  podman runc debootstrap uidmap       # the local container stack and Molecule
  catatonit                            # init of the pods' infra (pause) container; only recommended
  containernetworking-plugins iptables # the pod's network (bridge, port mapping); Recommends/Suggests
  iproute2 make
  awscli                               # docs/DEPLOYMENT.md's aws commands, run against moto_server
  graphviz                             # dot: docs/architecture/tier.dot -> tier.svg (make docs-architecture)
  prometheus                           # promtool: the alert rule tests, the /metrics exposition checks
  # dbtier as the postgres OS user runs it (archive_command in the tests): Debian's Python
  # with the same python3-* packages roles/dbtier installs on database hosts.
  python3 python3-psycopg python3-sqlparse python3-boto3 python3-cryptography python3-zstandard
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-system-deps: missing Debian packages: ${missing[*]} (run as root or install them)" >&2
  exit 1
fi
echo "install-system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts the packaged services; the tests start their own instances on free ports (and
# only need prometheus's promtool).
for svc in pgbouncer postgresql prometheus; do
  systemctl disable --now "$svc" >/dev/null 2>&1 || service "$svc" stop >/dev/null 2>&1 || true
done
