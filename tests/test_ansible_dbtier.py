"""roles/dbtier as Ansible renders it (issue 9): which host schedules which job, with which
command line; the DR repository, retention and client major from the inventory in dbtier.toml;
and a scheduled backup, run through the rendered wrapper, in the primary and the DR repository."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from dbtier import catalog, config, keys, migrations
from dbtier.repository import FileRepository

from .conftest import ROOT, SQL_DIR, VENV_BIN

pytestmark = pytest.mark.ansible


HOST = "{{ inventory_hostname }}"


def run_role_config(tmp_path: Path, inventory: dict, extra: dict | None = None) -> dict[str, dict]:
    """Include roles/dbtier's `config` tasks on every inventory host (all local), rendering into
    tmp_path/<host>; returns each host's view of the scheduling variables."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    inv = tmp_path / "inventory.yml"
    inv.write_text(yaml.safe_dump(inventory))
    book = tmp_path / "play.yml"
    book.write_text(
        json.dumps(
            [
                {
                    "hosts": "all",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": "config",
                            "ansible.builtin.include_role": {
                                "name": "dbtier",
                                "tasks_from": "config",
                                "public": True,
                            },
                            "vars": {
                                "dbtier_config_dir": f"{tmp_path}/{HOST}",
                                "dbtier_job_wrapper": f"{tmp_path}/{HOST}/job",
                                "dbtier_service_user": "root",
                                **(extra or {}),
                            },
                        },
                        {
                            "name": "show",
                            "ansible.builtin.debug": {
                                "msg": {
                                    "jobs": "{{ dbtier_cron_jobs }}",
                                    "commands": "{{ dbtier_cron_commands }}",
                                    "packages": "{{ dbtier_packages }}",
                                }
                            },
                        },
                    ],
                }
            ]
        )
    )
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
        "ANSIBLE_NOCOLOR": "1",
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
    }
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", str(inv), str(book)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr
    tasks = json.loads(proc.stdout)["plays"][0]["tasks"]
    return {host: result["msg"] for host, result in tasks[-1]["hosts"].items()}


def inventory(groups: dict[str, list[str]], **variables) -> dict:
    return {
        "all": {
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                **variables,
            },
            "children": {g: {"hosts": {h: {} for h in hosts}} for g, hosts in groups.items()},
        }
    }


SELF_MANAGED = {"postgresql": ["db1", "db2"], "pgbouncer": ["pgb1"], "ops": ["ops1", "ops2"]}
RDS = {"postgresql": [], "pgbouncer": ["pgb1"], "ops": ["ops1"]}


def test_jobs_run_once_on_the_right_hosts(tmp_path):
    """Backups on the PostgreSQL hosts, guarded at run time to the primary (a standby skips);
    the newest backup of each kind verified, retention and refresh-views: once, on one ops host."""
    views = run_role_config(tmp_path, inventory(SELF_MANAGED, dbtier_self_managed=True))
    for db in ("db1", "db2"):
        assert views[db]["jobs"] == ["backup_base", "backup_full"]
    assert views["ops1"]["jobs"] == [
        "verify_logical",
        "verify_base",
        "cleanup",
        "refresh_views",
        "archive",
        "slow_queries",
    ]
    assert views["ops2"]["jobs"] == []
    commands = views["db1"]["commands"]
    assert commands["backup_base"] == "backup base --quiet --primary-only"
    assert commands["backup_full"] == "backup full --quiet --primary-only"
    assert commands["verify_logical"] == "backup verify latest --kind logical --quiet"
    assert commands["verify_base"] == "backup verify latest --kind base --quiet"
    assert commands["refresh_views"] == "refresh-views --quiet"
    assert commands["archive"] == "archive --all --primary-only --quiet"
    assert commands["slow_queries"] == "slow-queries collect --quiet"

    pinned = run_role_config(
        tmp_path,
        inventory(SELF_MANAGED, dbtier_self_managed=True, dbtier_postgresql_primary="db2"),
    )
    assert (pinned["db1"]["jobs"], pinned["db2"]["jobs"]) == ([], ["backup_base", "backup_full"])

    rds = run_role_config(
        tmp_path,
        inventory(RDS, dbtier_self_managed=False, dbtier_secondary_check_replication=True),
    )
    # RDS: logical backups from ops; no base backups to verify (RDS snapshots and PITR itself)
    assert rds["ops1"]["jobs"] == [
        "backup_full",
        "verify_logical",
        "cleanup",
        "refresh_views",
        "archive",
        "slow_queries",
    ]
    assert rds["ops1"]["commands"]["backup_full"] == (
        "backup full --quiet --primary-only --check-replication"
    )


def test_client_major_follows_the_inventory(tmp_path):
    views = run_role_config(
        tmp_path, inventory(RDS, dbtier_self_managed=False, dbtier_postgresql_major=16)
    )
    assert "postgresql-client-16" in views["ops1"]["packages"]
    assert not [p for p in views["ops1"]["packages"] if p.endswith("-15")]
    settings = config.load(str(tmp_path / "ops1" / "dbtier.toml"))
    assert settings.pg_bindir == "/usr/lib/postgresql/16/bin"
    default = run_role_config(tmp_path / "d", inventory(RDS, dbtier_self_managed=False))
    assert "postgresql-client-15" in default["ops1"]["packages"]


def test_scheduled_backup_copies_to_the_dr_repository(tmp_path, database):
    """dbtier_secondary_repository/region and dbtier_retention_days (Terraform's inventory
    variables) reach dbtier.toml, and the scheduled command, run through the rendered wrapper,
    writes the backup to the primary and the DR repository."""
    migrations.migrate(database, SQL_DIR)
    params = conninfo_to_dict(database)
    primary, dr = tmp_path / "repo", tmp_path / "dr"
    primary.mkdir()
    dr.mkdir()
    views = run_role_config(
        tmp_path,
        inventory(
            {"postgresql": ["db1"], "ops": ["ops1"]},
            dbtier_self_managed=True,
            dbtier_repository=f"file://{primary}",
            dbtier_secondary_repository=f"file://{dr}",
            dbtier_secondary_region="eu-central-1",
            dbtier_retention_days=9,
            dbtier_master_key=base64.b64encode(os.urandom(32)).decode(),
            dbtier_metrics_dir=str(tmp_path / "metrics"),
            dbtier_venv=str(VENV_BIN.parent),
            dbtier_job_db_host=params["host"],
            dbtier_job_db_port=int(params["port"]),
            dbtier_job_db_user=params["user"],
            dbtier_job_db_name=params["dbname"],
            dbtier_job_db_password="",
        ),
    )
    rendered = tomllib.loads((tmp_path / "db1" / "dbtier.toml").read_text())
    assert rendered["secondary"] == f"file://{dr}"
    assert rendered["secondary_region"] == "eu-central-1"
    assert rendered["retention_days"] == 9
    assert rendered["pg_bindir"] == "/usr/lib/postgresql/15/bin"
    config.load(str(tmp_path / "db1" / "dbtier.toml"))  # every name is one dbtier knows

    command = views["db1"]["commands"]["backup_full"]
    proc = subprocess.run(
        [str(tmp_path / "db1" / "job"), *command.split(), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["dr"]["mode"] == "copied"
    provider = keys.load_key_provider(f"file:{tmp_path}/db1/master.key")
    for repo in (primary, dr):
        found = catalog.list_backups(FileRepository(repo), provider)
        assert [m.id for m in found] == [result["backup_id"]], repo


def test_every_host_lists_the_whole_tiers_schedule_for_status(tmp_path):
    """dbtier.toml carries the schedule of every host in the play (from hostvars) and the status
    settings; it stays valid TOML that dbtier accepts, self-managed and on RDS."""
    run_role_config(tmp_path, inventory(SELF_MANAGED, dbtier_self_managed=True))
    for host in ("db1", "ops2", "pgb1"):
        path = tmp_path / host / "dbtier.toml"
        rendered = tomllib.loads(path.read_text())
        assert rendered["schedule"] == {
            "backup_base": "30 1 * * * on db1, db2 (root)",
            "backup_full": "0 2 * * * on db1, db2 (root)",
            "verify_logical": "0 5 * * * on ops1 (root)",
            "verify_base": "15 5 * * * on ops1 (root)",
            "cleanup": "30 5 * * * on ops1 (root)",
            "refresh_views": "20 * * * * on ops1 (root)",
            "archive": "0 3 * * * on ops1 (root)",
            "slow_queries": "*/5 * * * * on ops1 (root)",
        }, host
        settings = config.load(str(path))
        assert settings.schedule == rendered["schedule"]
        assert settings.wal_archiving is True
        assert (settings.status_max_age_logical_hours, settings.status_max_wal_age_seconds) == (
            25.0,
            0,
        )
        assert (
            settings.slow_query_threshold_ms,
            settings.slow_query_retention_days,
            settings.slow_query_top,
        ) == (200.0, 30, 10)

    rds = tmp_path / "rds"
    run_role_config(
        rds,
        inventory(
            RDS,
            dbtier_self_managed=False,
            dbtier_status_max_age_logical_hours=49,
            dbtier_slow_queries_threshold_ms=500,
            dbtier_slow_queries_top=3,
        ),
        extra={
            "dbtier_cron_schedule": {
                "backup_base": {"minute": "30", "hour": "1"},
                "backup_full": {"minute": "5", "hour": "*/6"},
                "verify_logical": {"minute": "0", "hour": "5"},
                "verify_base": {"minute": "15", "hour": "5"},
                "cleanup": {"minute": "30", "hour": "5"},
                "refresh_views": {"minute": "20", "hour": "*"},
                "archive": {"minute": "0", "hour": "3"},
                "slow_queries": {"minute": "*/10", "hour": "*"},
            }
        },
    )
    settings = config.load(str(rds / "ops1" / "dbtier.toml"))
    assert settings.wal_archiving is False
    assert (settings.slow_query_threshold_ms, settings.slow_query_top) == (500.0, 3)
    assert settings.schedule["slow_queries"] == "*/10 * * * * on ops1 (root)"
    assert settings.status_max_age_logical_hours == 49.0
    assert settings.schedule["backup_full"] == "5 */6 * * * on ops1 (root)"
    assert "backup_base" not in settings.schedule and "verify_base" not in settings.schedule

    quiet = tmp_path / "nocron"
    run_role_config(quiet, inventory(RDS, dbtier_self_managed=False, dbtier_cron_enabled=False))
    assert "[schedule]" not in (quiet / "ops1" / "dbtier.toml").read_text()
    assert config.load(str(quiet / "ops1" / "dbtier.toml")).schedule == {}
