"""The backup catalog: the repository's identity, manifests (written last, authenticated; a
backup without a good one does not exist) and WAL names.

Layout inside a repository:
    repository.json                   identity: the master key it is bound to, the cluster
    backups/<id>/manifest.json        the manifest, written after every object is stored
    backups/<id>/<object>             data objects (zstd, then AES-256-GCM)
    backups/<id>/verify.json          the last verification's result
    wal/<segment or history file>.zst.enc  header (authenticated metadata) + encrypted stream

Every document is sealed (see seal.py) and every read checks it: a manifest that fails is a
*broken* backup, listed as such, never used, never counted by retention.
"""

from __future__ import annotations

import re
import socket
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import __version__, seal
from .crypto import IntegrityError
from .errors import DbtierError, UsageError
from .keys import KeyProvider, WrongKeyError
from .repository import ObjectExists, ObjectNotFound, Repository

MANIFEST_NAME = "manifest.json"
VERIFY_NAME = "verify.json"
REPOSITORY_INFO = "repository.json"
KINDS = ("logical", "base", "safety")
WAL_SEGMENT_RE = re.compile(r"^[0-9A-F]{24}$")
HISTORY_RE = re.compile(r"^[0-9A-F]{8}\.history$")
WAL_FILE_RE = re.compile(r"^([0-9A-F]{24}(\.partial|\.[0-9A-F]{8}\.backup)?|[0-9A-F]{8}\.history)$")
WAL_SEGMENT_SIZE = 16 * 1024 * 1024
_LSN_RE = re.compile(r"^[0-9A-F]{1,8}/[0-9A-F]{1,8}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
# A manifest whose compression says {"content_checksum": "xxh64"} may leave an object's
# raw_sha256 out (base backups of dbtier after 1.0.0): every zstd frame dbtier writes carries
# the XXH64 of its uncompressed content, checked by every decompression, under GCM tags that
# authenticate every compressed byte; the stored bytes keep their SHA-256 (checked keyless).
CONTENT_CHECKSUM = "xxh64"
_ID_RE = re.compile(r"^(?P<ts>\d{8}T\d{6}Z)-[a-z0-9-]+$")


def now_utc() -> datetime:
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def iso_precise(ts: datetime) -> str:
    """UTC with microseconds: a recovery target or replay time, where a second matters."""
    return ts.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


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
    # SHA-256 of those bytes; None when the backup's compression records
    # content_checksum "xxh64" (zstd's frame checksum covers them instead, see CONTENT_CHECKSUM)
    raw_sha256: str | None


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
    wal_segment_size: int = WAL_SEGMENT_SIZE

    @property
    def stopped(self) -> datetime:
        return parse_time(self.stopped_at)

    @property
    def size(self) -> int:
        return sum(o.size for o in self.objects)

    @property
    def raw_size(self) -> int:
        return sum(o.raw_size for o in self.objects)

    @property
    def wrapped_key(self) -> dict[str, Any]:
        return dict(self.encryption.get("data_key") or {})

    def check(self, backup_id: str) -> None:
        """What an authentic manifest must also say to be believed (IntegrityError if not)."""
        where = f"manifest of {backup_id}"
        problems = []
        if self.id != backup_id:
            problems.append(f"it names backup {self.id!r}")
        if self.kind not in KINDS:
            problems.append(f"unknown kind {self.kind!r}")
        if not self.objects:
            problems.append("no objects")
        for obj in self.objects:
            if obj.size < 0 or obj.raw_size < 0 or "/" in obj.key or not obj.key:
                problems.append(f"bad object entry {obj.key!r}")
            raw_ok = (
                self.compression.get("content_checksum") == CONTENT_CHECKSUM
                if obj.raw_sha256 is None
                else isinstance(obj.raw_sha256, str) and _SHA_RE.match(obj.raw_sha256)
            )
            if not (isinstance(obj.sha256, str) and _SHA_RE.match(obj.sha256) and raw_ok):
                problems.append(f"bad checksum of {obj.key!r}")
        if not self.system_identifier.isdigit():
            problems.append(f"bad system identifier {self.system_identifier!r}")
        try:
            if parse_time(self.stopped_at) < parse_time(self.started_at):
                problems.append("stopped before it started")
        except UsageError:
            problems.append("unreadable start/stop time")
        if self.kind == "base":
            problems += self._check_wal_range()
        if problems:
            raise IntegrityError(f"{where} is inconsistent: {'; '.join(problems)}")

    def _check_wal_range(self) -> list[str]:
        lsns, files, tli = (self.start_lsn, self.stop_lsn), (self.start_wal_file,
                            self.stop_wal_file), self.timeline  # fmt: skip
        if not all(x and _LSN_RE.match(x) for x in lsns) or not tli or tli < 1:
            return ["missing or malformed WAL positions"]
        if not all(f and WAL_SEGMENT_RE.match(f) for f in files):
            return ["missing or malformed WAL file names"]
        problems = []
        if lsn_value(lsns[0]) > lsn_value(lsns[1]):  # type: ignore[arg-type]
            problems.append("start LSN after stop LSN")
        for lsn, name, what in ((lsns[0], files[0], "start"), (lsns[1], files[1], "stop")):
            # Compare segment numbers: start and stop timelines differ when a standby was
            # promoted during the backup.
            expected = wal_file_name(lsn, tli, self.wal_segment_size)  # type: ignore[arg-type]
            if expected[8:] != name[8:]:  # type: ignore[index]
                problems.append(f"{what} WAL file {name} does not hold {what} LSN {lsn}")
        return problems


@dataclass(frozen=True)
class BrokenBackup:
    """A backup directory whose manifest cannot be believed (or is missing): never used."""

    id: str
    reason: str


@dataclass
class Catalog:
    backups: list[Manifest]  # authentic and consistent, oldest first
    broken: list[BrokenBackup]
    orphans: list[str]  # backup ids with objects but no manifest (killed or running backups)


def manifest_key(backup_id: str) -> str:
    return f"backups/{backup_id}/{MANIFEST_NAME}"


def object_key(backup_id: str, name: str) -> str:
    return f"backups/{backup_id}/{name}"


def backup_time(backup_id: str) -> datetime | None:
    """When a backup started, from its id (also for backups without a readable manifest)."""
    match = _ID_RE.match(backup_id)
    if not match:
        return None
    return datetime.strptime(match["ts"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def write_manifest(repo: Repository, manifest: Manifest, data_key: bytes) -> str:
    """Seal and store the manifest, create-if-absent: a backup id is never reused."""
    manifest.check(manifest.id)
    key = manifest_key(manifest.id)
    raw = seal.seal("manifest", key, asdict(manifest), data_key)
    try:
        repo.put_bytes(key, raw, if_absent=True)
    except ObjectExists:
        raise DbtierError(
            f"backup {manifest.id} already exists in {repo.describe()}: two backups of the same "
            "kind started in the same second; run it again"
        ) from None
    return key


def read_manifest(repo: Repository, provider: KeyProvider, backup_id: str) -> Manifest:
    """The authenticated, sanity-checked manifest; IntegrityError (or WrongKeyError) if not."""
    key = manifest_key(backup_id)
    try:
        raw = repo.get_bytes(key)
    except ObjectNotFound:
        raise UsageError(f"backup {backup_id} not found in {repo.describe()} (no {key})") from None
    doc = seal.parse(raw, "manifest", key)
    body = doc["body"]
    try:
        wrapped = body["encryption"]["data_key"]
    except (KeyError, TypeError):
        raise IntegrityError(f"{key} has no wrapped data key") from None
    data_key = provider.unwrap(wrapped)
    seal.verify(doc, "manifest", key, data_key, key)
    try:
        fields = dict(body)
        fields["objects"] = [StoredObject(**o) for o in body["objects"]]
        manifest = Manifest(**fields)
    except (TypeError, KeyError) as exc:
        raise IntegrityError(f"{key} is unreadable: {exc}") from None
    manifest.check(backup_id)
    return manifest


def scan(repo: Repository, provider: KeyProvider, kind: str | None = None) -> Catalog:
    """Every backup: good ones (oldest first), broken ones with the reason, orphans.

    One bad manifest never hides the others. If no manifest at all opens because of the master
    key, the key is wrong (a configuration error), not every backup broken.
    """
    by_id: dict[str, set[str]] = {}
    for key in repo.list("backups/"):
        parts = key.split("/")
        if len(parts) == 3:
            by_id.setdefault(parts[1], set()).add(parts[2])
    good, broken, orphans, wrong_key = [], [], [], []
    for backup_id, names in sorted(by_id.items()):
        if MANIFEST_NAME not in names:
            orphans.append(backup_id)
            continue
        try:
            manifest = read_manifest(repo, provider, backup_id)
        except UsageError:
            continue  # deleted meanwhile (a concurrent cleanup)
        except IntegrityError as exc:
            broken.append(BrokenBackup(backup_id, str(exc)))
            if isinstance(exc, WrongKeyError):
                wrong_key.append(exc)
            continue
        if kind is None or manifest.kind == kind:
            good.append(manifest)
    if wrong_key and not good and len(wrong_key) == len(broken):
        raise wrong_key[0]
    good.sort(key=lambda m: (m.stopped_at, m.id))
    return Catalog(backups=good, broken=broken, orphans=orphans)


def list_backups(
    repo: Repository, provider: KeyProvider, kind: str | None = None
) -> list[Manifest]:
    """Good backups, oldest first (broken ones are skipped; see scan())."""
    return scan(repo, provider, kind).backups


def find_backup(
    repo: Repository, provider: KeyProvider, ref: str, kinds: tuple[str, ...] = ("logical",)
) -> Manifest:
    """`latest` (newest good backup of the kinds) or an id (which must be good)."""
    if ref == "latest":
        candidates = [m for m in list_backups(repo, provider) if m.kind in kinds]
        if not candidates:
            raise UsageError(f"no {'/'.join(kinds)} backup in {repo.describe()}")
        return candidates[-1]
    try:
        return read_manifest(repo, provider, ref)
    except IntegrityError as exc:
        if isinstance(exc, WrongKeyError):
            raise
        raise IntegrityError(f"backup {ref} is broken: {exc}") from None


# ---------------------------------------------------------------------------- verifications


def write_verification(
    repo: Repository, manifest: Manifest, data_key: bytes, *, ok: bool, deep: bool, error: str = ""
) -> None:
    """Remember a verify's result beside the backup (retention counts only good backups)."""
    key = object_key(manifest.id, VERIFY_NAME)
    body = {
        "backup_id": manifest.id,
        "ok": ok,
        "deep": deep,
        "error": error,
        "verified_at": iso(now_utc()),
        "host": socket.gethostname(),
        "tool_version": __version__,
        "data_key": manifest.wrapped_key,
    }
    repo.put_bytes(key, seal.seal("verification", key, body, data_key))


def read_verification(
    repo: Repository, provider: KeyProvider, manifest: Manifest
) -> dict[str, Any] | None:
    """The last verification of a backup, None if never verified (or the record is unreadable:
    then it does not count either way)."""
    key = object_key(manifest.id, VERIFY_NAME)
    try:
        doc = seal.parse(repo.get_bytes(key), "verification", key)
        seal.verify(doc, "verification", key, provider.unwrap(manifest.wrapped_key), key)
    except (ObjectNotFound, IntegrityError):
        return None
    body: dict[str, Any] = doc["body"]
    return body if body.get("backup_id") == manifest.id else None


# ------------------------------------------------------------------------ repository identity


def bind(repo: Repository, provider: KeyProvider, system_identifier: str | None) -> dict[str, Any]:
    """Check (or, on first write, record) what the repository is bound to: its master key and
    the cluster it backs up. Called before anything is written; refuses a different key
    (WrongKeyError, exit 2) or another cluster's data (UsageError)."""
    try:
        raw = repo.get_bytes(REPOSITORY_INFO)
    except ObjectNotFound:
        raw = _create_identity(repo, provider, system_identifier)
    doc = seal.parse(raw, "repository", REPOSITORY_INFO)
    body = doc["body"]
    bound = body.get("key") or {}
    mine = {"family": provider.family, "fingerprint": provider.fingerprint()}
    if bound != mine:
        raise WrongKeyError(
            f"repository {repo.describe()} is bound to master key {bound.get('family')}:"
            f"{bound.get('fingerprint')}, but the configured key {provider.describe()} is "
            f"{mine['family']}:{mine['fingerprint']}: refusing to write. Configure the "
            "repository's key, or use a new repository (or prefix) for a new key"
        )
    seal.verify(doc, "repository", REPOSITORY_INFO, provider.unwrap(body["data_key"]),
                f"{repo.describe()}/{REPOSITORY_INFO}")  # fmt: skip
    recorded = body.get("system_identifier")
    if recorded and system_identifier and recorded != system_identifier:
        raise UsageError(
            f"repository {repo.describe()} holds the backups of the cluster with system "
            f"identifier {recorded}; this cluster is {system_identifier}: refusing to mix them. "
            "A new cluster (initdb, pg_upgrade) needs its own repository or prefix"
        )
    return dict(body)


def _create_identity(
    repo: Repository, provider: KeyProvider, system_identifier: str | None
) -> bytes:
    data_key, wrapped = provider.generate_data_key()
    body = {
        "repository_format": 1,
        "created_at": iso(now_utc()),
        "created_by": socket.gethostname(),
        "tool_version": __version__,
        "key": {"family": provider.family, "fingerprint": provider.fingerprint()},
        "system_identifier": system_identifier,
        "data_key": wrapped,
    }
    raw = seal.seal("repository", REPOSITORY_INFO, body, data_key)
    try:
        repo.put_bytes(REPOSITORY_INFO, raw, if_absent=True)
    except ObjectExists:  # another host created it at the same moment: use theirs
        return repo.get_bytes(REPOSITORY_INFO)
    return raw


def split_backup_url(url: str) -> tuple[str, str]:
    """s3://bucket/prefix/backups/<id>[/manifest.json] -> (repository URL, id)."""
    match = re.match(r"^(?P<repo>.+?)/backups/(?P<id>[^/]+)(/manifest\.json)?/?$", url)
    if not match:
        raise UsageError(f"not a backup URL: {url} (expected <repository>/backups/<id>)")
    return match["repo"], match["id"]


# ------------------------------------------------------------------------------- WAL names


def lsn_value(lsn: str) -> int:
    hi, lo = (int(part, 16) for part in lsn.split("/"))
    return (hi << 32) | lo


def wal_file_name(lsn: str, timeline: int, segment_size: int = WAL_SEGMENT_SIZE) -> str:
    """The WAL segment holding an LSN ('16/B374D848'), as the backup history file names it."""
    return segment_name(timeline, lsn_value(lsn) // segment_size, segment_size)


def segment_number(name: str, segment_size: int = WAL_SEGMENT_SIZE) -> int:
    return int(name[8:16], 16) * (0x100000000 // segment_size) + int(name[16:24], 16)


def segment_name(timeline: int, number: int, segment_size: int = WAL_SEGMENT_SIZE) -> str:
    per_log = 0x100000000 // segment_size
    return f"{timeline:08X}{number // per_log:08X}{number % per_log:08X}"


def wal_key(name: str) -> str:
    return f"wal/{name}.zst.enc"


def archived_wal(repo: Repository) -> list[str]:
    """Names of every archived WAL file (segments, .partial, .backup, .history), sorted."""
    suffix = ".zst.enc"
    return sorted(k[len("wal/") : -len(suffix)] for k in repo.list("wal/") if k.endswith(suffix))


def segments_by_number(names: list[str], timeline: int, size: int) -> dict[int, list[str]]:
    """Archived segments (and .partial files) of this timeline or later, by segment number."""
    found: dict[int, list[str]] = {}
    for name in names:
        segment = WAL_SEGMENT_RE.match(name[:24]) and not name.endswith(".backup")
        if segment and int(name[:8], 16) >= timeline:
            found.setdefault(segment_number(name, size), []).append(name)
    return found


def missing_wal(names: list[str], manifest: Manifest) -> list[str]:
    """Segments from the backup's start to its stop that are not archived."""
    size = manifest.wal_segment_size
    have = segments_by_number(names, manifest.timeline or 1, size)
    start = segment_number(manifest.start_wal_file or "", size)
    stop = segment_number(manifest.stop_wal_file or "", size)
    return [
        segment_name(manifest.timeline or 1, n, size)
        for n in range(start, stop + 1)
        if n not in have
    ]


def wal_gaps(names: list[str], manifest: Manifest) -> tuple[dict[int, list[str]], list[int]]:
    """(archived segments by number, missing segment numbers) from the base backup's start to
    the newest archived segment: by names only, nothing downloaded."""
    size = manifest.wal_segment_size
    have = segments_by_number(names, manifest.timeline or 1, size)
    start = segment_number(manifest.start_wal_file or "", size)
    last = max(have, default=start)
    return have, [n for n in range(start, last + 1) if n not in have]


def why_not_good(
    repo: Repository, provider: KeyProvider, m: Manifest, archived: list[str]
) -> str | None:
    """None for a good backup: complete (every object present at its size, a base's WAL
    start..stop archived) and not failed by its last verification; else why not."""
    for obj in m.objects:
        if repo.size(object_key(m.id, obj.key)) != obj.size:
            return f"object {obj.key} is missing or has the wrong size"
    if m.kind == "base" and (missing := missing_wal(archived, m)):
        return f"it needs WAL {missing[0]}, which is not archived"
    verification = read_verification(repo, provider, m)
    if verification is not None and not verification.get("ok"):
        return f"failed verification at {verification.get('verified_at')}: " + str(
            verification.get("error") or "?"
        )
    return None


def is_good(repo: Repository, provider: KeyProvider, m: Manifest, archived: list[str]) -> bool:
    """What retention counts and PITR chooses (see why_not_good)."""
    return why_not_good(repo, provider, m, archived) is None
