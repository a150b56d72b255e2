"""The socket's location, worked out with and without pathlib, is the same."""

from __future__ import annotations

import os

import pytest
from ifmemd.system import paths


@pytest.mark.parametrize(
    "env",
    [
        {"IFMEM_SOCKET": "/tmp/x/ifmem.sock"},
        {"XDG_RUNTIME_DIR": "/run/user/1000"},
        {"XDG_RUNTIME_DIR": "/run/user/1000/"},
        {},
    ],
)
def test_socket_location_is_socket_path(monkeypatch: pytest.MonkeyPatch, env: dict) -> None:
    for var in ("IFMEM_SOCKET", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert paths.socket_location() == str(paths.socket_path())
    if not env:
        assert paths.socket_location() == f"/run/user/{os.getuid()}/ifmem/ifmem.sock"
