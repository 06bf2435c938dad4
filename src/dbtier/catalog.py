"""The backup catalog: manifests (written last; a backup without one does not exist) and WAL.

Layout inside a repository:
    backups/<id>/manifest.json        the manifest, written after every object is stored
    backups/<id>/<object>             data objects (zstd, then AES-256-GCM)
    wal/<segment or history file>.zst.enc
    wal/<segment or history file>.json  sidecar: raw size and SHA-256, wrapped key; written last
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from .errors import DbtierError, UsageError
from .repository import Repository

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
WAL_SEGMENT_RE = re.compile(r"^[0-9A-F]{24}$")
WAL_FILE_RE = re.compile(r"^([0-9A-F]{24}(\.partial|\.[0-9A-F]{8}\.backup)?|[0-9A-F]{8}\.history)$")
WAL_SEGMENT_SIZE = 16 * 1024 * 1024


def now_utc() -> datetime:
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """ISO 8601 or 'YYYY-MM-DD HH:MM:SS[+TZ]'; naive times are UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"cannot parse time {text!r} (expected e.g. '2026-04-07 14:30:00+00')"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def new_backup_id(kind: str, when: datetime | None = None) -> str:
    return f"{(when or now_utc()).strftime('%Y%m%dT%H%M%SZ')}-{kind}"


@dataclass
class StoredObject:
    key: str  # relative to the backup's directory
    size: int  # bytes as stored
    sha256: str  # of the bytes as stored
    raw_size: int  # bytes before compression and encryption
    raw_sha256: str


@dataclass
class Manifest:
    id: str
    kind: str  # logical | base | safety
    database: str | None
    server_version: str
    system_identifier: str
    started_at: str
    stopped_at: str
    objects: list[StoredObject]
    encryption: dict[str, Any]
    compression: dict[str, Any]
    format: str  # pg_dump-custom | tar
    tool_version: str
    host: str
    start_lsn: str | None = None
    stop_lsn: str | None = None
    timeline: int | None = None
    start_wal_file: str | None = None
    stop_wal_file: str | None = None
    row_counts: dict[str, int] = field(default_factory=dict)
    manifest_format: int = MANIFEST_FORMAT

    @property
    def started(self) -> datetime:
        return parse_time(self.started_at)

    @property
    def stopped(self) -> datetime:
        return parse_time(self.stopped_at)

    @property
    def size(self) -> int:
        return sum(o.size for o in self.objects)

    @property
    def raw_size(self) -> int:
        return sum(o.raw_size for o in self.objects)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str) -> Manifest:
        try:
            data = json.loads(text)
            data["objects"] = [StoredObject(**o) for o in data["objects"]]
            return cls(**data)
        except (ValueError, TypeError, KeyError) as exc:
            raise DbtierError(f"manifest {where} is unreadable: {exc}") from None


def manifest_key(backup_id: str) -> str:
    return f"backups/{backup_id}/{MANIFEST_NAME}"


def object_key(backup_id: str, name: str) -> str:
    return f"backups/{backup_id}/{name}"


def write_manifest(repo: Repository, manifest: Manifest) -> str:
    key = manifest_key(manifest.id)
    repo.put_bytes(key, manifest.to_json().encode())
    return key


def list_backups(repo: Repository, kind: str | None = None) -> list[Manifest]:
    """Every backup that has a manifest, oldest first. Objects without one are ignored."""
    manifests = []
    for key in repo.list("backups/"):
        if key.endswith("/" + MANIFEST_NAME) and key.count("/") == 2:
            manifest = Manifest.from_json(repo.get_bytes(key).decode(), key)
            if kind is None or manifest.kind == kind:
                manifests.append(manifest)
    return sorted(manifests, key=lambda m: (m.stopped_at, m.id))


def find_backup(repo: Repository, ref: str, kinds: tuple[str, ...] = ("logical",)) -> Manifest:
    """`latest` (newest of the kinds) or an id."""
    if ref == "latest":
        candidates = [m for m in list_backups(repo) if m.kind in kinds]
        if not candidates:
            raise UsageError(f"no {'/'.join(kinds)} backup in {repo.describe()}")
        return candidates[-1]
    key = manifest_key(ref)
    if not repo.exists(key):
        raise UsageError(f"backup {ref} not found in {repo.describe()} (no {key})")
    return Manifest.from_json(repo.get_bytes(key).decode(), key)


def split_backup_url(url: str) -> tuple[str, str]:
    """s3://bucket/prefix/backups/<id>[/manifest.json] -> (repository URL, id)."""
    match = re.match(r"^(?P<repo>.+?)/backups/(?P<id>[^/]+)(/manifest\.json)?/?$", url)
    if not match:
        raise UsageError(f"not a backup URL: {url} (expected <repository>/backups/<id>)")
    return match["repo"], match["id"]


# ------------------------------------------------------------------------------- WAL names


def wal_file_name(lsn: str, timeline: int, segment_size: int = WAL_SEGMENT_SIZE) -> str:
    """The WAL segment holding an LSN ('16/B374D848'), as pg_walfile_name() names it."""
    hi, lo = (int(part, 16) for part in lsn.split("/"))
    segno = ((hi << 32) | lo) // segment_size
    per_xlogid = 0x100000000 // segment_size
    return f"{timeline:08X}{segno // per_xlogid:08X}{segno % per_xlogid:08X}"


def wal_key(name: str) -> str:
    return f"wal/{name}.zst.enc"


def wal_sidecar_key(name: str) -> str:
    return f"wal/{name}.json"


def archived_wal(repo: Repository) -> dict[str, dict[str, Any]]:
    """name -> sidecar, for every WAL file whose sidecar exists (i.e. completely pushed)."""
    result = {}
    for key in repo.list("wal/"):
        if key.endswith(".json"):
            name = key[len("wal/") : -len(".json")]
            result[name] = {"key": key}
    return result
