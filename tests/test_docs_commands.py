"""Every shell command in the operator documentation is one a test runs (tests/support/runbook.py
explains the markers). This file checks the markers of every ```sh block of every docs/*.md: a
`run` block names a Molecule host, a user and an id, and its document is run by a Molecule test
(molecule/default/tests/test_runbook.py runs the blocks by id); a `not run` block names the
test(s) that cover it, and each of its commands (program and first arguments) appears in the code
of one of them. README.md is not checked: its `make demo` / `make test` are the entry points of
the suites themselves, run by the operator, not by a test."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .support.runbook import DOCS, ROOT, Block, command_key, commands, shell_blocks
from .support.testsource import code_names, code_words, find_test

HOSTS = {"db1", "ops1", "pgbouncer1"}
COVERED_BY = re.compile(r"((?:molecule/[\w.-]+/)?tests/[\w/.-]+\.py)::(\w+)")
DOCUMENTS = sorted(p.name for p in DOCS.glob("*.md"))
# Programs a test runs under another name: the wrapper dbtier-job runs dbtier with /etc/dbtier's
# settings; tests run Python as sys.executable (the venv's).
ALIASES = {
    "dbtier-job": {"dbtier-job", "dbtier"},
    "python": {"python", "python3", "sys.executable"},
    "python3": {"python", "python3", "sys.executable"},
}


def molecule_tests_text() -> str:
    return "\n".join(p.read_text() for p in sorted(ROOT.glob("molecule/*/tests/*.py")))


def covering_tests(block: Block) -> list[tuple[Path, str]]:
    """The tests a `not run` marker names; each must exist."""
    named = COVERED_BY.findall(block.spec)
    assert named, f"{block.where}: 'not run' must name the test: covered by tests/x.py::test_y"
    tests = []
    for file, name in named:
        path = ROOT / file
        assert path.is_file(), f"{block.where}: {file} does not exist"
        assert find_test(path, name), f"{block.where}: {file} has no test {name}"
        tests.append((path, name))
    return tests


def runs_the_block_as_written(block: Block, tests: list[tuple[Path, str]]) -> bool:
    """A test that reads the document's blocks (shell_blocks of this file) and runs one."""
    return any(
        "shell_blocks" in code_names(path, name) and block.path.name in code_words(path, name)
        for path, name in tests
    )


def uncovered(block: Block) -> list[str]:
    """The block's commands whose program and first arguments none of its tests contains (none
    when a test runs the block's own text)."""
    tests = covering_tests(block)
    if runs_the_block_as_written(block, tests):
        return []
    words = set().union(*(code_words(path, name) for path, name in tests))
    missing = []
    for command in commands(block):
        program, *arguments = command_key(command)
        programs = ALIASES.get(program, {program})
        if not (programs & words and set(arguments) <= words):
            missing.append(" ".join(command_key(command)))
    return missing


def test_every_document_is_checked() -> None:
    assert {"BACKUP-RESTORE.md", "DATA-ARCHIVING.md", "DEPLOYMENT.md"} <= set(DOCUMENTS)


@pytest.mark.parametrize("name", DOCUMENTS)
def test_every_shell_block_is_run_or_names_the_test_that_runs_it(name: str) -> None:
    ids: set[str] = set()
    for block in shell_blocks(DOCS / name):
        assert block.marker, f"{block.where}: ```sh block without a <!-- run: ... --> marker"
        if block.marker == "not run":
            missing = uncovered(block)
            assert not missing, (
                f"{block.where}: the tests its marker names do not run {missing}: name the test "
                "that does, or add one"
            )
            continue
        assert " as " in block.spec, f"{block.where}: marker must say '<host> as <user>'"
        assert block.host in HOSTS, f"{block.where}: unknown host {block.host!r}"
        assert block.id, f"{block.where}: a run block needs an id (the test runs it by id)"
        assert block.id not in ids, f"{block.where}: duplicate id {block.id}"
        ids.add(block.id)
        assert name in molecule_tests_text(), (
            f"{block.where}: no molecule/*/tests/*.py runs the blocks of {name}"
        )


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


def test_commands_are_read_as_a_test_would_spell_them() -> None:
    block = Block(ROOT / "docs" / "x.md", 1, "sh", "", None)
    block.text = (
        "export DBTIER_VAULT_PASSWORD=...   # from the secret store\n"
        'NEW="$(openssl rand -base64 24)"\n'
        "terraform -chdir=terraform/environments/production output -raw x\n"
        "sudo -u postgres dbtier-job status --json | jq .\n"
        "ansible-playbook ansible/site.yml -i inventories/production \\\n    --check --diff\n"
        "for dir in /a /b; do\n"
        "  psql \"postgresql://u@h:6432/db?sslmode=require\" -c 'SELECT 1'\n"
        "done\n"
        "$EDITOR inventories/production/group_vars/all/vault.yml\n"
    )
    assert [command_key(c) for c in commands(block)] == [
        ["terraform", "-chdir", "output"],
        ["dbtier-job", "status", "--json"],
        ["ansible-playbook", "site.yml", "-i"],
        ["psql"],
    ]


def test_a_marker_naming_a_test_that_does_not_run_the_command_is_refused() -> None:
    spec = "covered by tests/test_inventories.py::test_graph_shows_the_hosts_from_terraform"
    block = Block(ROOT / "docs" / "x.md", 1, "sh", "", "not run", spec)
    block.text = "ansible-inventory -i inventories/production --graph\nterraform plan\n"
    assert uncovered(block) == ["terraform plan"]
    deployment = Block(DOCS / "DEPLOYMENT.md", 1, "sh", "curl -s http://x/\n", "not run")
    deployment.spec = (
        "covered by tests/test_docs_deployment.py::test_state_bucket_and_lock_table_as_documented"
    )
    assert uncovered(deployment) == []  # that test runs DEPLOYMENT.md's block as written
    deployment.path = DOCS / "PGBOUNCER.md"
    assert uncovered(deployment) == ["curl -s"]
    block.spec = "covered by tests/test_inventories.py::test_no_such_test"
    with pytest.raises(AssertionError, match="has no test test_no_such_test"):
        uncovered(block)
