"""Parsing and exposition of PgBouncer's metrics (src/dbtier/pgbouncermetrics.py, issue 13): psql's
CSV of the admin console to samples, the text format (label escaping, families once, empty pools),
promtool's verdict on it, and a process that cannot be asked. The real PgBouncers are in
tests/test_pgbouncer_health.py."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from dbtier import pgbouncermetrics as m
from dbtier.health import HealthServer

PROMTOOL = shutil.which("promtool")


def _section(name: str, header: str, *rows: str) -> str:
    return "\n".join([f"{m.MARKER} {name}", header, *rows]) + "\n"


LISTS = _section("LISTS", "list,items", "databases,2", "used_clients,7", "free_clients,43")
POOLS_HEADER = (
    "database,user,cl_active,cl_waiting,cl_active_cancel_req,cl_waiting_cancel_req,sv_active,"
    "sv_active_cancel,sv_being_canceled,sv_idle,sv_used,sv_tested,sv_login,maxwait,maxwait_us,"
    "pool_mode"
)
# a database name with a comma and a quote, a user with a backslash and a line break: psql quotes
# them in its CSV, the exposition escapes them
POOLS = _section(
    "POOLS",
    POOLS_HEADER,
    "app,app_user,3,2,0,0,1,0,0,4,0,0,0,2,500000,transaction",
    '"we,""ird",' + '"a\\b\nc",1,0,0,0,0,0,0,0,0,0,0,0,0,transaction',
)
DATABASES = _section(
    "DATABASES",
    "name,host,port,database,force_user,pool_size,min_pool_size,reserve_pool,pool_mode,"
    "max_connections,current_connections,paused,disabled",
    "app,127.0.0.1,5432,app,,13,0,3,,0,1,0,0",
    "pgbouncer,,6432,pgbouncer,pgbouncer,2,0,0,statement,0,0,0,0",
)
STATS = _section(
    "STATS",
    "database,total_xact_count,total_query_count,total_received,total_sent,total_xact_time,"
    "total_query_time,total_wait_time,avg_xact_count",
    "app,10,25,0,0,1500000,900000,250,0",
)
CONFIG = _section(
    "CONFIG",
    "key,value,default,changeable",
    'auth_query,"SELECT a, b FROM c","SELECT a, b FROM c",yes',
    "max_client_conn,1000,100,yes",
)
OUTPUT = LISTS + POOLS + DATABASES + STATS + CONFIG


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The exposition's samples: {(name, labels): value}, label values unescaped."""
    samples = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        assert match, line
        labels = {
            (k, re.sub(r"\\(.)", lambda g: "\n" if g[1] == "n" else g[1], v))
            for k, v in re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match[2] or "")
        }
        samples[(match[1], frozenset(labels))] = float(match[3])
    return samples


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def test_parse_output_reads_each_section_by_column_name() -> None:
    sections = m.parse_output(OUTPUT)
    assert set(sections) == set(m.SECTIONS)
    assert sections["LISTS"][1] == {"list": "used_clients", "items": "7"}
    weird = sections["POOLS"][1]
    assert (weird["database"], weird["user"], weird["cl_active"]) == ('we,"ird', "a\\b\nc", "1")
    assert sections["CONFIG"][0]["value"] == "SELECT a, b FROM c"


def test_a_missing_section_is_an_error() -> None:
    with pytest.raises(m.ScrapeError, match="no answer to SHOW STATS, CONFIG"):
        m.parse_output(LISTS + POOLS + DATABASES)


def test_samples_of_one_process() -> None:
    samples = parse(m.render(m.process_samples("2", m.parse_output(OUTPUT))))
    pool = {"process": "2", "database": "app", "user": "app_user"}
    assert samples[key("pgbouncer_up", process="2")] == 1
    assert samples[key("pgbouncer_max_client_conn", process="2")] == 1000
    assert samples[key("pgbouncer_client_connections", process="2")] == 7
    assert samples[key("pgbouncer_pool_client_active", **pool)] == 3
    assert samples[key("pgbouncer_pool_client_waiting", **pool)] == 2
    assert samples[key("pgbouncer_pool_server_active", **pool)] == 1
    assert samples[key("pgbouncer_pool_server_idle", **pool)] == 4
    assert samples[key("pgbouncer_pool_maxwait_seconds", **pool)] == 2.5
    weird = {"process": "2", "database": 'we,"ird', "user": "a\\b\nc"}
    assert samples[key("pgbouncer_pool_client_active", **weird)] == 1
    assert samples[key("pgbouncer_database_pool_size", process="2", database="app")] == 13
    stats = {"process": "2", "database": "app"}
    assert samples[key("pgbouncer_stats_xact_count_total", **stats)] == 10
    assert samples[key("pgbouncer_stats_query_count_total", **stats)] == 25
    # PgBouncer counts microseconds
    assert samples[key("pgbouncer_stats_xact_time_seconds_total", **stats)] == 1.5
    assert samples[key("pgbouncer_stats_wait_time_seconds_total", **stats)] == 0.00025


def test_empty_pools_and_missing_columns_leave_those_metrics_out() -> None:
    """No pool yet (no client asked), and a PgBouncer without total_wait_time: the rest stays."""
    stats = _section(
        "STATS", "database,total_xact_count,total_query_count,total_xact_time", "app,1,2,x"
    )
    text = m.render(
        m.process_samples(
            "1",
            m.parse_output(LISTS + _section("POOLS", POOLS_HEADER) + DATABASES + stats + CONFIG),
        )
    )
    assert "pgbouncer_pool_" not in text
    assert "pgbouncer_stats_wait_time_seconds_total" not in text
    assert "pgbouncer_stats_xact_time_seconds_total" not in text  # "x" is no number
    assert 'pgbouncer_stats_xact_count_total{process="1",database="app"} 1\n' in text
    assert 'pgbouncer_up{process="1"} 1\n' in text


def test_label_values_are_escaped() -> None:
    assert m.escape_label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    text = m.render([m.Sample("pgbouncer_up", (("process", 'x"\\\n'),), 1)])
    assert 'pgbouncer_up{process="x\\"\\\\\\n"} 1\n' in text


def test_each_family_once_with_help_and_type() -> None:
    sections = m.parse_output(OUTPUT)
    text = m.render(
        [
            *m.process_samples("1", sections),
            *m.process_samples("2", sections),
            m.Sample("pgbouncer_up", (("process", "3"),), 0),
            m.Sample("pgbouncer_scrape_duration_seconds", (), 0.125),
        ]
    )
    for name, (kind, _help) in m.FAMILIES.items():
        assert text.count(f"# TYPE {name} {kind}\n") == 1, name
        assert text.count(f"# HELP {name} ") == 1, name
    assert text.index('pgbouncer_up{process="3"} 0') < text.index(
        "# HELP pgbouncer_max_client_conn"
    )
    assert "\npgbouncer_scrape_duration_seconds 0.125\n" in text
    with pytest.raises(ValueError, match="unknown metric"):
        m.render([m.Sample("pgbouncer_nope", (), 1)])


@pytest.mark.skipif(not PROMTOOL, reason="promtool is not installed (Debian's prometheus)")
def test_promtool_accepts_the_exposition(tmp_path: Path) -> None:
    sections = m.parse_output(OUTPUT)
    text = m.render(
        [
            *m.process_samples("1", sections),
            m.Sample("pgbouncer_up", (("process", "2"),), 0),
            m.Sample("pgbouncer_scrape_duration_seconds", (), 0.01),
        ]
    )
    check = subprocess.run(
        [str(PROMTOOL), "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr
    # and it does object to a malformed one (the check is not a formality)
    bad = subprocess.run(
        [str(PROMTOOL), "check", "metrics"],
        input=text.replace('{process="1"}', '{process="1}', 1),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode != 0


def test_format_value() -> None:
    assert [m.format_value(v) for v in (3.0, 0.5, float("nan"), float("inf"), 2.0**60)] == [
        "3",
        "0.5",
        "NaN",
        "+Inf",
        "1.152921504606847e+18",
    ]


def test_psql_command_asks_the_admin_console() -> None:
    cmd = m.psql_command("host=/run/pgbouncer-2 port=6432 dbname=app user=u", "/usr/bin/psql")
    assert (
        cmd[cmd.index("-d") + 1]
        == "host=/run/pgbouncer-2 port=6432 dbname=app user=u dbname=pgbouncer"
    )
    assert [c for c in cmd if c.startswith("SHOW ")] == [f"SHOW {s}" for s in m.SECTIONS]
    assert "--csv" in cmd and "ON_ERROR_STOP=1" in cmd


def test_a_process_that_cannot_be_asked_is_down_the_others_reported(tmp_path: Path) -> None:
    """Process 1: a psql that hangs (killed at the timeout); process 2 answers (a stand-in psql
    printing the sample output); process 3: no psql at all. All asked at once."""
    slow = tmp_path / "slow-psql"
    slow.write_text("#!/bin/sh\nexec sleep 30\n")
    slow.chmod(0o755)
    canned = tmp_path / "canned-psql"
    (tmp_path / "out.csv").write_text(OUTPUT)
    canned.write_text(
        f'#!/bin/sh\ncase "$*" in *slow*) exec {slow};; *missing*) exit 2;; esac\n'
        f"cat {tmp_path / 'out.csv'}\n"
    )
    canned.chmod(0o755)
    started = time.monotonic()
    text, failures = m.scrape(["host=slow", "host=ok", "host=missing"], 1.0, str(canned))
    took = time.monotonic() - started
    assert took < 3, f"{took:.1f}s: the processes were not asked at once, or not killed"
    samples = parse(text)
    assert samples[key("pgbouncer_up", process="1")] == 0
    assert samples[key("pgbouncer_up", process="2")] == 1
    assert samples[key("pgbouncer_up", process="3")] == 0
    assert samples[key("pgbouncer_max_client_conn", process="2")] == 1000
    assert not [k for k in samples if ("process", "1") in k[1] and k[0] != "pgbouncer_up"]
    assert 0 < samples[key("pgbouncer_scrape_duration_seconds")] < 3
    assert failures == [
        "process 1 of 3: no answer within 1s",
        "process 3 of 3: psql exited with 2",
    ]
    _, failures = m.scrape(["host=x"], 1.0, str(tmp_path / "no-such-psql"))
    assert failures == [
        "process 1 of 1: cannot run "
        + str(tmp_path / "no-such-psql")
        + ": No such file or directory"
    ]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback only
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_scrapes_have_their_own_budget_beside_the_checks(tmp_path: Path) -> None:
    """A scrape stuck on a hung PgBouncer (up to the timeout): a second one is refused (503 busy,
    --max-scrapes 1), the load balancer's check still runs (its own budget), and the stuck scrape
    ends as pgbouncer_up 0 with HTTP 200."""
    slow = tmp_path / "slow-psql"
    slow.write_text("#!/bin/sh\nexec sleep 30\n")
    slow.chmod(0o755)
    server = HealthServer(("127.0.0.1", 0), ["host=x"], 1.5, 1, str(slow), max_scrapes=1)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    first: list[tuple[int, str]] = []
    try:
        stuck = threading.Thread(target=lambda: first.append(_get(url + "/metrics")), daemon=True)
        stuck.start()
        time.sleep(0.5)
        assert _get(url + "/metrics") == (
            503,
            "busy: earlier scrapes are still waiting for PgBouncer\n",
        )
        assert _get(url + "/health") == (503, "no answer within 1.5s\n")
        stuck.join(timeout=10)
        status, body = first[0]
        assert status == 200
        assert 'pgbouncer_up{process="1"} 0\n' in body
    finally:
        server.shutdown()
        server.server_close()
