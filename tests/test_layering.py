"""The package layering of ifmemd, checked from the source so it cannot rot.

Each package's `__init__.py` says what it may import; this test holds those
rules for every `import` in every module, including imports inside functions.
It also holds the one rule that is about data rather than imports: only the
log package touches the `events` table.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DAEMON = ROOT / "daemon"
CLI = ROOT / "cli"

# The helpers of `ifmemd.system` that every package may lean on: they import
# nothing of ifmemd but errors and each other.
SYSTEM_LOW = frozenset(
    f"ifmemd.system.{m}" for m in ("paths", "privatefile", "durable", "sdnotify", "units")
)
BASE = frozenset({"ifmemd", "ifmemd.errors", "ifmemd.system"}) | SYSTEM_LOW


@dataclass(frozen=True)
class Rule:
    """Modules under `package` may import, of ifmemd, only what `allowed` admits."""

    package: str
    allowed: tuple[str, ...]  # module names, or prefixes ending in "."

    def admits(self, target: str) -> bool:
        return any(within(target, a) for a in self.allowed)

    def holds(self, module: str) -> bool:
        return within(module, self.package)


def within(name: str, pattern: str) -> bool:
    """`pattern` is a module, or a package and all it holds when it ends in "."."""
    if pattern.endswith("."):
        return name == pattern[:-1] or name.startswith(pattern)
    return name == pattern


# What the composition at the top may import (the daemon also `ifmemd.remote`).
TOP = (
    *BASE,
    *("ifmemd.log.", "ifmemd.wire.", "ifmemd.shards.", "ifmemd.system."),
    *(f"ifmemd.{m}" for m in ("config", "coordinator", "daemon", "main")),
    *(f"ifmemd.{m}" for m in ("pipewriter", "restart", "supervisor", "usage")),
)

# The first rule whose package holds a module applies to it, so the narrower come first.
RULES = (
    Rule("ifmemd.errors", ()),
    Rule("ifmemd.system.install", (*BASE, "ifmemd.system.", "ifmemd.log.", "ifmemd.config")),
    Rule(
        "ifmemd.system.doctor",
        (*BASE, "ifmemd.system.", "ifmemd.log.", "ifmemd.wire.", "ifmemd.config"),
    ),
    Rule("ifmemd.system.", tuple(BASE)),
    Rule("ifmemd.log.", (*BASE, "ifmemd.log.")),
    Rule("ifmemd.wire.", (*BASE, "ifmemd.wire.")),
    Rule("ifmemd.shards.", (*BASE, "ifmemd.shards.")),
    # Remote shards ride on the supervisor and the wire; only the daemon wires them in,
    # so the supervisor and the coordinator know nothing of ssh.
    Rule(
        "ifmemd.remote",
        (*BASE, "ifmemd.wire.", *(f"ifmemd.{m}" for m in ("config", "pipewriter", "supervisor"))),
    ),
    Rule("ifmemd.daemon", (*TOP, "ifmemd.remote")),
    # The composition at the top may use every package, but not the set-up commands.
    Rule("ifmemd.", TOP),
)
SETUP_ONLY = ("ifmemd.system.install", "ifmemd.system.doctor")


def module_name(path: Path) -> str:
    rel = path.relative_to(DAEMON if path.is_relative_to(DAEMON) else CLI).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in the file, names of `from X import name` included."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # `from ifmemd.log import eventlog` imports the module ifmemd.log.eventlog.
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def is_module(target: str) -> bool:
    where = DAEMON / target.replace(".", "/")
    return where.with_suffix(".py").exists() or (where / "__init__.py").exists()


def violations(path: Path, me: str | None = None) -> list[str]:
    me = me or module_name(path)
    rule = next(r for r in RULES if r.holds(me))
    bad = []
    for line, target in imports_of(path):
        if target == "ifmem" or target.startswith("ifmem."):
            bad.append(f"{path.name}:{line}: {me} imports the CLI ({target})")
        elif target.startswith("ifmemd.") and is_module(target) and not rule.admits(target):
            bad.append(f"{path.name}:{line}: {me} may not import {target}")
    return bad


DAEMON_FILES = sorted((DAEMON / "ifmemd").rglob("*.py"))


@pytest.mark.parametrize("path", DAEMON_FILES, ids=lambda p: module_name(p))
def test_imports_follow_the_layering(path: Path) -> None:
    assert violations(path) == []


def test_only_the_cli_imports_the_setup_commands() -> None:
    bad = [
        f"{p.relative_to(ROOT)}:{line}: {target}"
        for p in DAEMON_FILES
        if module_name(p) not in SETUP_ONLY
        for line, target in imports_of(p)
        if target in SETUP_ONLY
    ]
    assert bad == []


EVENTS_SQL = re.compile(r"\b(FROM|INTO|UPDATE|TABLE)\s+events\b", re.IGNORECASE)


def test_only_the_log_touches_the_events_table() -> None:
    outside = [
        p
        for p in [
            *DAEMON_FILES,
            *sorted((CLI / "ifmem").rglob("*.py")),
            *sorted((ROOT / "bench").glob("*.py")),
        ]
        # The event-log benchmark's baselines are bare SQLite on purpose: they
        # measure the store without the log's code, in a file of their own.
        if p != ROOT / "bench" / "eventlog.py"
        and not p.is_relative_to(DAEMON / "ifmemd" / "log")
    ]
    bad = [
        f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
        for p in outside
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if EVENTS_SQL.search(line)
    ]
    assert bad == []


def test_the_rules_catch_a_forbidden_import(tmp_path: Path) -> None:
    """The checker itself: a log module that imports a shard module, or the CLI, is reported."""
    source = (DAEMON / "ifmemd" / "log" / "state.py").read_text()
    planted = tmp_path / "state.py"
    planted.write_text(source)
    assert violations(planted, "ifmemd.log.state") == []
    lines = len(source.splitlines())
    planted.write_text(source + "from ifmemd.shards.index import Index\nimport ifmem.client\n")
    assert violations(planted, "ifmemd.log.state") == [
        f"state.py:{lines + 1}: ifmemd.log.state may not import ifmemd.shards.index",
        f"state.py:{lines + 2}: ifmemd.log.state imports the CLI (ifmem.client)",
    ]
