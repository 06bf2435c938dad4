"""The pg_migrate module and roles/migrations, run by ansible-playbook against the test cluster."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from dbtier import migrations

from .conftest import ROOT, SQL_DIR, VENV_BIN

pytestmark = pytest.mark.ansible


def playbook(tmp_path: Path, dsn: str, extra: dict | None = None) -> Path:
    params = conninfo_to_dict(dsn)
    role_vars = {
        "migrations_db_host": params["host"],
        "migrations_db_port": int(params["port"]),
        "migrations_db_name": params["dbname"],
        "migrations_db_user": params["user"],
        "migrations_db_password": "",
        "migrations_copy": False,
        "migrations_dir": str(SQL_DIR),
        "migrations_python": sys.executable,
        **(extra or {}),
    }
    book = tmp_path / "migrate.yml"
    book.write_text(
        json.dumps(
            [
                {
                    "name": "Migrate the test database",
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "roles": [{"role": "migrations", "vars": role_vars}],
                }
            ]
        )
    )
    return book


def ansible_playbook(book: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        "ANSIBLE_NOCOLOR": "1",
    }
    return subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", str(book), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
        check=False,
    )


def recap(output: str) -> dict[str, int]:
    match = re.search(r"localhost\s+:\s+(.*)", output)
    assert match, output
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


def applied(dsn: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        if conn.execute("SELECT to_regclass('dbtier.schema_migrations')").fetchone()[0] is None:
            return []
        return [
            r[0] for r in conn.execute("SELECT version FROM dbtier.schema_migrations ORDER BY 1")
        ]


def test_role_check_mode_then_apply_then_idempotent(database: str, tmp_path: Path) -> None:
    book = playbook(tmp_path, database)
    files = sorted(SQL_DIR.glob("*.up.sql"))
    assert files, "files/sql holds no migrations"

    check = ansible_playbook(book, "--check", "--diff")
    assert check.returncode == 0, check.stdout + check.stderr
    assert recap(check.stdout)["changed"] == 1
    assert files[-1].name in check.stdout  # the diff lists what would run
    assert applied(database) == []  # check mode changed nothing

    first = ansible_playbook(book)
    assert first.returncode == 0, first.stdout + first.stderr
    assert recap(first.stdout)["changed"] == 1
    assert len(applied(database)) == len(files)

    second = ansible_playbook(book)
    assert second.returncode == 0, second.stdout + second.stderr
    assert recap(second.stdout)["changed"] == 0


def test_role_down_to_zero_and_bad_target(database: str, tmp_path: Path) -> None:
    assert ansible_playbook(playbook(tmp_path, database)).returncode == 0
    down = ansible_playbook(
        playbook(tmp_path, database, {"migrations_state": "down", "migrations_target": 0})
    )
    assert down.returncode == 0, down.stdout + down.stderr
    assert applied(database) == []

    bad = ansible_playbook(playbook(tmp_path, database, {"migrations_target": 999}))
    assert bad.returncode != 0
    assert "unknown migration version 999" in bad.stdout


def test_role_rejects_down_without_target(database: str, tmp_path: Path) -> None:
    proc = ansible_playbook(playbook(tmp_path, database, {"migrations_state": "down"}))
    assert proc.returncode != 0
    assert "migrations_target is required when migrations_state is down" in proc.stdout


def test_module_applies_a_late_file_only_with_out_of_order(database: str, tmp_path: Path) -> None:
    sql = tmp_path / "sql"
    sql.mkdir()
    for version, table in ((1, "a"), (3, "c")):
        (sql / f"000{version}_{table}.up.sql").write_text(f"CREATE TABLE {table} (x int);")
        (sql / f"000{version}_{table}.down.sql").write_text(f"DROP TABLE {table};")
    migrations.migrate(database, sql)
    (sql / "0002_b.up.sql").write_text("CREATE TABLE b (x int);")
    (sql / "0002_b.down.sql").write_text("DROP TABLE b;")

    refused = ansible_playbook(playbook(tmp_path, database, {"migrations_dir": str(sql)}))
    assert refused.returncode != 0
    assert "0002_b.up.sql is below the applied version 3" in refused.stdout
    assert '"exit_code": 2' in refused.stdout
    assert applied(database) == [1, 3]

    late = ansible_playbook(
        playbook(tmp_path, database, {"migrations_dir": str(sql), "migrations_out_of_order": True})
    )
    assert late.returncode == 0, late.stdout + late.stderr
    assert recap(late.stdout)["changed"] == 1
    assert applied(database) == [1, 2, 3]
