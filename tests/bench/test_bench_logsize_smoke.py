"""Smoke test of bench/logsize.py: the quick run measures both encodings and a short year.

No size or time target is asserted (the quick corpus is small); that the new
encoding writes fewer events, and that the simulated log seals, prunes and
verifies, is.
"""

from __future__ import annotations

import pytest
from benchrun import QuickRunner

pytestmark = pytest.mark.slow


@pytest.mark.timeout(240)
def test_quick_run_measures_before_and_after(quick_run: QuickRunner) -> None:
    proc = quick_run("logsize.py", "--days", "3", timeout=230)
    assert "sealed + zstd MB/day" in proc.stdout
    doc = proc.doc
    before, after = doc["sizes"]["before"], doc["sizes"]["after"]
    assert (before["events_per_ask"], after["events_per_ask"]) == (doc["sizes"]["shards"] + 2, 2)
    assert after["events_per_round"] == 1
    assert after["live_mb_per_day"] < before["live_mb_per_day"]
    assert after["sealed_zstd_mb_per_day"] < after["live_mb_per_day"]
    year = doc["year"]
    assert year["segments"] >= 1 and year["pruned_segments"] >= 1
    assert year["verify_ok"] and year["verify_note"].startswith("verified from seq ")
    assert year["replayed"] == 1000
