"""The event-log benchmark runs end to end (`--quick`) and prints its table.

No timing is asserted: a benchmark reports, and a shared CI machine's numbers
mean nothing. This only keeps the script from rotting as the library changes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from benchrun import QuickRunner


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_eventlog_bench_quick_runs_and_prints_the_table(
    quick_run: QuickRunner, tmp_path: Path
) -> None:
    proc = quick_run("eventlog.py", "--cache-dir", str(tmp_path / "cache"), timeout=280)
    header = "metric  "
    assert any(line.startswith(header) for line in proc.stdout.splitlines()), proc.stdout
    for metric in ("append, 32 producers", "replay: check_chain", "verify jobs=1", "start-up"):
        assert metric in proc.stdout
    doc = proc.doc
    assert doc["mode"] == "quick"
    assert {r["metric"] for r in doc["results"]} >= {"verify scaling, jobs=2 / jobs=1"}
