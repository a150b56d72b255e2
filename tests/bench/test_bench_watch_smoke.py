"""The watch benchmark runs end to end (`--quick`), prints its table, and every row has a value.

No timing is asserted: a benchmark reports, and a shared machine's numbers mean
nothing. This keeps the script from rotting as the daemon changes (it needs git,
to extract the baseline code and for its checkout storm).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "watch.py"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_watch_bench_quick_runs_and_prints_the_table(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=580,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "ABORTED" not in proc.stdout, proc.stdout
    assert any(line.startswith("metric  ") for line in proc.stdout.splitlines()), proc.stdout
    results = json.loads(out.read_text())["results"]
    assert len(results) == 11
    assert all(r["value"] is not None for r in results), results
