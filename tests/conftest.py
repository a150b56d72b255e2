"""Shared fixtures: every test gets its own HOME and XDG directories."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ifmemd.log.eventlog import EventLog
from ifmemd.log.keys import Signer, load_or_create_signer


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point HOME and every XDG directory into tmp_path, so no test touches the real ones."""
    home = tmp_path / "home"
    runtime = tmp_path / "run"
    for d in (home, runtime):
        d.mkdir(mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local/share"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local/state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    for var in ("IFMEM_CONFIG", "IFMEM_SOCKET"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return load_or_create_signer(tmp_path / "keys" / "signing.key")


@pytest.fixture
def log(tmp_path: Path, signer: Signer) -> Iterator[EventLog]:
    elog = EventLog.open(tmp_path / "data" / "events.db", signer)
    yield elog
    elog.close()
