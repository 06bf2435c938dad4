#!/usr/bin/env bash
# The local container stack: pod dbtier-local with containers db1, pgbouncer1 and ops1, each
# booting systemd (/sbin/init) from localhost/dbtier-base:bookworm. The pod shares one network
# namespace, so the services talk over 127.0.0.1 and nothing is published on the host.
# db1 and ops1 share the named volume dbtier-local-backups at /var/backups/dbtier: the local
# file:// backup repository (db1 archives WAL and takes base backups as postgres; ops1 verifies,
# cleans up and restores as dbtier; roles/dbtier gives both a group with a fixed gid).
#
#   scripts/stack.sh up       create what is missing, start what is stopped (idempotent)
#   scripts/stack.sh down     remove the containers, the pod and the backup volume
#   scripts/stack.sh status   list the pod's containers
#
# Nothing is published on the host, unless DBTIER_PUBLISH_MONITORING=1 when the pod is created:
# then Prometheus (9090) and Alertmanager (9093) of ops1 are published on the host's 127.0.0.1
# for a browser (a pod's ports are fixed at its creation: `down` first for an existing pod). A
# published port reaches the pod's interface, not its loopback: the local inventory lets both
# listen on every interface of the pod's network namespace.
#
# Container names are dbtier-local-<host> (inventories/local/hosts.yml sets ansible_host to them);
# their hostnames are the inventory names.
set -euo pipefail

POD="${DBTIER_POD:-dbtier-local}"
IMAGE="${DBTIER_BASE_IMAGE:-localhost/dbtier-base:bookworm}"
HOSTS=(db1 pgbouncer1 ops1)
VOLUME="$POD-backups"
BACKUP_DIR=/var/backups/dbtier
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { echo "stack: $*" >&2; }

up() {
  bash "$HERE/bootstrap-containers.sh"
  if ! podman pod exists "$POD"; then
    log "creating pod $POD"
    local publish=()
    if [ "${DBTIER_PUBLISH_MONITORING:-0}" = 1 ]; then
      publish=(--publish 127.0.0.1:9090:9090 --publish 127.0.0.1:9093:9093)
      log "publishing Prometheus and Alertmanager on 127.0.0.1:9090 and 127.0.0.1:9093"
    fi
    podman pod create --name "$POD" --share net --label app=dbtier "${publish[@]}" >/dev/null
  fi
  if ! podman volume exists "$VOLUME"; then
    log "creating volume $VOLUME"
    podman volume create --label app=dbtier "$VOLUME" >/dev/null
  fi
  for host in "${HOSTS[@]}"; do
    local name="$POD-$host" mounts=()
    case "$host" in db1 | ops1) mounts=(--volume "$VOLUME:$BACKUP_DIR") ;; esac
    # A container from before the backup volume existed: recreate it (only db1/ops1; their state
    # is rebuilt by the playbook, the database on db1 starts empty again).
    if [ ${#mounts[@]} -gt 0 ] && podman container exists "$name" \
      && ! podman inspect -f '{{range .Mounts}}{{.Destination}} {{end}}' "$name" | grep -qw "$BACKUP_DIR"; then
      log "recreating $name with the volume $VOLUME at $BACKUP_DIR"
      podman rm -f -t 5 "$name" >/dev/null
    fi
    if ! podman container exists "$name"; then
      log "creating $name"
      podman create --pod "$POD" --name "$name" --hostname "$host" \
        --systemd always --label app=dbtier "${mounts[@]}" \
        "$IMAGE" /sbin/init >/dev/null
    fi
    if [ "$(podman inspect -f '{{.State.Running}}' "$name")" != true ]; then
      podman start "$name" >/dev/null
    fi
  done
  # Wait for systemd in each container to finish booting (degraded is fine: no hardware here).
  for host in "${HOSTS[@]}"; do
    local name="$POD-$host" state=""
    for _ in $(seq 1 60); do
      state=$(podman exec "$name" systemctl is-system-running 2>/dev/null || true)
      case "$state" in running | degraded) break ;; esac
      sleep 1
    done
    case "$state" in running | degraded) ;; *) log "error: systemd in $name is '$state'"; exit 1 ;; esac
  done
  log "pod $POD is up: ${HOSTS[*]}"
}

down() {
  for host in "${HOSTS[@]}"; do
    podman rm -f -t 5 "$POD-$host" >/dev/null 2>&1 || true
  done
  if podman pod exists "$POD"; then
    podman pod rm -f "$POD" >/dev/null
  fi
  if podman volume exists "$VOLUME"; then
    podman volume rm -f "$VOLUME" >/dev/null
  fi
  log "pod $POD and volume $VOLUME removed"
}

status() {
  podman ps -a --pod --filter "pod=$POD" --format '{{.Names}}\t{{.Status}}'
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
