"""Smoke test of bench/logsize.py: the quick run measures both encodings and a short year.

No size or time target is asserted (the quick corpus is small); that the new
encoding writes fewer events, and that the simulated log seals, prunes and
verifies, is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "logsize.py"

pytestmark = pytest.mark.slow


@pytest.mark.timeout(240)
def test_quick_run_measures_before_and_after(tmp_path: Path) -> None:
    out = tmp_path / "logsize.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--days", "3", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=230,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "sealed + zstd MB/day" in proc.stdout
    doc = json.loads(out.read_text())
    before, after = doc["sizes"]["before"], doc["sizes"]["after"]
    assert (before["events_per_ask"], after["events_per_ask"]) == (doc["sizes"]["shards"] + 2, 2)
    assert after["events_per_round"] == 1
    assert after["live_mb_per_day"] < before["live_mb_per_day"]
    assert after["sealed_zstd_mb_per_day"] < after["live_mb_per_day"]
    year = doc["year"]
    assert year["segments"] >= 1 and year["pruned_segments"] >= 1
    assert year["verify_ok"] and year["verify_note"].startswith("verified from seq ")
    assert year["replayed"] == 1000
