"""ansible/site.yml's shape (issue 9): the preflight comes first, RDS gets its bootstrap before the
migrations, and PgBouncer rolls out one host at a time, each serving again before the next."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def plays() -> list[dict]:
    return yaml.safe_load((ROOT / "ansible/site.yml").read_text())


def test_preflight_first_then_bootstrap_before_migrations():
    names = [p["name"] for p in plays()]
    assert plays()[0]["ansible.builtin.import_playbook"] == "preflight.yml"
    bootstrap = next(i for i, n in enumerate(names) if "RDS" in n)
    migrations = next(i for i, n in enumerate(names) if "migrations" in n.lower())
    assert bootstrap < migrations
    (task,) = plays()[bootstrap]["tasks"]
    assert task["ansible.builtin.include_role"]["name"] == "database_bootstrap"
    assert task["when"] == "not (dbtier_self_managed | bool)"


def test_pgbouncer_rolls_out_one_host_at_a_time():
    (play,) = [p for p in plays() if p.get("hosts") == "pgbouncer"]
    assert play["serial"] == 1
    assert play["max_fail_percentage"] == 0
    tasks = yaml.safe_load((ROOT / "ansible/roles/pgbouncer/tasks/main.yml").read_text())
    names = [t["name"] for t in tasks]
    flush = names.index("Apply configuration changes now")
    assert tasks[flush]["ansible.builtin.meta"] == "flush_handlers"
    assert names[flush + 1] == "Wait until PgBouncer listens again"
    assert "ansible.builtin.wait_for" in tasks[flush + 1]


def test_monitoring_comes_last_on_every_group():
    names = [p["name"] for p in plays()]
    assert names[-1] == "Monitoring"
    assert names.index("Monitoring") > next(i for i, n in enumerate(names) if "PgBouncer" in n)
    play = plays()[-1]
    assert set(play["hosts"].split(":")) == {"postgresql", "pgbouncer", "ops"}
    assert play["roles"] == [{"role": "monitoring"}]
