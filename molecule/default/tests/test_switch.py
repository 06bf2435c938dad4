"""PITR and back into service on db1 (systemd): `dbtier-job restore pitr ... --switch` as root.

Runs after test_default.py and leaves the stack serving: the recovered cluster is the service.
"""

import json
import time

from test_default import APP_PASSWORD, APP_USER, BOUNCER, DB, OPS, psql

PITR_DIR = "/var/lib/postgresql/15/pitr-switch"


def _sql(sql):
    return DB.check_output("runuser -u postgres -- psql -X -At -d mockupaws -c %s", sql)


def _wait_archived(segment, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        last = _sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
        if last[:24] >= segment or time.monotonic() > deadline:
            return last
        time.sleep(1)


def test_pitr_with_switch_puts_the_recovered_cluster_into_service():
    base = DB.run("runuser -u postgres -- /usr/local/bin/dbtier-job backup base --quiet --json")
    assert base.rc == 0, base.stderr
    _sql("CREATE TABLE IF NOT EXISTS switch_probe (marker text PRIMARY KEY)")
    _sql("INSERT INTO switch_probe VALUES ('before')")
    time.sleep(1.5)
    target = _sql("SELECT now()")
    time.sleep(1.5)
    _sql("INSERT INTO switch_probe VALUES ('after')")
    segment = _sql("SELECT pg_walfile_name(pg_switch_wal())")
    last = _wait_archived(segment)
    assert last[:24] >= segment, f"{segment} not archived (last {last})"

    out = DB.run(
        "/usr/local/bin/dbtier-job restore pitr --target-time %s --data-dir %s --switch --json",
        target,
        PITR_DIR,
    )
    assert out.rc == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert "LOST FROM SERVICE" in out.stderr  # the plan, with its warning
    assert result["switch_switched"] is True

    assert DB.check_output("systemctl is-active postgresql@15-main") == "active"
    assert _sql("SELECT string_agg(marker, ',') FROM switch_probe") == "before"
    assert _sql("SELECT pg_is_in_recovery()") == "f"
    timeline = int(_sql("SELECT timeline_id FROM pg_control_checkpoint()"))
    assert timeline == result["switch_timeline"] >= 2
    kept = result["switch_kept_directory"]
    assert kept.startswith("/var/lib/postgresql/15/main.pre-switch-")
    assert DB.file(f"{kept}/PG_VERSION").is_file  # the old data, kept aside
    assert not DB.file(PITR_DIR).exists
    auto = DB.file("/var/lib/postgresql/15/main/postgresql.auto.conf").content_string
    assert "dbtier recovery" not in auto and "restore_command" not in auto
    assert not DB.file("/var/lib/postgresql/15/main/recovery.signal").exists
    assert not DB.file("/var/lib/postgresql/15/main/postgresql.conf").exists  # /etc applies
    history = DB.file(f"/var/backups/dbtier/wal/{timeline:08X}.history.zst.enc")
    assert history.is_file and history.user == "postgres" and history.group == "dbtier-backup"
    assert (
        _sql(  # the newest (the runbook's switches came before)
            "SELECT status FROM backup_history WHERE kind = 'switch' ORDER BY id DESC LIMIT 1"
        )
        == "completed"
    )

    listed = OPS.run("runuser -u dbtier -- /usr/local/bin/dbtier-job backup list --json")
    assert listed.rc == 0, listed.stderr
    ids = [b["id"] for b in json.loads(listed.stdout)["backups"] if b["kind"] == "base"]
    assert result["switch_base_backup_id"] in ids

    # the application path: PgBouncer reconnects to the switched-in server
    deadline = time.monotonic() + 30
    while True:
        app = psql(
            BOUNCER, "SELECT current_user, inet_server_port()", user=APP_USER,
            password=APP_PASSWORD, port=6432,
        )  # fmt: skip
        if app.rc == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert app.rc == 0, app.stderr
    assert app.stdout.strip() == f"{APP_USER}|5432"

    # archiving goes on, on the new timeline
    segment = _sql("SELECT pg_walfile_name(pg_switch_wal())")
    assert int(segment[:8], 16) == timeline
    last = _wait_archived(segment)
    assert last[:24] >= segment, f"{segment} not archived after the switch (last {last})"
    assert DB.file(f"/var/backups/dbtier/wal/{segment}.zst.enc").is_file
