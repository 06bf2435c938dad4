"""Commands of the operator documentation, as tests run them.

Every ```sh block in docs/*.md is preceded by a marker comment (invisible when rendered):

    <!-- run: db1 as postgres; id=scratch-pitr -->      a test runs it: on host db1, as postgres
    <!-- run: ops1 as dbtier; id=status; expect=1 -->   ... and expects that exit code
    <!-- not run: covered by tests/test_backup_s3.py::test_rds_point_in_time_restore -->
    <!-- not run: covered by tests/a.py::test_x and molecule/default/tests/test_b.py::test_y -->

A `not run` marker names the test(s) whose code runs each command of the block (checked by
tests/test_docs_commands.py: the program and its first arguments are string literals of the test
or of the helpers and fixtures it uses).

A `run` block is executed as one bash script (set -euo pipefail) in a login-like shell of that
user on that host of the Molecule stack. Variables the test provides (a target time, a scenario
id) replace the block's own assignments of them, e.g. `TARGET='2026-04-07 14:30:00+00'`.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
MARKER = re.compile(r"<!--\s*(run|not run):\s*(.*?)\s*-->")
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Z][A-Z0-9_]*)=")


@dataclass
class Block:
    path: Path
    line: int  # line of the opening fence, 1-based
    language: str
    text: str
    marker: str | None  # "run" | "not run" | None
    spec: str = ""
    options: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def host(self) -> str:
        return self.spec.split(" as ", 1)[0].strip()

    @property
    def user(self) -> str:
        return self.spec.split(" as ", 1)[1].strip()

    @property
    def id(self) -> str:
        return self.options.get("id", "")

    @property
    def expect(self) -> int:
        return int(self.options.get("expect", "0"))

    def script(self, variables: dict[str, str] | None = None) -> str:
        """The block as a bash script; assignments of provided variables become the test's."""
        variables = variables or {}
        lines = ["set -euo pipefail"]
        lines += [f"{name}={shlex.quote(value)}" for name, value in variables.items()]
        for line in self.text.splitlines():
            match = ASSIGNMENT.match(line)
            if match and match.group(1) in variables:
                continue
            lines.append(line)
        return "\n".join(lines) + "\n"

    def run_on(self, host: Any, variables: dict[str, str] | None = None) -> Any:
        """Run the block on a testinfra host as its marker's user, as an operator would, and
        check the exit code the docs expect; returns testinfra's command result."""
        script = self.script(variables)
        if self.user == "root":
            result = host.run("bash -c %s", script)
        else:
            result = host.run("cd /tmp && runuser -u %s -- bash -c %s", self.user, script)
        assert result.rc == self.expect, (
            f"{self.where} ({self.id}) exited {result.rc}, the docs expect {self.expect}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
        return result


def _parse_marker(kind: str, body: str) -> tuple[str, dict[str, str]]:
    if kind == "not run":
        return body, {}
    spec, *rest = [part.strip() for part in body.split(";")]
    options = {}
    for item in rest:
        key, _, value = item.partition("=")
        options[key.strip()] = value.strip()
    return spec, options


def blocks(path: Path) -> list[Block]:
    """Every fenced code block of a Markdown file, with the marker right before it (if any)."""
    found: list[Block] = []
    lines = path.read_text().splitlines()
    pending: tuple[str, str, dict[str, str]] | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        marker = MARKER.search(line)
        fence = FENCE.match(line)
        if marker:
            spec, options = _parse_marker(marker.group(1), marker.group(2))
            pending = (marker.group(1), spec, options)
        elif fence:
            start, indent = index, len(fence.group(1))
            index += 1
            body = []
            while index < len(lines) and not lines[index].strip().startswith("```"):
                body.append(lines[index][indent:])  # a block inside a list item is indented
                index += 1
            kind, spec, options = pending or (None, "", {})
            found.append(
                Block(path, start + 1, fence.group(2), "\n".join(body), kind, spec, options)
            )
            pending = None
        elif line.strip():
            pending = None  # a marker applies to the block right after it only
        index += 1
    return found


def shell_blocks(path: Path) -> list[Block]:
    return [b for b in blocks(path) if b.language == "sh"]


# --- what a block runs, for checking that a `not run` marker names a test that runs it -----------

# A word that stands for something the reader fills in (or the shell expands): no longer a literal
# argument a test could contain.
PLACEHOLDER = re.compile(r"[$<>{}*`\\\"']|\.\.\.|^[A-Z][A-Z_]+$")
SHELL_WORDS = {"for", "do", "done", "if", "then", "else", "fi", "while", "cd", "export", "set"}


def logical_lines(text: str) -> list[str]:
    """Lines with backslash continuations joined, comments and blank lines dropped."""
    joined: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = pending + raw
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1] + " "
            continue
        pending = ""
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            joined.append(line)
    return joined


def commands(block: Block) -> list[list[str]]:
    """The first simple command of each line of the block, as words (env assignments, `sudo -u
    USER`, shell keywords and builtins left out)."""
    found = []
    for line in logical_lines(block.text):
        first = re.split(r"\s(?:\||&&|\|\||;)\s|;\s*$", line)[0]
        try:
            words = shlex.split(first)
        except ValueError:
            words = first.split()
        while words and ASSIGNMENT.match(words[0]) and "=" in words[0]:
            words.pop(0)
        if words[:1] == ["sudo"]:
            words = words[3:] if words[1:2] == ["-u"] else words[1:]
        if not words or words[0] in SHELL_WORDS or PLACEHOLDER.search(words[0]):
            continue
        found.append(words)
    return found


def command_key(words: list[str], arguments: int = 2) -> list[str]:
    """The program and its first arguments as a test's source would spell them: paths by their
    last component, options by their name; stops at the first placeholder."""
    key = [words[0].rstrip("/").rsplit("/", 1)[-1]]
    for word in words[1 : 1 + arguments]:
        if word.startswith("-"):
            word = word.split("=", 1)[0]
        elif PLACEHOLDER.search(word) or "://" in word:  # a URL: this environment's endpoint
            break
        else:
            word = word.rstrip("/").rsplit("/", 1)[-1]
        key.append(word)
    return key
