"""dbtier migrate against a real PostgreSQL, with small migration sets written by each test."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from dbtier import migrations
from dbtier.errors import DbtierError, DriftError, UsageError

from .conftest import VENV_BIN


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


BASIC = {
    "0001_items.up.sql": "CREATE TABLE items (id bigint PRIMARY KEY, label text NOT NULL);",
    "0001_items.down.sql": "DROP TABLE items;",
    "0002_items_index.up.sql": (
        "-- builds online\n-- dbtier:no-transaction\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_items_label ON items (label);\n"
    ),
    "0002_items_index.down.sql": (
        "-- dbtier:no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS idx_items_label;\n"
    ),
    "0003_colors.up.sql": (
        "CREATE TABLE colors (name text PRIMARY KEY);\nINSERT INTO colors VALUES ('red'), ('blue');"
    ),
    "0003_colors.down.sql": "DROP TABLE colors;",
}


def ledger(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        if conn.execute("SELECT to_regclass('dbtier.schema_migrations')").fetchone()[0] is None:
            return []
        return conn.execute(
            "SELECT version, name, checksum, success, transactional, applied_at "
            "FROM dbtier.schema_migrations ORDER BY version"
        ).fetchall()


def tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE nspname = 'public' AND relkind IN ('r', 'i', 'p', 'm', 'v')"
        ).fetchall()
    return {r[0] for r in rows}


# ----------------------------------------------------------------------------- pure logic


def test_marker_must_be_in_leading_comments() -> None:
    assert not migrations.is_transactional("-- note\n--   dbtier:no-transaction\nVACUUM;")
    assert migrations.is_transactional("SELECT 1;\n-- dbtier:no-transaction\n")
    assert migrations.is_transactional("CREATE TABLE t (x int);")


def test_split_statements_keeps_dollar_quotes_and_drops_comment_only_chunks() -> None:
    text = (
        "-- dbtier:no-transaction\nCREATE INDEX CONCURRENTLY a ON t (x);\n"
        "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $fn$ BEGIN RETURN 1; END; $fn$;\n"
        "-- trailing comment only\n"
    )
    statements = migrations.split_statements(text)
    assert len(statements) == 2
    assert "RETURN 1; END; $fn$" in statements[1]


def test_index_names_found_with_and_without_options() -> None:
    text = (
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS idx_a ON t (x);\n"
        "create index idx_b on t (y);\n-- CREATE INDEX idx_commented ON t (z);\n"
    )
    assert migrations.index_names(text) == ["idx_a", "idx_b"]


def test_index_refs_follow_postgresql_identifier_rules() -> None:
    text = (
        "CREATE INDEX CONCURRENTLY IDX_Foo ON Items (x);\n"
        'CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "IDX_Bar" ON "App" . "Orders" (y);\n'
        'create index "say ""hi""."ON App.Items_2 USING btree (z);\n'
        "CREATE INDEX ON only_unnamed (x);\n"
        "CREATE INDEX CONCURRENTLY ON ONLY parted (x);\n"
    )
    assert migrations.index_refs(text) == [
        migrations.IndexRef(name="idx_foo", schema=None, table="items"),
        migrations.IndexRef(name="IDX_Bar", schema="App", table="Orders"),
        migrations.IndexRef(name='say "hi".', schema="app", table="items_2"),
    ]
    # PostgreSQL truncates identifiers to 63 bytes
    assert migrations.fold_identifier("A" * 70) == "a" * 63


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"0001_a.up.sql": "SELECT 1;"}, "has no down file (expected 0001_a.down.sql)"),
        ({"0001_a.down.sql": "SELECT 1;"}, "has no matching up file"),
        (
            {"1_a.up.sql": "", "1_a.down.sql": "", "01_b.up.sql": "", "01_b.down.sql": ""},
            "duplicate migration version 1",
        ),
        ({"add_table.sql": "SELECT 1;"}, "unexpected file name add_table.sql"),
        ({"0000_a.up.sql": "", "0000_a.down.sql": ""}, "versions start at 1"),
    ],
)
def test_malformed_directories_are_refused(tmp_path: Path, files: dict, message: str) -> None:
    write(tmp_path, files)
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        migrations.load_migrations(tmp_path)


# ----------------------------------------------------------------------------- real server


def test_up_is_idempotent_and_down_up_round_trips(database: str, tmp_path: Path) -> None:
    path = write(tmp_path / "sql", BASIC)
    first = migrations.migrate(database, path)
    assert [s["version"] for s in first.steps] == [1, 2, 3]
    assert (first.before_version, first.after_version) == (0, 3)
    rows = ledger(database)
    assert [(r[0], r[1], r[3], r[4]) for r in rows] == [
        (1, "items", True, True),
        (2, "items_index", True, False),
        (3, "colors", True, True),
    ]
    assert rows[0][2] == migrations.sha256_file(path / "0001_items.up.sql")

    second = migrations.migrate(database, path)
    assert second.steps == [] and not second.changed
    assert ledger(database) == rows  # nothing re-applied, timestamps untouched

    down = migrations.migrate(database, path, "down", 1)
    assert [s["version"] for s in down.steps] == [3, 2]
    assert tables(database) == {"items", "items_pkey"}
    migrations.migrate(database, path, "down", 0)
    assert tables(database) == set() and ledger(database) == []
    again = migrations.migrate(database, path)
    assert again.after_version == 3
    assert {"items", "idx_items_label", "colors"} <= tables(database)

    with psycopg.connect(database) as conn:
        history = conn.execute(
            "SELECT version, direction, success FROM dbtier.migration_history ORDER BY id"
        ).fetchall()
    assert [h[1] for h in history] == ["up"] * 3 + ["down"] * 3 + ["up"] * 3
    assert all(h[2] for h in history)


def test_up_to_a_target_then_to_latest(database: str, tmp_path: Path) -> None:
    path = write(tmp_path / "sql", BASIC)
    assert [s["version"] for s in migrations.migrate(database, path, target=2).steps] == [1, 2]
    plan = migrations.plan(database, path)
    assert [s["version"] for s in plan.steps] == [3]
    assert [s["version"] for s in migrations.migrate(database, path).steps] == [3]


def test_plan_changes_nothing_not_even_the_ledger(database: str, tmp_path: Path) -> None:
    path = write(tmp_path / "sql", BASIC)
    result = migrations.plan(database, path)
    assert [s["file"] for s in result.steps] == [
        "0001_items.up.sql",
        "0002_items_index.up.sql",
        "0003_colors.up.sql",
    ]
    assert result.steps[1]["transactional"] is False
    assert ledger(database) == [] and tables(database) == set()


def test_failed_migration_rolls_back_and_leaves_ledger_as_before(
    database: str, tmp_path: Path, dbtier_cli
) -> None:
    path = write(tmp_path / "sql", {k: v for k, v in BASIC.items() if k.startswith("0001")})
    migrations.migrate(database, path)
    before = ledger(database)
    write(
        path,
        {
            "0002_broken.up.sql": (
                "CREATE TABLE half (x int);\nINSERT INTO half VALUES (1);\nSELEC 1;"
            ),
            "0002_broken.down.sql": "DROP TABLE half;",
        },
    )
    proc = dbtier_cli("migrate", "up", "--dsn", database, "--path", str(path))
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()
    assert err[-1].startswith("dbtier: error: migration 0002_broken.up.sql failed: syntax error")
    assert "Traceback" not in proc.stderr
    assert ledger(database) == before
    assert "half" not in tables(database)  # the CREATE TABLE before the error was rolled back
    with psycopg.connect(database) as conn:
        failed = conn.execute(
            "SELECT version, success, error FROM dbtier.migration_history WHERE NOT success"
        ).fetchall()
    assert failed and failed[0][0] == 2 and "syntax error" in failed[0][2]


def test_checksum_drift_is_an_error_until_repaired(
    database: str, tmp_path: Path, dbtier_cli
) -> None:
    path = write(tmp_path / "sql", BASIC)
    migrations.migrate(database, path)
    (path / "0001_items.up.sql").write_text(BASIC["0001_items.up.sql"] + "\n-- edited\n")
    proc = dbtier_cli("migrate", "up", "--dsn", database, "--path", str(path))
    assert proc.returncode == 3
    assert "0001_items.up.sql changed since it was applied" in proc.stderr
    assert "dbtier migrate repair" in proc.stderr
    status = dbtier_cli("migrate", "status", "--json", "--dsn", database, "--path", str(path))
    assert status.returncode == 3
    assert json.loads(status.stdout)["migrations"][0]["state"] == "drifted"

    # the documented override for one run, then the permanent fix
    assert migrations.migrate(database, path, allow_drift=True).steps == []
    assert migrations.repair(database, path).repaired == ["0001_items"]
    assert migrations.migrate(database, path).steps == []
    assert ledger(database)[0][2] == migrations.sha256_file(path / "0001_items.up.sql")


def test_applied_migration_whose_file_disappeared_is_drift(database: str, tmp_path: Path) -> None:
    path = write(tmp_path / "sql", BASIC)
    migrations.migrate(database, path)
    (path / "0003_colors.up.sql").unlink()
    (path / "0003_colors.down.sql").unlink()
    with pytest.raises(DriftError, match="applied migration 0003_colors has no file any more"):
        migrations.migrate(database, path)


def test_repair_forgets_a_deleted_file_only_when_named(
    database: str, tmp_path: Path, dbtier_cli
) -> None:
    path = write(tmp_path / "sql", BASIC)
    migrations.migrate(database, path)
    checksum_3 = ledger(database)[2][2]
    (path / "0003_colors.up.sql").unlink()
    (path / "0003_colors.down.sql").unlink()
    (path / "0001_items.up.sql").write_text(BASIC["0001_items.up.sql"] + "\n-- edited\n")
    cli = ("--dsn", database, "--path", str(path))

    up = dbtier_cli("migrate", "up", *cli)
    assert up.returncode == 3
    assert "'dbtier migrate repair --forget 3'" in up.stderr

    # Plain repair accepts the edited file but never forgets a row on its own.
    plain = dbtier_cli("migrate", "repair", "--json", *cli)
    assert plain.returncode == 3, plain.stderr
    assert json.loads(plain.stdout) == {
        "repaired": ["0001_items"],
        "forgotten": [],
        "missing": ["0003_colors"],
    }
    assert [r[0] for r in ledger(database)] == [1, 2, 3]
    for version, message in (("2", "0002_items_index.up.sql still exists"), ("9", "not applied")):
        bad = dbtier_cli("migrate", "repair", "--forget", version, *cli)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
    assert [r[0] for r in ledger(database)] == [1, 2, 3]

    with psycopg.connect(database) as conn:  # a ledger created before 'forget' existed
        conn.execute(
            "ALTER TABLE dbtier.migration_history "
            "DROP CONSTRAINT migration_history_direction_check, "
            "ADD CONSTRAINT migration_history_direction_check "
            "CHECK (direction IN ('up', 'down', 'repair'))"
        )
    forget = dbtier_cli("migrate", "repair", "--forget", "3", *cli)
    assert forget.returncode == 0, forget.stderr
    assert "forgot: 0003_colors" in forget.stdout
    assert [r[0] for r in ledger(database)] == [1, 2]
    assert "colors" in tables(database)  # forgetting a row reverts nothing
    with psycopg.connect(database) as conn:
        history = conn.execute(
            "SELECT version, name, direction, checksum, success FROM dbtier.migration_history "
            "WHERE direction = 'forget'"
        ).fetchall()
    assert history == [(3, "colors", "forget", checksum_3, True)]
    assert migrations.migrate(database, path).steps == []


def test_file_added_below_the_applied_version_is_refused_unless_out_of_order(
    database: str, tmp_path: Path, dbtier_cli
) -> None:
    path = write(tmp_path / "sql", {k: v for k, v in BASIC.items() if not k.startswith("0002")})
    migrations.migrate(database, path)
    write(
        path,
        {
            **{k: v for k, v in BASIC.items() if k.startswith("0002")},
            "0004_sizes.up.sql": "CREATE TABLE sizes (name text);",
            "0004_sizes.down.sql": "DROP TABLE sizes;",
        },
    )
    status = json.loads(
        dbtier_cli("migrate", "status", "--json", "--dsn", database, "--path", str(path)).stdout
    )
    states = {r["version"]: r["state"] for r in status["migrations"]}
    assert states == {1: "applied", 2: "out-of-order", 3: "applied", 4: "pending"}

    for action in ("up", "plan"):
        proc = dbtier_cli("migrate", action, "--dsn", database, "--path", str(path))
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "0002_items_index.up.sql" in lines[0], proc.stderr
        assert "--out-of-order" in lines[0]
    assert [r[0] for r in ledger(database)] == [1, 3]

    plan = dbtier_cli(
        "migrate", "plan", "--json", "--out-of-order", "--dsn", database, "--path", str(path)
    )
    assert [s["version"] for s in json.loads(plan.stdout)["steps"]] == [2, 4]
    result = migrations.migrate(database, path, out_of_order=True)
    assert [s["version"] for s in result.steps] == [2, 4]
    assert [r[0] for r in ledger(database)] == [1, 2, 3, 4]
    assert "idx_items_label" in tables(database)


def test_concurrent_runs_apply_each_migration_once(database: str, tmp_path: Path) -> None:
    path = write(
        tmp_path / "sql",
        {
            "0001_slow.up.sql": "SELECT pg_sleep(2);\nCREATE TABLE slow (x int);",
            "0001_slow.down.sql": "DROP TABLE slow;",
        },
    )
    cmd = [
        str(VENV_BIN / "dbtier"),
        "migrate",
        "up",
        "--json",
        "--dsn",
        database,
        "--path",
        str(path),
        "--lock-timeout",
        "30",
    ]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    applied = sorted(len(json.loads(out)["steps"]) for out, _ in outputs)
    assert applied == [0, 1]
    assert any("waiting for the migration lock" in err for _, err in outputs)
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM dbtier.migration_history").fetchone()[0] == 1
    assert len(ledger(database)) == 1


def test_lock_timeout_names_the_holder(database: str, tmp_path: Path, dbtier_cli) -> None:
    path = write(tmp_path / "sql", BASIC)
    with psycopg.connect(database, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (migrations.LOCK_KEY,))
        pid = holder.info.backend_pid
        started = time.monotonic()
        proc = dbtier_cli(
            "migrate", "up", "--dsn", database, "--path", str(path), "--lock-timeout", "1"
        )
        assert time.monotonic() - started < 20
    assert proc.returncode == 4
    assert f"held by pid {pid}" in proc.stderr
    assert ledger(database) == []


def test_invalid_index_from_failed_concurrent_build_is_rebuilt(
    database: str, tmp_path: Path, dbtier_cli
) -> None:
    path = write(
        tmp_path / "sql",
        {
            "0001_t.up.sql": "CREATE TABLE t (x int);\nINSERT INTO t VALUES (1), (1), (2);",
            "0001_t.down.sql": "DROP TABLE t;",
            "0002_unique.up.sql": (
                "-- dbtier:no-transaction\n"
                "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS idx_t_x ON t (x);\n"
            ),
            "0002_unique.down.sql": "-- dbtier:no-transaction\nDROP INDEX CONCURRENTLY idx_t_x;\n",
        },
    )
    proc = dbtier_cli("migrate", "up", "--dsn", database, "--path", str(path))
    assert proc.returncode == 1
    assert "0002_unique.up.sql failed: could not create unique index" in proc.stderr
    assert [r[0] for r in ledger(database)] == [1]
    status = json.loads(
        dbtier_cli("migrate", "status", "--json", "--dsn", database, "--path", str(path)).stdout
    )
    assert status["invalid_indexes"] == ["public.idx_t_x"]
    assert migrations.plan(database, path).rebuilt_indexes == ["public.idx_t_x"]

    with psycopg.connect(database) as conn:
        conn.execute("DELETE FROM t WHERE ctid = (SELECT min(ctid) FROM t WHERE x = 1)")
    result = migrations.migrate(database, path)
    assert result.rebuilt_indexes == ["public.idx_t_x"]
    assert [s["version"] for s in result.steps] == [2]
    with psycopg.connect(database) as conn:
        valid = conn.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'idx_t_x'::regclass"
        ).fetchone()[0]
    assert valid is True


def test_invalid_mixed_case_indexes_are_matched_by_postgresql_rules(
    database: str, tmp_path: Path
) -> None:
    path = write(
        tmp_path / "sql",
        {
            "0001_t.up.sql": (
                "CREATE TABLE t (x int, y int);\nINSERT INTO t VALUES (1, 1), (1, 1), (2, 2);"
            ),
            "0001_t.down.sql": "DROP TABLE t;",
            "0002_unique.up.sql": (
                "-- dbtier:no-transaction\n"
                "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS IDX_Foo ON t (x);\n"
                'CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "IDX_Bar" ON public.T (y);\n'
            ),
            "0002_unique.down.sql": (
                '-- dbtier:no-transaction\nDROP INDEX IDX_Foo;\nDROP INDEX "IDX_Bar";\n'
            ),
        },
    )
    migrations.migrate(database, path, target=1)
    # Someone else's INVALID index whose name differs only in case: never ours to drop.
    with (
        psycopg.connect(database, autocommit=True) as conn,
        pytest.raises(psycopg.errors.UniqueViolation),
    ):
        conn.execute('CREATE UNIQUE INDEX CONCURRENTLY "Idx_Foo" ON t (x)')

    with pytest.raises(DbtierError, match="could not create unique index"):
        migrations.migrate(database, path)  # idx_foo left INVALID
    assert migrations.plan(database, path).rebuilt_indexes == ["public.idx_foo"]
    with psycopg.connect(database) as conn:
        conn.execute("DELETE FROM t WHERE ctid = (SELECT min(ctid) FROM t WHERE x = 1)")
        conn.execute("INSERT INTO t VALUES (3, 2)")
    with pytest.raises(DbtierError, match="could not create unique index"):
        migrations.migrate(database, path)  # idx_foo rebuilt, "IDX_Bar" left INVALID
    assert migrations.plan(database, path).rebuilt_indexes == ["public.IDX_Bar"]

    with psycopg.connect(database) as conn:
        conn.execute("DELETE FROM t WHERE x = 3")
    result = migrations.migrate(database, path)
    assert result.rebuilt_indexes == ["public.IDX_Bar"]
    assert [s["version"] for s in result.steps] == [2]
    with psycopg.connect(database) as conn:
        valid = dict(
            conn.execute(
                "SELECT c.relname, i.indisvalid FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname ILIKE 'idx_%'"
            ).fetchall()
        )
    assert valid == {"idx_foo": True, "IDX_Bar": True, "Idx_Foo": False}


def test_bad_input_gets_one_line_and_exit_code(database: str, tmp_path: Path, dbtier_cli) -> None:
    path = write(tmp_path / "sql", BASIC)
    cases = [
        (
            ["migrate", "up", "--dsn", database, "--path", str(path), "--target", "7"],
            2,
            "unknown migration version 7 (known: 0, 1, 2, 3)",
        ),
        (
            ["migrate", "down", "--dsn", database, "--path", str(path), "--target", "9"],
            2,
            "unknown migration version 9",
        ),
        (
            ["migrate", "up", "--dsn", database, "--path", str(tmp_path / "nope")],
            2,
            "migrations directory not found",
        ),
        (
            [
                "migrate",
                "status",
                "--dsn",
                "postgresql://app:s3cr3tpw@127.0.0.1:1/x",
                "--path",
                str(path),
            ],
            5,
            "cannot connect to app@127.0.0.1:1/x",
        ),
    ]
    for args, code, message in cases:
        proc = dbtier_cli(*args)
        assert proc.returncode == code, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], proc.stderr
        assert "s3cr3tpw" not in proc.stderr + proc.stdout


def test_ddl_lock_timeout_stops_a_migration_stuck_behind_a_lock(
    database: str, tmp_path: Path, dbtier_cli
) -> None:
    path = write(tmp_path / "sql", {k: v for k, v in BASIC.items() if k.startswith("0001")})
    migrations.migrate(database, path)
    write(
        path,
        {
            "0002_col.up.sql": "ALTER TABLE items ADD COLUMN note text;",
            "0002_col.down.sql": "ALTER TABLE items DROP COLUMN note;",
        },
    )
    with psycopg.connect(database) as blocker:
        blocker.execute("SELECT * FROM items")  # holds ACCESS SHARE until rollback
        proc = dbtier_cli(
            "migrate", "up", "--dsn", database, "--path", str(path), "--ddl-lock-timeout", "500ms"
        )
        blocker.rollback()
    assert proc.returncode == 1
    assert "canceling statement due to lock timeout" in proc.stderr
    assert [r[0] for r in ledger(database)] == [1]
