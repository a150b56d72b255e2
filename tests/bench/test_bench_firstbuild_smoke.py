"""Smoke test of bench/firstbuild.py: the quick run prints its table, and every row has a value.

No timing is asserted (a shared machine's numbers mean nothing); this keeps the
script from rotting as the daemon changes. It needs git, to extract the older codes.
"""

from __future__ import annotations

import pytest
from benchrun import QuickRunner

pytestmark = pytest.mark.slow


@pytest.mark.timeout(300)
def test_quick_run_prints_the_table(quick_run: QuickRunner) -> None:
    proc = quick_run("firstbuild.py", timeout=280)
    assert any(line.startswith("metric  ") for line in proc.stdout.splitlines()), proc.stdout
    results = proc.doc["results"]
    assert len(results) == 4
    assert all(r["value"] is not None and r["baseline"] is not None for r in results), results
    assert all(len(v) == 1 for v in proc.doc["loads"].values()), proc.doc["loads"]
