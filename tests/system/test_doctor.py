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


def write_config(text: str) -> Path:
    from ifmemd.config import default_config_path

    path = default_config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


CLAUDE_SHARD = '[[shard]]\nname = "docs"\npaths = ["~/notes/*.md"]\nbackend = "anthropic"\n'


def test_a_claude_shard_without_a_model_gets_the_line_to_add(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    path = write_config(CLAUDE_SHARD)
    found = check("config")
    assert found.verdict == doctor.FAIL
    assert "shard 'docs'" in found.detail and "needs a model" in found.detail
    assert 'model = "claude-sonnet-4-5"' in found.fix
    assert "[anthropic]" in found.fix and str(path) in found.fix

    # The line it names, added where it says, is all the config lacked.
    write_config(f'[anthropic]\nmodel = "claude-sonnet-4-5"\n\n{CLAUDE_SHARD}')
    assert check("config").verdict == doctor.OK
    assert check("backends").verdict == doctor.OK


def test_an_openai_shard_without_a_model_gets_the_line_to_add() -> None:
    shard = CLAUDE_SHARD.replace("anthropic", "openai")
    write_config(f'[openai]\nbase_url = "http://127.0.0.1:11434/v1"\n\n{shard}')
    found = check("config")
    assert found.verdict == doctor.FAIL
    assert "model = " in found.fix and "[openai]" in found.fix


def test_a_claude_shard_without_a_key_gets_the_line_to_add(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    path = write_config(f'[anthropic]\nmodel = "claude-sonnet-4-5"\n\n{CLAUDE_SHARD}')
    found = check("backends")
    assert found.verdict == doctor.FAIL
    assert "docs" in found.detail and "ANTHROPIC_API_KEY" in found.detail
    assert 'api_key_file = "~/.config/ifmem/anthropic.key"' in found.fix
    assert "[anthropic]" in found.fix and str(path) in found.fix

    # Named but absent: it says to write the key there.
    key = paths_home() / ".config" / "ifmem" / "anthropic.key"
    write_config(
        f'[anthropic]\nmodel = "claude-sonnet-4-5"\napi_key_file = "{key}"\n\n{CLAUDE_SHARD}'
    )
    found = check("backends")
    assert found.verdict == doctor.FAIL
    assert f"{key} does not exist" in found.detail
    assert str(key) in found.fix and "chmod 600" in found.fix

    key.write_text("sk-test\n")
    key.chmod(0o600)
    assert check("backends").verdict == doctor.OK


def paths_home() -> Path:
    return Path(os.environ["HOME"])
