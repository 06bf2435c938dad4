"""roles/monitoring on the Molecule stack: the exporters, Prometheus and Alertmanager run, every
target generated from the inventory is up, the alert rules are loaded, and a real alert fires
and clears on real metrics (the WAL archive made unwritable on db1, then repaired).

The `run` blocks of docs/MONITORING.md are run here by id (markers: tests/support/runbook.py).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import testinfra
import yaml

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from tests.support.runbook import shell_blocks  # noqa: E402

DB = testinfra.get_host("podman://dbtier-mol-db1")
BOUNCER = testinfra.get_host("podman://dbtier-mol-pgbouncer1")
OPS = testinfra.get_host("podman://dbtier-mol-ops1")
# Molecule's inventory names the hosts after the platforms: those are the instance labels.
HOSTS = {"db1": DB, "pgbouncer1": BOUNCER, "ops1": OPS}
NAMES = {host: f"dbtier-mol-{host}" for host in HOSTS}
PROMETHEUS, ALERTMANAGER = "http://127.0.0.1:9090", "http://127.0.0.1:9093"
RULES_FILE = "/etc/prometheus/rules/dbtier-alerts.rules.yml"
WAL_DIR = "/var/backups/dbtier/wal"  # wal/<segment>.zst.enc in the file:// repository
BLOCKS = {b.id: b for b in shell_blocks(ROOT / "docs" / "MONITORING.md") if b.marker == "run"}
RAN: set[str] = set()


def get_json(url: str) -> Any:
    return json.loads(OPS.check_output("curl -sf --max-time 5 %s", url))


def query(expr: str) -> list[dict]:
    out = OPS.check_output(
        "curl -sf --max-time 5 %s --data-urlencode %s",
        f"{PROMETHEUS}/api/v1/query",
        f"query={expr}",
    )
    return json.loads(out)["data"]["result"]


def values(expr: str) -> str:
    """The series of a query as `labels=value` lines, for failure messages."""
    return "; ".join(f"{r['metric']}={r['value'][1]}" for r in query(expr)) or "(no series)"


def wait_for(what: str, check: Callable[[], bool], seen: Callable[[], str], timeout: float = 120):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s; seen: {seen()}", pytrace=False)
        time.sleep(2)


def run_block(block_id: str) -> str:
    block = BLOCKS[block_id]
    RAN.add(block_id)
    return block.run_on(HOSTS[block.host]).stdout


def sql(statement: str) -> str:
    return DB.check_output("runuser -u postgres -- psql -X -At -d mockupaws -c %s", statement)


def prometheus_alerts(name: str) -> list[dict]:
    alerts = get_json(f"{PROMETHEUS}/api/v1/alerts")["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == name]


def alertmanager_alerts(name: str) -> list[dict]:
    # /api/v2/alerts lists the active ones (a resolved alert is left out)
    alerts = get_json(f"{ALERTMANAGER}/api/v2/alerts")
    return [a for a in alerts if a["labels"]["alertname"] == name]


@pytest.mark.parametrize(
    "host,services",
    [
        ("db1", ["prometheus-node-exporter", "prometheus-postgres-exporter"]),
        ("pgbouncer1", ["prometheus-node-exporter"]),
        ("ops1", ["prometheus-node-exporter", "prometheus", "prometheus-alertmanager"]),
    ],
)
def test_services_active(host, services):
    for name in services:
        service = HOSTS[host].service(name)
        assert service.is_running and service.is_enabled, f"{host}: {name} is not active"
    # only where placed: self-managed, the postgres exporter runs next to the server
    if host != "db1":
        assert not HOSTS[host].package("prometheus-postgres-exporter").is_installed


def test_postgres_exporter_password_only_in_its_environment_file():
    env = DB.file("/etc/default/prometheus-postgres-exporter")
    assert (env.user, env.group, env.mode) == ("prometheus", "prometheus", 0o640)
    assert DB.group("prometheus").exists and DB.check_output("getent group prometheus").endswith(
        ":"
    )
    assert "DATA_SOURCE_PASS=" in env.content_string
    cmdline = DB.check_output(
        "cat /proc/$(pgrep -f prometheus-postgres-exporter)/cmdline | tr '\\0' ' '"
    )
    assert "insecure-local-monitor-password" not in cmdline and "DATA_SOURCE" not in cmdline


def test_monitor_login_is_pg_monitor_and_connect_only():
    row = sql(
        "SELECT r.rolsuper, pg_has_role('dbtier_monitor', 'pg_monitor', 'MEMBER'), "
        "has_database_privilege('dbtier_monitor', 'mockupaws', 'CONNECT'), "
        "has_table_privilege('dbtier_monitor', 'public.scenarios', 'SELECT'), "
        "pg_has_role('mockupaws_owner', 'pg_read_all_stats', 'MEMBER') "
        "FROM pg_roles r WHERE r.rolname = 'dbtier_monitor'"
    )
    assert row == "f|t|t|f|t", row


def test_every_target_is_up():
    expected = {
        ("node", NAMES["db1"]),
        ("node", NAMES["pgbouncer1"]),
        ("node", NAMES["ops1"]),
        ("postgres", NAMES["db1"]),
        ("pgbouncer", NAMES["pgbouncer1"]),
        ("prometheus", NAMES["ops1"]),
        ("alertmanager", NAMES["ops1"]),
    }

    def targets() -> dict[tuple[str, str], dict]:
        active = get_json(f"{PROMETHEUS}/api/v1/targets?state=active")["data"]["activeTargets"]
        return {(t["labels"]["job"], t["labels"]["instance"]): t for t in active}

    def all_up() -> bool:
        seen = targets()
        return set(seen) == expected and all(t["health"] == "up" for t in seen.values())

    wait_for(
        "every target up",
        all_up,
        lambda: str({k: (t["health"], t["lastError"]) for k, t in targets().items()}),
        timeout=60,
    )
    # the textfile metrics keep their own job label (honor_labels), the instance is the host
    assert query(f'dbtier_job_last_run_timestamp_seconds{{instance="{NAMES["db1"]}"}}')
    assert query("pgbouncer_up == 1"), values("pgbouncer_up")


def test_every_alert_rule_is_loaded():
    rendered = yaml.safe_load(OPS.file(RULES_FILE).content_string)
    names = {r["alert"] for g in rendered["groups"] for r in g["rules"] if "alert" in r}
    assert {"WALArchiveFailing", "BackupStale"} <= names
    loaded = {
        r["name"]
        for g in get_json(f"{PROMETHEUS}/api/v1/rules")["data"]["groups"]
        for r in g["rules"]
        if r["type"] == "alerting"
    }
    assert names <= loaded, f"rules not loaded: {names - loaded}"
    # every alert links its runbook section
    for g in rendered["groups"]:
        for r in g["rules"]:
            assert r["annotations"]["runbook_url"].endswith("#" + r["alert"].lower())


def test_backup_stale_does_not_fire_after_a_backup():
    """After a fresh logical backup (test_default ran the scheduled ones; else take one here) the
    textfile metric is recent and BackupStale stays quiet."""
    if not DB.file("/var/lib/prometheus/node-exporter/dbtier_backup_full.prom").exists:
        DB.check_output(
            "runuser -u postgres -- /usr/local/bin/dbtier-job backup full --quiet --primary-only"
        )
    age = 'time() - dbtier_job_last_success_timestamp_seconds{job="backup_full"}'
    wait_for(
        "backup_full's success metric in Prometheus", lambda: bool(query(age)), lambda: values(age)
    )
    assert float(query(age)[0]["value"][1]) < 25 * 3600, values(age)
    time.sleep(12)  # two evaluation intervals with the metric present
    assert not prometheus_alerts("BackupStale"), prometheus_alerts("BackupStale")


def test_the_documented_queries_work():
    targets = run_block("targets").splitlines()
    assert f"node {NAMES['db1']} up " in targets, targets
    assert "dbtier_archiver_failing" in run_block("archiver")
    run_block("alerts")
    run_block("alertmanager")


def test_wal_archive_failing_fires_and_clears():
    """The archive destination unwritable on db1: the archiver fails on the next segment,
    WALArchiveFailing fires in Prometheus and reaches Alertmanager; repaired, both clear."""
    archiver = "{__name__=~'dbtier_archiver_.*'}"
    mode = DB.check_output("stat -c %%a %s", WAL_DIR)

    def switch_wal() -> str:
        return sql(
            "SELECT pg_logical_emit_message(false, 'dbtier', 'probe'); "
            "SELECT pg_walfile_name(pg_switch_wal())"
        )

    def firing() -> bool:
        return any(a["state"] == "firing" for a in prometheus_alerts("WALArchiveFailing"))

    def seen() -> str:
        return (
            f"metrics {values(archiver)}; prometheus {prometheus_alerts('WALArchiveFailing')}; "
            f"alertmanager {alertmanager_alerts('WALArchiveFailing')}"
        )

    DB.check_output("chmod 0550 %s", WAL_DIR)
    try:
        switch_wal()
        wait_for(
            "dbtier_archiver_failing 1",
            lambda: values("dbtier_archiver_failing == 1") != "(no series)",
            seen,
        )
        switch_wal()
        wait_for(
            "WALArchiveFailing firing in Prometheus and in Alertmanager",
            lambda: firing() and bool(alertmanager_alerts("WALArchiveFailing")),
            seen,
        )
        (alert,) = alertmanager_alerts("WALArchiveFailing")
        assert (
            alert["labels"]["instance"] == NAMES["db1"]
            and alert["labels"]["severity"] == "critical"
        )
        assert float(query("dbtier_archiver_pending_segments")[0]["value"][1]) >= 1, seen()
    finally:
        DB.check_output("chmod %s %s", mode, WAL_DIR)
    segment = switch_wal()
    wait_for(
        f"{segment} archived after the repair",
        lambda: sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")[:24] >= segment,
        lambda: sql("SELECT * FROM pg_stat_archiver"),
    )
    wait_for(
        "WALArchiveFailing resolved in Prometheus and in Alertmanager",
        lambda: (
            not prometheus_alerts("WALArchiveFailing")
            and not alertmanager_alerts("WALArchiveFailing")
        ),
        seen,
    )
    # the backlog drains (the archiver works through the segments that waited)
    wait_for(
        "dbtier_archiver_pending_segments back to 0",
        lambda: values("dbtier_archiver_pending_segments").endswith("=0"),
        seen,
    )


def test_every_run_block_of_the_monitoring_doc_was_run():
    assert set(BLOCKS) - RAN == set(), "run blocks no test ran"
