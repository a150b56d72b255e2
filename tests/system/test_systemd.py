"""ifmem under a real systemd user manager (../shared/tools/systemd-sandbox)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SANDBOX = ROOT.parent / "shared" / "tools" / "systemd-sandbox"
SANDBOX_UNAVAILABLE = 77


@pytest.mark.systemd
@pytest.mark.slow
def test_ifmem_under_systemd() -> None:
    if not SANDBOX.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{SANDBOX} is missing; under CI the systemd test must run")
        pytest.skip(f"{SANDBOX} is missing")
    done = subprocess.run(
        [str(SANDBOX), "--", sys.executable, str(ROOT / "tests" / "systemd_scenario.py")],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    if done.returncode == SANDBOX_UNAVAILABLE and not os.environ.get("CI"):
        pytest.skip(f"systemd sandbox unavailable here: {done.stderr.strip()}")
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "all steps passed" in done.stdout
