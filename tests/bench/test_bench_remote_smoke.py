"""Smoke test of bench/remote.py: the quick run starts three daemons and an sshd, prints its table.

No timing is asserted: this only proves the benchmark still runs end to end.
"""

from __future__ import annotations

import pytest
from benchrun import QuickRunner
from sshd import sshd_binary

pytestmark = pytest.mark.slow


@pytest.mark.timeout(180)
def test_quick_run_prints_the_table(quick_run: QuickRunner) -> None:
    sshd_binary()  # skips without OpenSSH, fails under CI
    proc = quick_run("remote.py")
    for metric in (
        "ask p50, 1 client, via ssh",
        "ask p99, 1 client, via ssh",
        "asks/s, 32 clients, via ssh",
    ):
        assert metric in proc.stdout, f"{metric!r} missing from:\n{proc.stdout}"
    assert "same passages both ways: True" in proc.stdout
    doc = proc.doc
    assert doc["mode"] == "quick" and len(doc["results"]) == 3
    assert "error" not in doc["details"], doc["details"].get("error")
