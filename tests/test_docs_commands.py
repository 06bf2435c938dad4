"""Every shell command in the operator documentation is one a test runs (tests/support/runbook.py
explains the markers). This file checks the markers; molecule/default/tests/test_runbook.py runs
the `run` blocks on the Molecule stack."""

from __future__ import annotations

import re

import pytest

from .support.runbook import DOCS, ROOT, shell_blocks

# Documents whose commands are run by a test (more join as their commands get tests).
CHECKED = ["BACKUP-RESTORE.md", "DATA-ARCHIVING.md", "RUNBOOK.md"]
HOSTS = {"db1", "ops1", "pgbouncer1"}
COVERED_BY = re.compile(r"(tests/[\w/.-]+\.py)(?:::(\w+))?")


@pytest.mark.parametrize("name", CHECKED)
def test_every_shell_block_is_run_or_names_the_test_that_covers_it(name: str) -> None:
    found = shell_blocks(DOCS / name)
    assert found, f"{name} has no ```sh blocks"
    ids: set[str] = set()
    for block in found:
        assert block.marker, f"{block.where}: ```sh block without a <!-- run: ... --> marker"
        if block.marker == "not run":
            match = COVERED_BY.search(block.spec)
            assert match, f"{block.where}: 'not run' must name the test that covers it"
            path = ROOT / match.group(1)
            assert path.is_file(), f"{block.where}: {match.group(1)} does not exist"
            if match.group(2):
                assert f"def {match.group(2)}(" in path.read_text(), (
                    f"{block.where}: {match.group(1)} has no test {match.group(2)}"
                )
            continue
        assert " as " in block.spec, f"{block.where}: marker must say '<host> as <user>'"
        assert block.host in HOSTS, f"{block.where}: unknown host {block.host!r}"
        assert block.id, f"{block.where}: a run block needs an id (the test runs it by id)"
        assert block.id not in ids, f"{block.where}: duplicate id {block.id}"
        ids.add(block.id)


def test_the_marker_parser_reads_what_the_docs_write(tmp_path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- run: db1 as postgres; id=one; expect=1 -->\n"
        "```sh\nTARGET='x'\necho \"$TARGET\"\n```\n\n"
        "```sh\nunmarked\n```\n"
        "<!-- not run: covered by tests/test_backup.py -->\n\n```sh\nrds\n```\n"
    )
    from .support.runbook import shell_blocks as parse

    page.write_text(
        page.read_text() + "1. in a list:\n\n   <!-- run: ops1 as dbtier; id=two -->\n"
        "   ```sh\n   dbtier-job status\n   ```\n"
    )
    one, unmarked, rds, two = parse(page)
    assert (two.id, two.text) == ("two", "dbtier-job status")
    assert (one.host, one.user, one.id, one.expect) == ("db1", "postgres", "one", 1)
    assert "TARGET='x'" not in one.script({"TARGET": "2026-11-30 03:00:00+00"})
    assert "TARGET='2026-11-30 03:00:00+00'" in one.script({"TARGET": "2026-11-30 03:00:00+00"})
    assert unmarked.marker is None
    assert rds.marker == "not run" and "tests/test_backup.py" in rds.spec
