"""Report files older than the policy move to the repository (file:// and S3 on moto_server) and
come back with `restore_report`; missing files, failing and tampered uploads, dry runs and a
crash between commit and unlink leave everything accounted for."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from psycopg.rows import dict_row

from dbtier import migrations, reportarchive, reportobject
from dbtier.config import Settings
from dbtier.errors import DbtierError, Terminated, UsageError
from dbtier.repository import FileRepository
from dbtier.store import Store, open_store

from .conftest import SQL_DIR, run_dbtier
from .support.moto_server import ACCESS_KEY, SECRET_KEY, MotoServer, moto_server_binary

POLICY = {
    "table_name": "reports",
    "archive_table": "reports_archive",
    "archive_after_days": 180,
    "compress": True,
    "s3_offload": True,
    "enabled": True,
    "batch_size": 100,
}


class StandInJob:
    """The archive module's job bookkeeping, as far as reportarchive uses it: one archive_jobs
    row, counters added up in memory, written with the cursor in the caller's transaction."""

    def __init__(self, dsn: str, dry_run: bool = False) -> None:
        self.counters = {"processed": 0, "archived": 0, "deleted": 0, "bytes": 0}
        with psycopg.connect(dsn) as conn:
            self.id = conn.execute(
                "INSERT INTO archive_jobs (job_type, status, dry_run, batch_size, started_at) "
                "VALUES ('reports', 'running', %s, 100, now()) RETURNING id",
                (dry_run,),
            ).fetchone()[0]

    def add(self, processed: int = 0, archived: int = 0, deleted: int = 0, bytes: int = 0) -> None:
        for name, value in (("processed", processed), ("archived", archived),
                            ("deleted", deleted), ("bytes", bytes)):  # fmt: skip
            self.counters[name] += value

    def finish(self, dsn: str, status: str) -> None:
        with psycopg.connect(dsn) as conn:
            conn.execute(
                "UPDATE archive_jobs SET status = %s, completed_at = now() WHERE id = %s",
                (status, self.id),
            )

    def checkpoint(self, conn: psycopg.Connection, cursor: dict | None = None) -> None:
        c = self.counters
        conn.execute(
            "UPDATE archive_jobs SET records_processed = %s, records_archived = %s, "
            "records_deleted = %s, bytes_archived = %s, resume_cursor = %s WHERE id = %s",
            (c["processed"], c["archived"], c["deleted"], c["bytes"],
             json.dumps(cursor) if cursor is not None else None, self.id),
        )  # fmt: skip


@pytest.fixture
def app(database: str, tmp_path: Path) -> dict[str, Any]:
    """Migrated database, a file:// repository, a master key and a reports directory."""
    migrations.migrate(database, SQL_DIR)
    repo, files = tmp_path / "repo", tmp_path / "reports"
    repo.mkdir()
    files.mkdir()
    key = tmp_path / "master.key"
    key.write_bytes(os.urandom(32))
    settings = Settings(dsn=database, repository=f"file://{repo}", key=f"file:{key}")
    with psycopg.connect(database) as conn:
        scenario = conn.execute(
            "INSERT INTO scenarios (name) VALUES ('archived reports') RETURNING id"
        ).fetchone()[0]
    return {"dsn": database, "repo": repo, "files": files, "settings": settings,
            "scenario": scenario}  # fmt: skip


def add_report(
    app: dict[str, Any], age_days: float, content: bytes | None, fmt: str = "pdf", **extra: Any
) -> dict[str, Any]:
    """A reports row age_days old; its file holds content (None: no file)."""
    report_id = uuid.uuid4()
    path = app["files"] / f"{report_id}.{fmt}"
    if content is not None:
        path.write_bytes(content)
    with psycopg.connect(app["dsn"]) as conn:
        conn.execute(
            "INSERT INTO reports (id, scenario_id, created_at, report_format, file_path, "
            "file_size_bytes, generated_by, extra_data) "
            "VALUES (%s, %s, now() - make_interval(secs => %s), %s, %s, %s, 'tests', %s)",
            (report_id, app["scenario"], age_days * 86400, fmt, str(path),
             None if content is None else len(content), json.dumps(extra)),
        )  # fmt: skip
    return {"id": str(report_id), "path": path, "content": content}


def rows(dsn: str, query: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return conn.execute(query, params).fetchall()


def live(dsn: str, report_id: str) -> dict[str, Any] | None:
    found = rows(dsn, "SELECT * FROM reports WHERE id = %s", report_id)
    return found[0] if found else None


def archived(dsn: str, report_id: str) -> dict[str, Any] | None:
    found = rows(dsn, "SELECT * FROM reports_archive WHERE id = %s", report_id)
    return found[0] if found else None


def run(app: dict[str, Any], *, dry_run: bool = False, batch_size: int = 2) -> dict[str, Any]:
    job = StandInJob(app["dsn"], dry_run)
    status = "failed"
    try:
        with psycopg.connect(app["dsn"]) as conn:
            result = reportarchive.archive_reports(
                app["settings"], conn, POLICY, job, dry_run=dry_run, batch_size=batch_size
            )
        status = "partial" if result["failed"] else "completed"
    finally:
        job.finish(app["dsn"], status)
    result["job"] = job
    return result


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def use_repository(monkeypatch: pytest.MonkeyPatch, make: Any) -> None:
    """archive_reports opens its store through open_store: hand it a wrapped repository."""

    def opened(settings: Settings) -> Store:
        store = open_store(settings)
        return Store(repo=make(store.repo), provider=store.provider, settings=settings)

    monkeypatch.setattr(reportarchive, "open_store", opened)


# ------------------------------------------------------------------------------------- file://


def test_old_reports_move_to_the_repository_and_one_comes_back(
    app: dict[str, Any], capfd: pytest.CaptureFixture[str]
) -> None:
    old = [
        add_report(app, 400, os.urandom(1_500_000), "pdf", pages=12),  # > 1 encryption chunk
        add_report(app, 200, b"scenario,cost\n" + b"lambda,0.0001\n" * 20_000, "csv"),
        add_report(app, 181, b"", "csv"),  # an empty report is a report too
    ]
    recent = add_report(app, 30, os.urandom(1000))
    before = {r["id"]: live(app["dsn"], r["id"]) for r in old}

    result = run(app)
    assert (result["selected"], result["archived"], result["missing"], result["failed"]) == (
        3, 3, 0, 0,
    )  # fmt: skip
    assert result["bytes_original"] == sum(len(r["content"]) for r in old)
    assert 0 < result["bytes_stored"] < result["bytes_original"]  # the csv compresses
    assert result["date_range"] == [before[old[0]["id"]]["created_at"].isoformat(),
                                    before[old[2]["id"]]["created_at"].isoformat()]  # fmt: skip
    assert result["error"] is None
    for report in old:
        row = archived(app["dsn"], report["id"])
        assert row is not None and live(app["dsn"], report["id"]) is None
        key = f"reports/{app['scenario']}/{report['id']}.{row['report_format']}.zst.enc"
        stored = (app["repo"] / key).read_bytes()
        assert (row["s3_bucket"], row["s3_key"]) == ("file://", str(app["repo"] / key))
        assert row["original_size"] == len(report["content"])
        assert row["compressed_size"] == len(stored) and row["sha256"] == sha256(stored)
        assert (row["compression"], row["storage_class"]) == ("zstd", "LOCAL")
        assert row["archive_batch_id"] == result["job"].id
        assert row["extra_data"] == before[report["id"]]["extra_data"]  # no marker left
        assert report["content"] not in stored or not report["content"]  # encrypted
        assert not report["path"].exists()
    assert live(app["dsn"], recent["id"]) is not None and recent["path"].exists()
    job = rows(app["dsn"], "SELECT * FROM archive_jobs WHERE id = %s", result["job"].id)[0]
    assert (job["records_processed"], job["records_archived"], job["records_deleted"]) == (3, 3, 3)
    assert job["bytes_archived"] == result["bytes_original"]
    assert job["resume_cursor"]["after_id"] == old[2]["id"]

    # Back: the file byte for byte, the row with every column, the object kept.
    first = old[0]
    first_sha256 = archived(app["dsn"], first["id"])["sha256"]
    # Through the CLI, as docs/DATA-ARCHIVING.md has it: dbtier-job archive restore-report ID.
    settings = app["settings"]
    proc = run_dbtier(
        "archive", "restore-report", first["id"], "--json",
        env={"DBTIER_CONFIG": "", "DATABASE_URL": settings.dsn,
             "BACKUP_REPOSITORY": settings.repository, "DBTIER_MASTER_KEY_SPEC": settings.key},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    restored = json.loads(proc.stdout)
    assert restored["file"] == "written" and restored["object_kept"]
    assert first["path"].read_bytes() == first["content"]
    assert live(app["dsn"], first["id"]) == before[first["id"]]
    assert archived(app["dsn"], first["id"]) is None
    with pytest.raises(UsageError, match=r"not in reports_archive \(it is a live report"):
        reportarchive.restore_report(app["settings"], first["id"])

    # Archived again: the kept object holds this very file, so it is reused.
    again = run(app)
    assert (again["archived"], again["failed"]) == (1, 0)
    assert not first["path"].exists()
    assert "event=report_archive.reused" in capfd.readouterr().err
    assert archived(app["dsn"], first["id"])["sha256"] == first_sha256


def test_restore_refuses_what_it_cannot_put_back_exactly(app: dict[str, Any]) -> None:
    a, b, c = (add_report(app, 300, os.urandom(5000)) for _ in range(3))
    assert run(app)["archived"] == 3
    settings = app["settings"]

    with pytest.raises(UsageError, match="is not a report id"):
        reportarchive.restore_report(settings, "nope")
    with pytest.raises(UsageError, match=r"not in reports_archive \(no such report"):
        reportarchive.restore_report(settings, str(uuid.uuid4()))

    # A different file where the report goes: refused, nothing changes.
    a["path"].write_bytes(os.urandom(5000))
    with pytest.raises(UsageError, match="exists with other content"):
        reportarchive.restore_report(settings, a["id"])
    assert archived(app["dsn"], a["id"]) is not None and live(app["dsn"], a["id"]) is None
    # The same file already there: fine, the row comes back.
    a["path"].write_bytes(a["content"])
    assert reportarchive.restore_report(settings, a["id"])["file"] == "identical"
    assert live(app["dsn"], a["id"]) is not None

    # A flipped bit in the stored object: checksum mismatch, no file, the row stays archived.
    row = archived(app["dsn"], b["id"])
    blob = bytearray(Path(row["s3_key"]).read_bytes())
    blob[len(blob) // 2] ^= 0x01
    Path(row["s3_key"]).write_bytes(bytes(blob))
    with pytest.raises(DbtierError) as failed:
        reportarchive.restore_report(settings, b["id"])
    assert "\n" not in str(failed.value) and b["id"] in str(failed.value)
    assert not b["path"].exists() and archived(app["dsn"], b["id"]) is not None

    # The object gone: one line, nothing changes.
    Path(archived(app["dsn"], c["id"])["s3_key"]).unlink()
    with pytest.raises(DbtierError, match="not found: cannot restore"):
        reportarchive.restore_report(settings, c["id"])
    assert not c["path"].exists() and archived(app["dsn"], c["id"]) is not None
    assert not list(app["files"].glob(".*.tmp"))  # no scratch files left


def test_a_missing_file_is_recorded_and_its_row_stays(
    app: dict[str, Any], capfd: pytest.CaptureFixture[str]
) -> None:
    gone = add_report(app, 250, None, note="kept")
    present = add_report(app, 240, os.urandom(100))

    first = run(app)
    assert (first["missing"], first["missing_new"], first["archived"], first["failed"]) == (
        1, 1, 1, 0,
    )  # fmt: skip
    assert first["error"] is None and first["warning"].startswith("1 report file(s) missing")
    row = live(app["dsn"], gone["id"])
    mark = row["extra_data"]["dbtier_archive"]
    assert row["extra_data"]["note"] == "kept"
    assert mark["missing_checks"] == 1 and mark["path"] == str(gone["path"])
    assert archived(app["dsn"], gone["id"]) is None and archived(app["dsn"], present["id"])
    warning = [ln for ln in capfd.readouterr().err.splitlines() if "missing_file" in ln]
    assert len(warning) == 1 and gone["id"] in warning[0] and "times=1" in warning[0]
    job = rows(app["dsn"], "SELECT resume_cursor FROM archive_jobs WHERE id = %s",
               first["job"].id)[0]  # fmt: skip
    assert job["resume_cursor"]["missing"] == 1

    # Seen again: counted, not new, the first sighting kept.
    second = run(app)
    assert (second["missing"], second["missing_new"], second["selected"]) == (1, 0, 1)
    again = live(app["dsn"], gone["id"])["extra_data"]["dbtier_archive"]
    assert again["missing_checks"] == 2 and again["missing_file_at"] == mark["missing_file_at"]
    assert "times=2" in capfd.readouterr().err

    # The file turns up: archived, and the archive keeps the application's extra_data only.
    gone["path"].write_bytes(b"found")
    third = run(app)
    assert (third["archived"], third["missing"]) == (1, 0)
    assert archived(app["dsn"], gone["id"])["extra_data"] == {"note": "kept"}


def test_a_tampered_upload_keeps_the_file_and_the_row(
    app: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = add_report(app, 365, os.urandom(20_000))
    fine = add_report(app, 300, os.urandom(20_000))

    class Corrupting(FileRepository):
        """Flips a byte of the victim's object right after it is stored (bit rot, a faulty
        disk or a meddler between upload and verify)."""

        def put_stream(self, key: str, src: Any, *, if_absent: bool = False) -> Any:
            info = super().put_stream(key, src, if_absent=if_absent)
            if victim["id"] in key:
                path = self.root / key
                blob = bytearray(path.read_bytes())
                blob[-100] ^= 0x40
                path.write_bytes(bytes(blob))
            return info

    use_repository(monkeypatch, lambda repo: Corrupting(repo.root))
    result = run(app)
    assert (result["archived"], result["failed"]) == (1, 1)
    assert result["error"].startswith("1 report(s) failed (files and rows kept")
    assert "first: report " + victim["id"] in result["error"]
    assert "verify after upload failed" in result["errors"][0]
    assert victim["path"].read_bytes() == victim["content"]
    assert live(app["dsn"], victim["id"]) is not None and archived(app["dsn"], victim["id"]) is None
    assert not (app["repo"] / "reports" / str(app["scenario"]) / f"{victim['id']}.pdf.zst.enc"
                ).exists()  # fmt: skip
    assert archived(app["dsn"], fine["id"]) is not None and not fine["path"].exists()
    with pytest.raises(DbtierError, match=r"1 report\(s\) failed"):
        reportarchive.raise_for_failures(result)

    monkeypatch.undo()
    assert run(app)["archived"] == 1  # nothing in the way of the next run


def test_interrupted_runs_are_finished_by_the_next_one(
    app: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    crashed = add_report(app, 500, os.urandom(3000))
    uploaded = add_report(app, 400, os.urandom(3000))
    clash = add_report(app, 300, os.urandom(3000))
    settings = app["settings"]
    store = open_store(settings)
    store.bind(None)

    # A run killed after uploading (before its commit) left `uploaded`'s object; another one
    # stored an object of other content under `clash`'s key.
    for report, content in ((uploaded, uploaded["content"]), (clash, b"something else")):
        row = live(app["dsn"], report["id"])
        other = app["files"] / "other"
        other.write_bytes(content)
        key = reportobject.object_key(row["scenario_id"], row["id"], row["report_format"])
        header = reportarchive._row_for_header(row)
        reportobject.write(store.repo, store.provider, key, other, header,
                           reportobject.file_digest(other), 3)  # fmt: skip
        other.unlink()

    # Killed between commit and unlink: the first archived report's file stays behind.
    def killed(self: Any, report_id: Any, path: Path) -> None:
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(reportarchive._Run, "unlink", killed)
    with pytest.raises(KeyboardInterrupt):
        run(app)
    monkeypatch.undo()
    assert archived(app["dsn"], crashed["id"]) is not None and crashed["path"].exists()
    assert "dbtier_archive" in archived(app["dsn"], crashed["id"])["extra_data"]

    result = run(app)
    assert result["orphans_removed"] == 1 and not crashed["path"].exists()
    assert archived(app["dsn"], crashed["id"])["extra_data"] == {}
    assert archived(app["dsn"], uploaded["id"]) is not None and not uploaded["path"].exists()
    assert result["failed"] == 1 and "already exists with other content" in result["errors"][0]
    assert live(app["dsn"], clash["id"]) is not None and clash["path"].exists()


def test_a_restore_between_commit_and_unlink_keeps_the_file(
    app: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    report = add_report(app, 300, os.urandom(3000))
    unlink = reportarchive._Run.unlink

    def restored_first(self: Any, report_id: Any, path: Path) -> None:
        assert reportarchive.restore_report(app["settings"], str(report_id))["file"] == "identical"
        unlink(self, report_id, path)

    monkeypatch.setattr(reportarchive._Run, "unlink", restored_first)
    assert run(app)["archived"] == 1
    assert live(app["dsn"], report["id"]) is not None  # the live report again ...
    assert report["path"].read_bytes() == report["content"]  # ... with its file


def test_a_terminated_run_leaves_the_report_as_it_was(
    app: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    report = add_report(app, 300, os.urandom(3000))

    def stopped(*args: Any, **kwargs: Any) -> Any:
        raise Terminated("terminated by SIGTERM")

    monkeypatch.setattr(reportobject, "read", stopped)  # SIGTERM while verifying the upload
    with pytest.raises(Terminated):
        run(app)
    assert live(app["dsn"], report["id"]) is not None and report["path"].exists()
    assert not list((app["repo"] / "reports").rglob("*.enc"))  # the unverified object is gone


def test_dry_run_counts_and_touches_nothing(app: dict[str, Any]) -> None:
    reports = [add_report(app, 200 + n, os.urandom(1000 * (n + 1))) for n in range(3)]
    add_report(app, 250, None)
    add_report(app, 10, os.urandom(10))  # too young

    def state() -> Any:
        return (
            rows(app["dsn"], "SELECT * FROM reports ORDER BY id"),
            rows(app["dsn"], "SELECT count(*) FROM reports_archive"),
            rows(app["dsn"], "SELECT * FROM archive_jobs WHERE NOT dry_run"),
            sorted(p.name for p in app["files"].iterdir()),
            sorted(str(p) for p in app["repo"].rglob("*")),
        )

    before = state()
    result = run(app, dry_run=True, batch_size=1)
    assert state() == before
    assert (result["dry_run"], result["selected"], result["missing"]) == (True, 4, 1)
    assert result["bytes_original"] == sum(len(r["content"]) for r in reports)
    assert result["bytes_stored"] is None and result["archived"] == 0
    assert result["orphans_pending"] == 0
    oldest, newest = result["date_range"]
    assert oldest < newest


def test_a_report_the_application_holds_is_skipped_not_waited_for(app: dict[str, Any]) -> None:
    held = add_report(app, 300, os.urandom(100))
    free = add_report(app, 299, os.urandom(100))
    with psycopg.connect(app["dsn"]) as other:
        other.execute("SELECT 1 FROM reports WHERE id = %s FOR UPDATE", (held["id"],))
        result = run(app)
    assert (result["selected"], result["skipped"], result["archived"]) == (2, 1, 1)
    assert live(app["dsn"], held["id"]) is not None and held["path"].exists()
    assert archived(app["dsn"], free["id"]) is not None
    assert run(app)["archived"] == 1  # released: the next run takes it


def test_reports_root_reads_the_files_where_this_host_mounts_them(app: dict[str, Any]) -> None:
    mount = app["files"] / "mnt"
    stored = "/var/lib/mockupaws/reports/r1.pdf"  # the application's path
    here = mount / "var/lib/mockupaws/reports/r1.pdf"
    here.parent.mkdir(parents=True)
    here.write_bytes(b"%PDF-1.7 report")
    odd = add_report(app, 400, b"x")
    with psycopg.connect(app["dsn"]) as conn:
        report_id = conn.execute(
            "INSERT INTO reports (scenario_id, created_at, report_format, file_path) "
            "VALUES (%s, now() - interval '1 year', 'pdf', %s) RETURNING id::text",
            (app["scenario"], stored),
        ).fetchone()[0]
        conn.execute("UPDATE reports SET file_path = 'relative/x.pdf' WHERE id = %s", (odd["id"],))
    app["settings"].reports_root = str(mount)

    result = run(app)
    assert (result["archived"], result["failed"]) == (1, 1)
    assert "is not a plain absolute path: fix the row" in result["errors"][0]
    assert archived(app["dsn"], report_id)["file_path"] == stored and not here.exists()
    reportarchive.restore_report(app["settings"], report_id)
    assert here.read_bytes() == b"%PDF-1.7 report"


# ------------------------------------------------------------------------------------ S3 + KMS


class FailingS3Proxy:
    """An HTTP proxy in front of moto_server that answers 403 AccessDenied to writes of keys
    containing `deny` (as a bucket policy denying them would) and passes everything else."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.deny: str | None = None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    raw = b""
                    while True:
                        line = self.rfile.readline()
                        size = int(line.split(b";")[0], 16)
                        raw += line + self.rfile.read(size + 2)
                        if size == 0:
                            return raw
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                body = self._body()
                if proxy.deny and self.command in ("PUT", "POST") and proxy.deny in self.path:
                    error = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied'
                             b"</Code><Message>Access Denied</Message></Error>")  # fmt: skip
                    self.send_response(403)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(error)))
                    self.end_headers()
                    self.wfile.write(error)
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "expect"}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for name, value in resp.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length",
                                            "date", "server"):  # fmt: skip
                        self.send_header(name, value)
                length = resp.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def s3app(app: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    if moto_server_binary() is None:
        pytest.skip("moto_server not installed")
    for name, value in {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }.items():
        monkeypatch.setenv(name, value)
    with MotoServer() as moto:
        s3 = boto3.client("s3", **moto.client_kwargs())
        bucket = f"reports-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        kms = boto3.client("kms", **moto.client_kwargs())
        key_id = kms.create_key(Description="dbtier")["KeyMetadata"]["KeyId"]
        proxy = FailingS3Proxy(moto.url)
        try:
            app["settings"] = Settings(
                dsn=app["dsn"], repository=f"s3://{bucket}/dbtier", key=f"kms:{key_id}",
                endpoint_url=proxy.url, region="us-east-1", storage_class="STANDARD_IA",
            )  # fmt: skip
            yield {**app, "s3": s3, "bucket": bucket, "proxy": proxy}
        finally:
            proxy.close()


def test_s3_kms_archive_a_denied_upload_and_a_restore(s3app: dict[str, Any]) -> None:
    app, s3 = s3app, s3app["s3"]
    denied = add_report(app, 400, os.urandom(70_000))
    fine = [add_report(app, 300, os.urandom(70_000)), add_report(app, 200, b"a,b\n" * 9000, "csv")]
    app["proxy"].deny = denied["id"]

    result = run(app)
    assert (result["archived"], result["failed"]) == (2, 1)
    assert "AccessDenied" in result["errors"][0] and "\n" not in result["errors"][0]
    assert denied["path"].read_bytes() == denied["content"]
    assert live(app["dsn"], denied["id"]) is not None and archived(app["dsn"], denied["id"]) is None
    for report in fine:
        row = archived(app["dsn"], report["id"])
        key = f"dbtier/reports/{app['scenario']}/{report['id']}.{row['report_format']}.zst.enc"
        assert (row["s3_bucket"], row["s3_key"]) == (app["bucket"], key)
        head = s3.head_object(Bucket=app["bucket"], Key=key)
        body = s3.get_object(Bucket=app["bucket"], Key=key)["Body"].read()
        assert row["s3_version_id"] and row["s3_version_id"] == head["VersionId"]
        assert row["storage_class"] == "STANDARD_IA" == head.get("StorageClass")
        assert (row["compressed_size"], row["sha256"]) == (len(body), sha256(body))
        assert row["original_size"] == len(report["content"]) and not report["path"].exists()

    # The policy lifted: the next run moves it; then it comes back from S3.
    app["proxy"].deny = None
    assert run(app)["archived"] == 1
    back = reportarchive.restore_report(app["settings"], fine[1]["id"])
    assert back["object"].startswith(f"s3://{app['bucket']}/dbtier/reports/")
    assert fine[1]["path"].read_bytes() == fine[1]["content"]


def test_an_unreachable_repository_stops_before_touching_anything(s3app: dict[str, Any]) -> None:
    app = s3app
    report = add_report(app, 400, os.urandom(100))
    app["proxy"].deny = "/"  # nothing can be written, the repository's identity neither
    with pytest.raises(DbtierError) as failed:
        run(app)
    assert "AccessDenied" in str(failed.value) and "\n" not in str(failed.value)
    assert live(app["dsn"], report["id"]) is not None and report["path"].exists()


def test_a_run_stops_after_failures_in_a_row(
    s3app: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = s3app
    add_report(app, 500, os.urandom(100))
    assert run(app)["archived"] == 1  # the repository is bound to the KMS key
    reports = [add_report(app, 300 + n, os.urandom(100)) for n in range(4)]
    app["proxy"].deny = "/reports/"
    monkeypatch.setattr(reportarchive, "MAX_CONSECUTIVE_FAILURES", 2)
    result = run(app, batch_size=1)
    assert (result["selected"], result["failed"], result["archived"]) == (2, 2, 0)
    assert result["stopped"] and "run stopped early" in result["error"]
    assert all(live(app["dsn"], r["id"]) is not None and r["path"].exists() for r in reports)


def test_dbtier_archive_reports_records_its_job_and_fails_on_a_failed_report(
    app: dict[str, Any], tmp_path: Path
) -> None:
    """The whole path an operator runs: `dbtier archive --reports` with its archive_jobs row,
    exit 0 with a missing file, exit 1 (status partial, file and row kept) with a failed one."""
    settings = app["settings"]
    flags = ["--dsn", app["dsn"], "--repo", settings.repository, "--key", settings.key,
             "--metrics-dir", str(tmp_path / "metrics"), "--json"]  # fmt: skip
    kept = [add_report(app, 200, os.urandom(5000)), add_report(app, 300, b"csv,data\n", "csv")]
    missing = add_report(app, 250, None)
    young = add_report(app, 10, b"recent")

    plan = run_dbtier("archive", "--all", "--dry-run", *flags)
    assert plan.returncode == 0, plan.stderr
    [reports] = [p for p in json.loads(plan.stdout)["policies"] if p["type"] == "reports"]
    assert reports["selected"] == 3 and reports["missing"] == 1
    assert rows(app["dsn"], "SELECT count(*) AS n FROM archive_jobs")[0]["n"] == 0

    done = run_dbtier("archive", "--reports", *flags)
    assert done.returncode == 0, done.stderr
    [result] = json.loads(done.stdout)["policies"]
    assert (result["status"], result["archived"], result["missing"]) == ("completed", 2, 1)
    [job] = rows(app["dsn"], "SELECT * FROM archive_jobs")
    assert (job["job_type"], job["status"], job["records_processed"], job["records_archived"],
            job["records_deleted"]) == ("reports", "completed", 3, 2, 2)  # fmt: skip
    assert job["bytes_archived"] == 5000 + len(b"csv,data\n")
    assert [archived(app["dsn"], r["id"])["archive_batch_id"] for r in kept] == [job["id"]] * 2
    assert live(app["dsn"], missing["id"]) and live(app["dsn"], young["id"])
    assert not any(r["path"].exists() for r in kept)
    prom = (tmp_path / "metrics" / "dbtier_archive_reports.prom").read_text()
    assert 'dbtier_job_last_status{job="archive_reports"} 1' in prom

    # an object of other content already sits where the next report goes: that report fails
    bad = add_report(app, 400, b"the real report")
    key = reportobject.object_key(app["scenario"], bad["id"], "pdf")
    (app["repo"] / key).parent.mkdir(parents=True, exist_ok=True)
    (app["repo"] / key).write_bytes(b"something else entirely")
    failed = run_dbtier("archive", "--reports", *flags)
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines()[-1].startswith("dbtier: error: archive reports:")
    newest = rows(app["dsn"], "SELECT * FROM archive_jobs ORDER BY id DESC LIMIT 1")[0]
    assert newest["status"] == "failed" and newest["error_message"]
    assert live(app["dsn"], bad["id"]) and bad["path"].read_bytes() == b"the real report"
    prom = (tmp_path / "metrics" / "dbtier_archive_reports.prom").read_text()
    assert 'dbtier_job_last_status{job="archive_reports"} 0' in prom
