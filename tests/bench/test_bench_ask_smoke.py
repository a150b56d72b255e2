"""Smoke test of bench/ask.py: the quick run starts a real daemon and prints its table.

No timing is asserted: this only proves the benchmark still runs end to end.
"""

from __future__ import annotations

import os
import shutil

import pytest
from benchrun import QuickRunner

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("rg") is None and not os.environ.get("CI"),
        reason="ripgrep (rg) is not installed: `make bench-setup`",
    ),
]


@pytest.mark.timeout(180)
def test_quick_run_prints_the_table(quick_run: QuickRunner) -> None:
    proc = quick_run("ask.py")
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("metric"))
    assert lines[header].split() == ["metric", "value", "baseline", "ratio", "target", "result"]
    table = "\n".join(lines[header:])
    for metric in (
        "ask p50, 1 client, in daemon",
        "ask p99, 1 client, in daemon",
        "asks/s, 32 clients",
        "`ifmem ask` whole process, median",
        "`python -c pass` (floor)",
        "shard load_ms",
        "shard spawn→ready",
        "shard RSS",
        "scale: ask p99, 1 client",
    ):
        assert metric in table, f"{metric!r} missing from:\n{proc.stdout}"
    assert "targets:" in proc.stdout
    doc = proc.doc
    assert doc["mode"] == "quick"
    assert doc["results"], doc
    assert "error" not in doc["details"], doc["details"].get("error")
