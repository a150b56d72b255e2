"""The unit files in systemd/ are exactly what `ifmem init` renders for a packaged install."""

from __future__ import annotations

from pathlib import Path

from ifmemd.system import units

ROOT = Path(__file__).resolve().parents[2]


def test_repository_units_match_the_renderer() -> None:
    assert (ROOT / "systemd" / units.SERVICE).read_text() == units.render_service(
        ["/usr/bin/ifmemd"]
    )
    assert (ROOT / "systemd" / units.SOCKET).read_text() == units.render_socket()


def test_service_contract() -> None:
    text = units.render_service(["/x/python", "-m", "ifmemd"])
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ExecStart=/x/python -m ifmemd",
    ):
        assert line in text.splitlines()
    assert any(line.startswith("WatchdogSec=") for line in text.splitlines())
    sock = units.render_socket().splitlines()
    for line in ("ListenStream=%t/ifmem/ifmem.sock", "SocketMode=0600", "DirectoryMode=0700"):
        assert line in sock


def test_a_command_line_holds_its_words_as_systemd_reads_them() -> None:
    line = units.command_line(["/home/a b/.venv/bin/python", "-m", "ifmemd", "50%", "$HOME", 'x"y'])
    assert line == '"/home/a b/.venv/bin/python" -m ifmemd 50%% $$HOME "x\\"y"'
    assert units.command_line(["/usr/bin/ifmemd"]) == "/usr/bin/ifmemd"
