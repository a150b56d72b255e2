"""Smoke test of bench/remote.py: the quick run starts three daemons and an sshd, prints its table.

No timing is asserted: this only proves the benchmark still runs end to end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sshd import sshd_binary

BENCH = Path(__file__).resolve().parents[2] / "bench" / "remote.py"

pytestmark = pytest.mark.slow


@pytest.mark.timeout(180)
def test_quick_run_prints_the_table(tmp_path: Path) -> None:
    sshd_binary()  # skips without OpenSSH, fails under CI
    out = tmp_path / "remote.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "benchmark aborted" not in proc.stderr, proc.stderr
    for metric in (
        "ask p50, 1 client, via ssh",
        "ask p99, 1 client, via ssh",
        "asks/s, 32 clients, via ssh",
    ):
        assert metric in proc.stdout, f"{metric!r} missing from:\n{proc.stdout}"
    assert "same passages both ways: True" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["mode"] == "quick" and len(doc["results"]) == 3
    assert "error" not in doc["details"], doc["details"].get("error")
