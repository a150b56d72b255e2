"""Smoke test of bench/model_startup.py: a quick run starts this code and the last one.

No time is asserted; what the run must show is structural: this code's Claude
shards are ready before their models, and its first ask names none missing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "model_startup.py"

pytestmark = pytest.mark.slow


@pytest.mark.timeout(240)
def test_quick_run_compares_with_the_code_before(tmp_path: Path) -> None:
    out = tmp_path / "startup.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--reps", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=230,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Claude shard spawn→ready" in proc.stdout
    result = json.loads(out.read_text())
    before, now = result["results"].values()
    assert before["runs"] == now["runs"] == 1
    [run] = result["runs"]["this code"]
    claude = [s for name, s in run["shards"].items() if name != "headers"]
    assert all(s["ready_s"] < s["model_s"] for s in claude)
    assert now["first_ask_missing"] == 0 and now["first_ask_from_index"] == 3
