"""Smoke test of bench/llm_cost.py: the quick run asks a real daemon and prints its ratio.

The 15% target is not asserted (the quick run has too few questions to amortise
the cache writes); that the log's tokens equal what the fake API billed is.
"""

from __future__ import annotations

import pytest
from benchrun import QuickRunner

pytestmark = pytest.mark.slow


@pytest.mark.timeout(180)
def test_quick_run_reports_the_ratio(quick_run: QuickRunner) -> None:
    proc = quick_run("llm_cost.py")
    assert "ifmem / naive" in proc.stdout
    result = proc.doc
    assert result["log_matches_api"] is True
    assert result["model_calls"] <= 2 * result["questions"]  # route_top_n = 2
    assert result["missing"] == 0 and result["failed_calls"] == 0
    assert 0 < result["ratio"] < result["routing_ratio"] <= 0.5 + 1e-9
    # The coverage ratio, off then on, over the same questions: never more calls with it.
    off, on = result["coverage_ratio"]["off"], result["coverage_ratio"]["on"]
    assert on["model_calls"] <= off["model_calls"]
    assert result["coverage_ratio"]["saved_calls"] == off["model_calls"] - on["model_calls"]
    assert 0 < on["hits"]["questions"] == off["hits"]["questions"]
