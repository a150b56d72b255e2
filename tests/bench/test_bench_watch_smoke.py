"""Smoke test of bench/watch.py: the quick run prints its table, and every row has a value.

No timing is asserted: a benchmark reports, and a shared machine's numbers mean
nothing. This keeps the script from rotting as the daemon changes (it needs git,
to extract the baseline code and for its checkout storm).
"""

from __future__ import annotations

import pytest
from benchrun import QuickRunner

pytestmark = pytest.mark.slow


@pytest.mark.timeout(300)
def test_quick_run_prints_the_table(quick_run: QuickRunner) -> None:
    proc = quick_run("watch.py", timeout=280)
    assert "ABORTED" not in proc.stdout, proc.stdout
    assert any(line.startswith("metric  ") for line in proc.stdout.splitlines()), proc.stdout
    results = proc.doc["results"]
    assert len(results) == 11
    # A NaN (written as null) would mean a part measured nothing, e.g. no ask during the storm.
    assert all(r["value"] is not None for r in results), results
