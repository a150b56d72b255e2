"""The event-log benchmark runs end to end (`--quick`) and prints its table.

No timing is asserted: a benchmark reports, and a shared CI machine's numbers
mean nothing. This only keeps the script from rotting as the library changes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "eventlog.py"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_eventlog_bench_quick_runs_and_prints_the_table(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--quick",
            "--json",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    header = "metric  "
    assert any(line.startswith(header) for line in proc.stdout.splitlines()), proc.stdout
    for metric in ("append, 32 producers", "replay: check_chain", "verify jobs=1", "start-up"):
        assert metric in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["mode"] == "quick"
    assert {r["metric"] for r in doc["results"]} >= {"verify scaling, jobs=2 / jobs=1"}
