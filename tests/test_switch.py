"""dbtier restore switch on this host: a throwaway Debian cluster (pg_createcluster), archiving
into a file:// repository, recovered with restore pitr and switched into service.

No systemd here: the switch stops and starts through pg_ctlcluster (the systemd path runs in
molecule/default/tests/test_switch.py).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from dbtier import restore, switch
from dbtier.pgcluster import free_port

from .conftest import SERVER_DBTIER, SQL_DIR
from .test_backup import (  # noqa: F401 (store is a fixture)
    cli,
    cli_as_server,
    shared_dir,
    store,
    switch_wal,
    wait_archived,
)

pytestmark = pytest.mark.skipif(
    shutil.which("pg_createcluster") is None or os.geteuid() != 0,
    reason="needs root and Debian's postgresql-common",
)


class Debian:
    """A cluster 15/<name> made by pg_createcluster: /var/lib/postgresql/15/<name>."""

    def __init__(self, store: dict) -> None:
        self.name = f"swtest{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.spec = f"15/{self.name}"
        self.pgdata = Path(f"/var/lib/postgresql/15/{self.name}")
        self.confdir = Path(f"/etc/postgresql/15/{self.name}")
        # the recovered copy: next to the live data directory's parent, same filesystem
        self.scratch = Path(f"/var/lib/postgresql/{self.name}-pitr")
        self.pitr = self.scratch / "pitr"
        self.store = store

    def create(self) -> None:
        subprocess.run(
            ["pg_createcluster", "15", self.name, "-p", str(self.port), "--", "--no-sync"],
            check=True,
            capture_output=True,
        )
        push = f"DBTIER_CONFIG={self.store['config']} {SERVER_DBTIER} wal-push --quiet %p"
        (self.confdir / "conf.d" / "swtest.conf").write_text(
            "listen_addresses = '127.0.0.1'\nwal_level = replica\narchive_mode = on\n"
            f"archive_command = '{push}'\nmax_wal_senders = 4\nfsync = off\n"
        )
        hba = self.confdir / "pg_hba.conf"
        hba.write_text(
            "host all postgres 127.0.0.1/32 trust\nhost replication postgres 127.0.0.1/32 trust\n"
            + hba.read_text()
        )
        subprocess.run(["pg_ctlcluster", "15", self.name, "start"], check=True)
        self.scratch.mkdir(mode=0o755)
        shutil.chown(self.scratch, "postgres", "postgres")

    def tcp(self, dbname: str = "swdb") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def socket_dsn(self, dbname: str = "swdb") -> str:
        return f"host=/var/run/postgresql port={self.port} dbname={dbname} user=postgres"

    def state_file(self) -> Path:
        return Path(f"/var/lib/postgresql/15/.dbtier-switch-15-{self.name}.json")

    def asides(self) -> list[Path]:
        return sorted(self.pgdata.parent.glob(f"{self.name}.pre-switch-*"))

    def drop(self) -> None:
        subprocess.run(["pg_dropcluster", "--stop", "15", self.name], capture_output=True)
        # pg_dropcluster keeps a conf.d with a file it does not know (swtest.conf)
        for path in [*self.asides(), self.scratch, self.pgdata, self.confdir]:
            shutil.rmtree(path, ignore_errors=True)
        for path in self.pgdata.parent.glob(f".dbtier-switch-15-{self.name}.*"):
            path.unlink()


@pytest.fixture
def debian(store: dict) -> Iterator[Debian]:
    cluster = Debian(store)
    try:
        cluster.create()
        yield cluster
    finally:
        cluster.drop()


def recovered(cluster: Debian) -> datetime:
    """Base backup, batch A, the target, batch B (archived), PITR into cluster.pitr: stopped,
    promoted, on timeline 2, with A and without B. Returns the target."""
    with psycopg.connect(cluster.tcp("postgres"), autocommit=True) as conn:
        conn.execute("CREATE DATABASE swdb")
    from dbtier import migrations

    migrations.migrate(cluster.tcp(), SQL_DIR)  # backup_history, for the switch's row
    with psycopg.connect(cluster.tcp(), autocommit=True) as conn:
        conn.execute("CREATE TABLE events (id int PRIMARY KEY, batch text NOT NULL)")
        conn.execute("INSERT INTO events SELECT g, 'A' FROM generate_series(1, 100) g")
    made = cli_as_server(cluster.store, "backup", "base", "--json", dsn=cluster.tcp())
    assert made.returncode == 0, made.stderr
    with psycopg.connect(cluster.tcp(), autocommit=True) as conn:
        time.sleep(1.2)
        target = conn.execute("SELECT now()").fetchone()[0]
        time.sleep(1.2)
        conn.execute("INSERT INTO events SELECT g, 'B' FROM generate_series(101, 150) g")
    wait_archived(cluster.tcp(), switch_wal(cluster.tcp()))
    pitr = cli(
        cluster.store,
        "restore",
        "pitr",
        "--target-time",
        target.isoformat(),
        "--data-dir",
        str(cluster.pitr),
        "--json",
        dsn=cluster.tcp(),
    )
    assert pitr.returncode == 0, pitr.stderr
    return target


def run_switch(cluster: Debian, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli(
        cluster.store,
        "restore",
        "switch",
        "--data-dir",
        str(cluster.pitr),
        "--cluster",
        cluster.spec,
        *extra,
        dsn=cluster.socket_dsn(),
    )


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stderr.strip().splitlines()[-1]


def test_switch_puts_the_recovered_cluster_into_service(debian: Debian) -> None:
    target = recovered(debian)
    # refusals first: each leaves everything as it was
    as_postgres = cli_as_server(
        debian.store, "restore", "switch", "--data-dir", str(debian.pitr), "--cluster", debian.spec
    )
    assert as_postgres.returncode == 2
    line = error_line(as_postgres)
    assert "must run as root" in line and "sudo " in line and "restore switch --data-dir" in line

    other_fs = Path(f"/dev/shm/{debian.name}")
    other_fs.mkdir()
    try:
        proc = cli(debian.store, "restore", "switch", "--data-dir", str(other_fs), "--cluster",
                   debian.spec)  # fmt: skip
        assert proc.returncode == 2
        assert "another filesystem" in error_line(proc)
        assert f"--data-dir {debian.pgdata.parent}/pitr" in error_line(proc)
    finally:
        other_fs.rmdir()

    crashed = debian.scratch / "copy"  # a copy of the running live cluster: "in production"
    shutil.copytree(debian.pgdata, crashed, symlinks=True)
    (crashed / "postmaster.pid").unlink()
    proc = cli(debian.store, "restore", "switch", "--data-dir", str(crashed), "--cluster",
               debian.spec)  # fmt: skip
    assert proc.returncode == 2
    assert "not a recovered, promoted, cleanly shut down cluster" in error_line(proc)
    assert "in production" in error_line(proc)
    shutil.rmtree(crashed)
    notpg = debian.scratch / "empty"
    notpg.mkdir()
    proc = cli(debian.store, "restore", "switch", "--data-dir", str(notpg), "--cluster",
               debian.spec)  # fmt: skip
    assert proc.returncode == 2 and "not a PostgreSQL data directory" in error_line(proc)

    port = free_port()  # the recovered directory running: refused
    pg_ctl = "/usr/lib/postgresql/15/bin/pg_ctl"
    subprocess.run(
        ["runuser", "-u", "postgres", "--", pg_ctl, "start", "-w", "-D", str(debian.pitr), "-l",
         str(debian.scratch / "run.log"), "-o", f"-p {port} -c listen_addresses='' "
         f"-c unix_socket_directories={debian.scratch} -c archive_mode=off"],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        proc = run_switch(debian)
        assert proc.returncode == 2
        assert "is running" in error_line(proc) and "pg_ctl stop" in error_line(proc)
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", pg_ctl, "stop", "-w", "-D",
                        str(debian.pitr)], check=True, capture_output=True)  # fmt: skip

    dry = run_switch(debian, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["dry_run"] is True and plan["timeline"] == 2
    assert all(step.startswith("[todo]") for step in plan["steps"])
    assert "LOST FROM SERVICE" in plan["warning"] and plan["kept_directory"] in plan["warning"]
    assert plan["recovery_target"]
    assert debian.pitr.is_dir() and not debian.asides() and not debian.state_file().exists()
    assert switch.running_pid(debian.pgdata) is not None  # dry run: the live one still runs

    # the switch
    done = run_switch(debian, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert "LOST FROM SERVICE" in done.stderr  # the plan, before anything happened
    for step in switch.STEPS:
        assert f"event=switch.{step}" in done.stderr
    assert result["switched"] is True and result["timeline"] == 2
    assert result["live_timeline"] == 1  # what the way back recovers
    [aside] = debian.asides()
    assert result["kept_directory"] == str(aside) and (aside / "PG_VERSION").is_file()
    assert result["remove_kept"] == f"rm -rf {aside}"
    assert str(aside) in result["way_back"]
    assert not debian.pitr.exists() and not debian.state_file().exists()
    assert Path(result["record"]).is_file()

    with psycopg.connect(debian.tcp(), autocommit=True) as conn:
        batches = dict(conn.execute("SELECT batch, count(*) FROM events GROUP BY 1").fetchall())
        in_recovery, timeline = conn.execute(
            "SELECT pg_is_in_recovery(), (SELECT timeline_id FROM pg_control_checkpoint())"
        ).fetchone()
        archive_mode = conn.execute("SHOW archive_mode").fetchone()[0]
        history = conn.execute(
            "SELECT kind, status, timeline FROM backup_history WHERE kind IN ('switch', 'base') "
            "ORDER BY id"
        ).fetchall()
    assert batches == {"A": 100}  # B came after the target: only in the kept directory
    assert (in_recovery, timeline, archive_mode) == (False, 2, "on")
    assert ("switch", "completed", 2) in history
    assert ("base", "completed", 2) in history  # the new chain's base backup

    assert debian.pgdata.owner() == "postgres"
    assert debian.pgdata.stat().st_mode & 0o777 == 0o700
    auto = (debian.pgdata / "postgresql.auto.conf").read_text()
    assert "dbtier recovery" not in auto and "restore_command" not in auto
    assert "recovery_target" not in auto
    for name in ("recovery.signal", "standby.signal", "postgresql.conf", "pg_hba.conf",
                 "pg_ident.conf"):  # fmt: skip
        assert not (debian.pgdata / name).exists(), name
    assert (debian.store["repo"] / "wal" / "00000002.history.zst.enc").is_file()
    history_object = debian.store["repo"] / "wal" / "00000002.history.zst.enc"
    assert history_object.owner() == "postgres"  # pushed as postgres

    listed = json.loads(cli(debian.store, "backup", "list", "--json").stdout)["backups"]
    bases = [b for b in listed if b["kind"] == "base"]
    assert len(bases) == 2 and result["base_backup_id"] == bases[-1]["id"]
    prom = (debian.store["metrics"] / "dbtier_switch.prom").read_text()
    assert 'dbtier_job_last_status{job="switch"} 1' in prom

    # archiving works on the new timeline
    segment = switch_wal(debian.tcp())
    assert segment.startswith("00000002")
    wait_archived(debian.tcp(), segment)
    assert (debian.store["repo"] / "wal" / f"{segment}.zst.enc").is_file()

    # the kept directory still holds batch B; the same command again says it is done
    again = run_switch(debian)
    assert again.returncode == 2 and "switched into" in error_line(again)
    assert target is not None

    # The way back (docs/BACKUP-RESTORE.md): the switch archived timeline 1 up to its stop, so
    # recovering timeline 1 to its end brings batch B back; what timeline 2 wrote (C) stays in
    # its own set-aside directory. Timeline 2's base backup leads nowhere on timeline 1.
    with psycopg.connect(debian.tcp(), autocommit=True) as conn:
        conn.execute("INSERT INTO events SELECT g, 'C' FROM generate_series(151, 160) g")
    back = cli(debian.store, "restore", "pitr", "--target", "latest", "--target-timeline", "1",
               "--data-dir", str(debian.pitr), "--cluster", debian.spec, "--switch", "--json",
               dsn=debian.socket_dsn())  # fmt: skip
    assert back.returncode == 0, back.stderr
    way_back = json.loads(back.stdout)
    assert way_back["base_backup"] == bases[0]["id"]  # timeline 1's, not the newer one
    assert way_back["switch_timeline"] == 3
    with psycopg.connect(debian.tcp(), autocommit=True) as conn:
        batches = dict(conn.execute("SELECT batch, count(*) FROM events GROUP BY 1").fetchall())
    assert batches == {"A": 100, "B": 50}
    assert len(debian.asides()) == 2  # both earlier clusters kept


def test_a_failed_switch_resumes_where_it_stopped(debian: Debian) -> None:
    recovered(debian)
    # A stale, different 00000002.history in the repository (say of an abandoned recovery):
    # archiving the new timeline's history fails.
    planted = debian.store["repo"] / "wal" / "00000002.history.zst.enc"
    planted.write_bytes(b"not a dbtier object")
    first = run_switch(debian)
    assert first.returncode == 1
    line = error_line(first)
    assert line.startswith("dbtier: error: switch step archive failed: archiving 00000002.history")
    assert "rerun the same command to resume" in line
    [aside] = debian.asides()
    assert f"the old data directory is at {aside}" in line
    state = json.loads(debian.state_file().read_text())
    assert state["done"] == ["preflight", "stop", "move_aside", "move_in", "clear_recovery"]
    assert state["errors"][-1]["step"] == "archive"
    assert switch.running_pid(debian.pgdata) is None and not debian.pitr.exists()
    prom = (debian.store["metrics"] / "dbtier_switch.prom").read_text()
    assert 'dbtier_job_last_status{job="switch"} 0' in prom

    # fixed; now something else holds the cluster's port: the start fails
    planted.unlink()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", debian.port))
        busy.listen()
        second = run_switch(debian)
    assert second.returncode == 1
    line = error_line(second)
    assert "switch step start failed: start failed: could not create any TCP/IP sockets" in line
    assert f"the old data directory is at {aside}" in line
    assert "resuming the switch" in second.stderr
    assert "[done] 5. clear_recovery" in second.stderr and "[todo] 6. archive" in second.stderr
    for step in ("stop", "move_aside", "move_in", "clear_recovery"):
        assert f"event=switch.{step} skipped=" in second.stderr
    state = json.loads(debian.state_file().read_text())
    assert state["done"][-1] == "archive" and state["errors"][-1]["step"] == "start"
    assert planted.is_file()  # the real history file this time

    third = run_switch(debian, "--json")
    assert third.returncode == 0, third.stderr
    for step in ("stop", "move_aside", "move_in", "clear_recovery", "archive"):
        assert f"event=switch.{step} skipped=" in third.stderr
    assert debian.asides() == [aside]  # the same kept directory, nothing redone
    result = json.loads(third.stdout)
    assert result["kept_directory"] == str(aside) and result["base_backup_id"]
    with psycopg.connect(debian.tcp(), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 100
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False
        rows = conn.execute(
            "SELECT status FROM backup_history WHERE kind = 'switch' ORDER BY id"
        ).fetchall()
    assert rows[-1] == ("completed",)


def test_auto_conf_cleanup_removes_only_the_recovery_settings() -> None:
    text = (
        "# Do not edit this file manually!\n"
        "archive_mode = 'on'\n"
        "work_mem = '8MB'\n"
        "\n# dbtier recovery\n"
        "restore_command = 'dbtier wal-fetch %f %p'\n"
        "recovery_target_time = '2026-01-01 00:00:00.000000+00'\n"
        "recovery_target_timeline = 'latest'\n"
        "recovery_target_action = 'promote'\n"
    )
    cleaned, removed = switch.clean_auto_conf(text)
    assert cleaned == "# Do not edit this file manually!\narchive_mode = 'on'\nwork_mem = '8MB'\n"
    assert len(removed) == 5
    # rewritten by ALTER SYSTEM (no marker): a recovery target never stays on a primary
    cleaned, removed = switch.clean_auto_conf("recovery_target_time = 'x'\nwork_mem = '8MB'\n")
    assert cleaned == "work_mem = '8MB'\n" and removed == ["recovery_target_time = 'x'"]


def test_placeholders_are_what_restore_writes(tmp_path: Path) -> None:
    restore._ensure_config_files(tmp_path)
    for name, text in switch.PLACEHOLDERS.items():
        assert (tmp_path / name).read_text() == text, name


def test_pitr_with_switch_is_refused_up_front(store: dict) -> None:
    """Before an hour of recovery: --keep-running contradicts --switch, and only root may."""
    pitr = ["restore", "pitr", "--target-time", "2026-01-01 00:00:00+00", "--switch"]
    datadir = ["--data-dir", f"{store['base']}/never"]
    kept = cli(store, *pitr, *datadir, "--keep-running")
    assert kept.returncode == 2 and "drop --keep-running" in error_line(kept)
    as_postgres = cli_as_server(store, *pitr, *datadir)
    assert as_postgres.returncode == 2
    assert "must run as root" in error_line(as_postgres)
    assert "sudo env DBTIER_CONFIG=" in error_line(as_postgres)
    assert "restore pitr --target-time '2026-01-01 00:00:00+00' --switch" in error_line(as_postgres)
    assert not Path(datadir[1]).exists()


def test_running_pid_errs_on_the_safe_side(tmp_path: Path) -> None:
    pidfile = tmp_path / "postmaster.pid"
    assert switch.running_pid(tmp_path) is None  # no postmaster.pid
    pidfile.write_text(f"{os.getpid()}\n{tmp_path}\n")
    assert switch.running_pid(tmp_path) is None  # alive, but not PostgreSQL (a reused pid)
    dead = subprocess.Popen(["true"])
    dead.wait()
    pidfile.write_text(f"{dead.pid}\n")
    assert switch.running_pid(tmp_path) is None
