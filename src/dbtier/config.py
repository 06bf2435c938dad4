"""dbtier's settings: /etc/dbtier/dbtier.toml (or $DBTIER_CONFIG), then environment, then flags.

The file holds no secrets: the master key is a file path, an environment variable name or a KMS
key id, and database passwords come from ~/.pgpass or PGPASSWORD (the credentials file that
roles/dbtier writes is readable only by the service user).
"""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import UsageError

DEFAULT_CONFIG = "/etc/dbtier/dbtier.toml"

# Environment variables (the seed plan's names where it had one) -> setting.
ENVIRONMENT = {
    "DATABASE_URL": "dsn",
    "BACKUP_REPOSITORY": "repository",
    "BACKUP_SECONDARY": "secondary",
    "DBTIER_MASTER_KEY_SPEC": "key",
    "BACKUP_RETENTION_DAYS": "retention_days",
    "BACKUP_RETENTION_COUNT": "retention_count",
    "BACKUP_STORAGE_CLASS": "storage_class",
    "BACKUP_COMPRESSION_LEVEL": "compression_level",
    "BACKUP_BASE_COMPRESSION_LEVEL": "base_compression_level",
    "DBTIER_AWS_ENDPOINT_URL": "endpoint_url",
    "BACKUP_REGION": "region",
    "BACKUP_SECONDARY_REGION": "secondary_region",
    "DBTIER_METRICS_DIR": "metrics_dir",
    "DBTIER_HISTORY_DSN": "history_dsn",
    "DBTIER_COMMAND": "command",
    "BACKUP_REPLICATION_WAIT": "replication_wait",
    "DBTIER_KMS_REGION": "kms_region",
    "BACKUP_LOCK_WAIT_TIMEOUT": "lock_wait_timeout",
    "DBTIER_PG_BINDIR": "pg_bindir",
    "DBTIER_WAL_ARCHIVING": "wal_archiving",
    "DBTIER_STATUS_MAX_AGE_LOGICAL_HOURS": "status_max_age_logical_hours",
    "DBTIER_STATUS_MAX_AGE_BASE_HOURS": "status_max_age_base_hours",
    "DBTIER_STATUS_MAX_WAL_AGE_SECONDS": "status_max_wal_age_seconds",
    "DBTIER_REPORTS_ROOT": "reports_root",
}

# Tables of dbtier.toml whose keys are settings too (an older layout grouped them).
SECTIONS = ("backup", "database")
# Settings whose value is itself a table (string -> string).
TABLES = ("schedule",)


@dataclass
class Settings:
    dsn: str | None = None  # database to back up / restore into (libpq URL; password via pgpass)
    repository: str | None = None  # file:///var/backups/dbtier or s3://bucket/prefix
    secondary: str | None = None  # DR repository in another region (s3://...)
    key: str | None = None  # master key: file:/etc/dbtier/master.key, env:VAR, kms:alias/x
    retention_days: int = 30
    retention_count: int = 0  # also keep at least this many newest good backups (0 = off)
    storage_class: str | None = None  # S3 storage class for backup objects, e.g. STANDARD_IA
    compression_level: int = 3
    # zstd level of base backups: on the mockupAWS data level 2 stores within 2 % of level 3 at
    # 70 % of its CPU (level 1: +5 %, 55 %), which keeps dbtier ahead of pgBackRest on two cores
    # at the same size (docs/BENCHMARKS.md).
    base_compression_level: int = 2
    endpoint_url: str | None = None  # S3/KMS endpoint override (tests, S3-compatible stores)
    region: str | None = None
    secondary_region: str | None = None
    kms_region: str | None = None  # region of a kms: master key (default: region)
    replication_wait: int = 900  # --check-replication: seconds to wait for S3 replication
    metrics_dir: str | None = None  # node_exporter textfile collector directory
    history_dsn: str | None = None  # where backup_history lives (default: dsn)
    # PostgreSQL binaries: the clients, and the server for deep verify and PITR (default:
    # version-matched, /usr/lib/postgresql/<major>/bin else PATH).
    pg_bindir: str | None = None
    # How a restored server's restore_command runs dbtier (default: this program's path).
    command: str | None = None
    # pg_dump --lock-wait-timeout: fail instead of queueing behind an exclusive lock forever.
    lock_wait_timeout: str = "60s"
    # Self-managed PostgreSQL: base backups, WAL archiving and PITR exist (false on RDS, where
    # AWS does them; `dbtier status` then skips those checks).
    wal_archiving: bool = True
    # `dbtier status` thresholds: the newest good backup of a kind older than this is a problem.
    status_max_age_logical_hours: float = 25.0
    status_max_age_base_hours: float = 25.0
    # Newest archived WAL older than this is a problem (0 = 2 x archive_timeout + 60 s).
    status_max_wal_age_seconds: int = 0
    # `dbtier archive --reports`: where this host sees the application's report files. Empty =
    # reports.file_path as stored; else the stored absolute path is read below this directory
    # (/var/lib/mockupaws/reports/x.pdf -> <reports_root>/var/lib/mockupaws/reports/x.pdf), for
    # a host that mounts the application's volume elsewhere.
    reports_root: str = ""
    # `dbtier slow-queries`: a statement whose estimated p95 in a collect window exceeds this is
    # logged to query_performance_log; rows older than the retention are pruned; the metrics
    # textfile lists the slowest `slow_query_top` statements of the latest window.
    slow_query_threshold_ms: float = 200.0
    slow_query_retention_days: int = 30
    slow_query_top: int = 10
    # The tier's scheduled jobs (job -> "30 1 * * * on db1 (postgres)"), written by roles/dbtier
    # from every host of the play, so that `dbtier status` on any host shows all of them.
    schedule: dict[str, str] = field(default_factory=dict)

    def history(self) -> str | None:
        """Where a job's backup_history row goes: history_dsn, else the database itself ("" is
        a DSN too: libpq then reads the PG* variables, as the jobs on database hosts do)."""
        return self.history_dsn if self.history_dsn is not None else self.dsn

    def require(self, name: str, hint: str) -> Any:
        value = getattr(self, name)
        if value in (None, ""):
            raise UsageError(f"no {name.replace('_', ' ')} configured ({hint})")
        return value


def first_env(*names: str) -> str | None:
    """The first of these environment variables that is set and not empty."""
    for name in names:
        if os.environ.get(name):
            return os.environ[name]
    return None


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _coerce(name: str, value: Any) -> Any:
    kind = str({f.name: f.type for f in fields(Settings)}[name])
    if kind == "bool":
        text = str(value).strip().lower()
        if isinstance(value, bool) or text in _TRUE + _FALSE:
            return value if isinstance(value, bool) else text in _TRUE
        raise UsageError(f"setting {name} must be true or false (got {value!r})")
    if kind.startswith("dict"):
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise UsageError(f"setting {name} must be a table of strings (got {value!r})")
        return value
    if kind == "float":
        number, what = float, "a number"
    elif "int" in kind:
        number, what = int, "an integer"
    else:
        return value
    if isinstance(value, bool):
        raise UsageError(f"setting {name} must be {what} (got {value!r})")
    if not isinstance(value, number):
        try:
            return number(value)
        except (TypeError, ValueError):
            raise UsageError(f"setting {name} must be {what} (got {value!r})") from None
    return value


def _unknown(name: str, known: set[str] | tuple[str, ...], where: Path) -> UsageError:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    hint = f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(sorted(known))})"
    return UsageError(f"unknown setting {name!r} in {where}{hint}")


def _from_file(path: Path) -> dict[str, Any]:
    """Settings of a dbtier.toml; an unknown key is an error, never silently ignored (a typo in
    retention_days would otherwise keep the default)."""
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise UsageError(f"cannot read config {path}: {exc}") from None
    known = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}
    for section_name, section in [("", data)] + [(n, data.get(n, {})) for n in SECTIONS]:
        for key, value in section.items():
            if isinstance(value, dict) and not (key in TABLES and not section_name):
                if section_name or key not in SECTIONS:
                    raise _unknown(f"{section_name}.{key}".lstrip("."), SECTIONS, path)
            elif key in known:
                values[key] = value
            else:
                raise _unknown(f"{section_name}.{key}".lstrip("."), known, path)
    return values


def load(path: str | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """File (if present, or required when named explicitly), then environment, then overrides."""
    explicit = path or os.environ.get("DBTIER_CONFIG")
    values: dict[str, Any] = {}
    config_path = Path(explicit or DEFAULT_CONFIG)
    if config_path.exists():
        values.update(_from_file(config_path))
    elif explicit:
        raise UsageError(f"config file not found: {config_path}")
    for env, name in ENVIRONMENT.items():
        if os.environ.get(env):
            values[name] = os.environ[env]
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = value
    settings = Settings(**{k: _coerce(k, v) for k, v in values.items()})
    _check_ranges(settings)
    return settings


# Settings whose value must lie in a range: name -> (lowest allowed, what to say).
RANGES = {
    "slow_query_threshold_ms": (0, "a number of milliseconds >= 0"),
    "slow_query_retention_days": (1, "a number of days >= 1"),
    "slow_query_top": (1, "a count >= 1"),
}


def _check_ranges(settings: Settings) -> None:
    for name, (lowest, what) in RANGES.items():
        value = getattr(settings, name)
        if value < lowest:
            raise UsageError(f"setting {name} must be {what} (got {value!r})")
