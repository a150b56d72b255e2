"""Smoke test of bench/model_startup.py: a quick run starts this code and the last one.

No time is asserted; what the run must show is structural: this code's Claude
shards are ready before their models, and its first ask names none missing.
"""

from __future__ import annotations

import pytest
from benchrun import QuickRunner

pytestmark = pytest.mark.slow


@pytest.mark.timeout(240)
def test_quick_run_compares_with_the_code_before(quick_run: QuickRunner) -> None:
    proc = quick_run("model_startup.py", "--reps", "1", timeout=230)
    assert "Claude shard spawn→ready" in proc.stdout
    result = proc.doc
    before, now = result["results"].values()
    assert before["runs"] == now["runs"] == 1
    [run] = result["runs"]["this code"]
    claude = [s for name, s in run["shards"].items() if name != "headers"]
    assert all(s["ready_s"] < s["model_s"] for s in claude)
    assert now["first_ask_missing"] == 0 and now["first_ask_from_index"] == 3
