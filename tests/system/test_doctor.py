"""`ifmem doctor`: what it finds, and the fix it names."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from ifmemd.log.eventlog import EventLog
from ifmemd.log.keys import load_or_create_signer
from ifmemd.system import doctor, paths


def check(name: str) -> doctor.Check:
    return next(c for c in doctor.run_checks() if c.name == name)


@pytest.fixture
def live_log() -> Path:
    """A log at the default path, open while the test looks (so its -wal and -shm exist)."""
    signer = load_or_create_signer(paths.key_path())
    path = paths.log_path()
    EventLog.open(path, signer).close()
    return path


def test_private_log_files_pass(live_log: Path) -> None:
    found = check("files")
    assert found.verdict == doctor.OK, found


def test_a_log_file_others_can_read_is_named_with_its_chmod(live_log: Path) -> None:
    checkpoints = paths.checkpoints_path()
    checkpoints.parent.mkdir(parents=True, exist_ok=True)
    checkpoints.write_text("")
    # As an older ifmem, or a copy under umask 022, left them.
    for p in (live_log, checkpoints):
        os.chmod(p, 0o644)
    found = check("files")
    assert found.verdict == doctor.WARN
    assert f"{live_log} (0644)" in found.detail and f"{checkpoints} (0644)" in found.detail
    # (Its -wal and -shm too, when they exist: SQLite gives them the main file's mode.)
    assert found.fix.startswith(f"chmod go-rwx {live_log} ")
    assert found.fix.endswith(f" {checkpoints}")
    assert subprocess.run(found.fix.split(), check=False).returncode == 0  # the fix it names works
    assert stat.S_IMODE(live_log.stat().st_mode) == 0o600
    assert check("files").verdict == doctor.OK
