#!/usr/bin/env bash
# Prepares this machine for the local container stack and Molecule. Idempotent; safe to run often.
#
#   1. installs podman, runc, debootstrap and catatonit (pods build their pause image from it) when they are missing (needs root for that step);
#   2. makes /etc/containers/containers.conf carry the settings podman needs on these machines
#      (runc instead of crun, cgroupfs, file events logger, default ulimits within the host limits),
#      merged key by key into an existing file, which is backed up first;
#   3. builds the base image localhost/dbtier-base:bookworm (Debian bookworm minbase + python3 +
#      systemd) with debootstrap from the Debian mirror that apt on the host already uses, once:
#      an existing tag is reused. Set DBTIER_REBUILD_BASE=1 to force a rebuild.
#
# Environment: DBTIER_BASE_IMAGE (default localhost/dbtier-base:bookworm),
#              DBTIER_DEBIAN_MIRROR / DBTIER_SECURITY_MIRROR to override the discovered mirrors.
set -euo pipefail

IMAGE="${DBTIER_BASE_IMAGE:-localhost/dbtier-base:bookworm}"
SUITE=bookworm
CONF=/etc/containers/containers.conf
LOCK=/run/lock/dbtier-bootstrap-containers.lock

log() { echo "bootstrap-containers: $*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (podman runs rootful here; debootstrap needs root)"

# One bootstrap at a time (make test, make demo and Molecule may start it concurrently).
mkdir -p "$(dirname "$LOCK")"
exec 9>"$LOCK"
flock 9

# --- 1. packages ----------------------------------------------------------------------------
missing=()
for pkg in podman runc debootstrap catatonit; do  # catatonit: the local pause image of pods
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- 2. containers.conf ---------------------------------------------------------------------
# Keys podman needs here. nofile must stay <= the host's hard limit, nproc <= 32768.
nofile_hard=$(ulimit -Hn)
nofile=8192
if [ "$nofile_hard" != unlimited ] && [ "$nofile_hard" -lt "$nofile" ]; then nofile=$nofile_hard; fi
mkdir -p "$(dirname "$CONF")"
python3 - "$CONF" "$nofile" <<'PY'
"""Merge the required keys into containers.conf without dropping anything else in it."""

import re
import shutil
import sys
import time
from pathlib import Path

path, nofile = Path(sys.argv[1]), sys.argv[2]
required = {
    "containers": {"default_ulimits": f'["nofile={nofile}:{nofile}", "nproc=8192:8192"]'},
    "engine": {"runtime": '"runc"', "cgroup_manager": '"cgroupfs"', "events_logger": '"file"'},
}
text = path.read_text() if path.exists() else ""
lines = text.splitlines()
header = re.compile(r"^\s*\[([^\[\]]+)\]\s*(#.*)?$")


def section_bounds(name):
    """(start, end) line indexes of [name] (start = header line), or None."""
    start = None
    for i, line in enumerate(lines):
        m = header.match(line)
        if m and start is not None:
            return start, i
        if m and m.group(1).strip() == name:
            start = i
    return (start, len(lines)) if start is not None else None


for section, keys in required.items():
    for key, value in keys.items():
        bounds = section_bounds(section)
        if bounds is None:
            if lines and lines[-1].strip():
                lines.append("")
            lines += [f"[{section}]", f"{key} = {value}"]
            continue
        start, end = bounds
        keyre = re.compile(rf"^\s*{re.escape(key)}\s*=")
        for i in range(start + 1, end):
            if keyre.match(lines[i]):
                lines[i] = f"{key} = {value}"
                break
        else:
            lines.insert(start + 1, f"{key} = {value}")

new = "\n".join(lines) + "\n"
if new != text:
    if path.exists():
        backup = path.with_name(f"{path.name}.dbtier-{time.strftime('%Y%m%d%H%M%S')}.bak")
        shutil.copy2(path, backup)
        print(f"bootstrap-containers: updated {path} (backup {backup})", file=sys.stderr)
    else:
        print(f"bootstrap-containers: wrote {path}", file=sys.stderr)
    path.write_text(new)
PY

# --- 3. base image --------------------------------------------------------------------------
if [ "${DBTIER_REBUILD_BASE:-0}" != 1 ] && podman image exists "$IMAGE"; then
  log "reusing $IMAGE"
  exit 0
fi

# The mirrors apt uses on the host: deb822 *.sources first, then one-line sources.list files.
discover_mirror() {  # $1 = suite to look for (bookworm | bookworm-security)
  local suite=$1 f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v want="$suite" '
      function flush() { if (uris != "" && (" " suites " ") ~ (" " want " ")) { split(uris, u, " "); print u[1]; found=1; exit } uris=""; suites="" }
      /^[[:space:]]*$/ { flush(); next }
      /^[[:space:]]*#/ { next }
      tolower($1) == "uris:" { $1=""; uris=$0 }
      tolower($1) == "suites:" { $1=""; suites=$0 }
      END { if (!found) flush() }' "$f" | head -n1
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v want="$suite" '$1 == "deb" {
        i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
        if ($(i+1) == want) { print $i; exit } }' "$f"
  done
}
MIRROR="${DBTIER_DEBIAN_MIRROR:-$(discover_mirror "$SUITE" | head -n1)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
SECURITY="${DBTIER_SECURITY_MIRROR:-$(discover_mirror "$SUITE-security" | head -n1)}"
SECURITY="${SECURITY:-http://deb.debian.org/debian-security}"
MIRROR="${MIRROR%/}"
SECURITY="${SECURITY%/}"

log "building $IMAGE with debootstrap from $MIRROR (takes about 90 s)"
WORK=$(mktemp -d /var/tmp/dbtier-base.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
ROOTFS="$WORK/rootfs"
debootstrap --variant=minbase --include=python3,systemd,systemd-sysv,ca-certificates \
  "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
  || { tail -n 30 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }

cat >"$ROOTFS/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY $SUITE-security main
EOF
# A container image: no machine-id baked in (systemd creates one per container), no apt cache,
# no services that make no sense without hardware or a console.
: >"$ROOTFS/etc/machine-id"
rm -f "$ROOTFS/var/lib/dbus/machine-id"
for unit in getty@tty1.service console-getty.service systemd-timesyncd.service \
  systemd-networkd-wait-online.service systemd-resolved.service; do
  chroot "$ROOTFS" systemctl mask "$unit" >/dev/null 2>&1 || true
done
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*

tar -C "$ROOTFS" -c . | podman import \
  --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' \
  --message "dbtier base: Debian $SUITE minbase + python3 + systemd from $MIRROR" \
  - "$IMAGE" >/dev/null 2>&1
log "built $IMAGE"
