"""The systemd user units, rendered for wherever ifmem is installed.

`systemd/ifmem.service` and `systemd/ifmem.socket` in the repository are these
renderings for a packaged install (`ExecStart=/usr/bin/ifmemd`); `ifmem init`
renders them with the interpreter that is actually running.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

SERVICE = "ifmem.service"
SOCKET = "ifmem.socket"

_SERVICE_TEMPLATE = """\
[Unit]
Description=ifmem: memory shards for LLM agents, with a signed event log
Documentation=man:ifmemd(8) man:ifmem(1) man:ifmem.toml(5) man:ifmem-log(5)
Requires=ifmem.socket
After=ifmem.socket
# More than 5 failed starts in 60 s: give up until `systemctl --user reset-failed ifmem`.
StartLimitIntervalSec=60
StartLimitBurst=5

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=1
WatchdogSec=30
TimeoutStartSec=120
TimeoutStopSec=30
# Hardening a user unit can carry without privileges.
UMask=0077
NoNewPrivileges=yes
LockPersonality=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
SystemCallArchitectures=native

[Install]
WantedBy=default.target
"""

_SOCKET_TEMPLATE = """\
[Unit]
Description=ifmem daemon socket (the first `ifmem ask` starts ifmem.service)
Documentation=man:ifmemd(8)

[Socket]
ListenStream=%t/ifmem/ifmem.sock
SocketMode=0600
DirectoryMode=0700

[Install]
WantedBy=sockets.target
"""


def render_service(command: Sequence[str]) -> str:
    """The service unit, running `command` (its argv) as it is."""
    return _SERVICE_TEMPLATE.format(exec_start=command_line(command))


def command_line(argv: Sequence[str]) -> str:
    """`argv` as systemd reads a command line back into the same words
    (systemd.service(5), "Command lines"): a word holding a space or a quote is
    quoted, and backslashes, quotes, `%` (specifiers) and `$` (variables) are
    escaped, so that an install under "~/odd dir" runs."""
    words = []
    for arg in argv:
        word = arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
        word = word.replace("$", "$$")
        quote = not arg or any(c.isspace() for c in arg) or '"' in arg or "'" in arg
        words.append(f'"{word}"' if quote else word)
    return " ".join(words)


def render_socket() -> str:
    return _SOCKET_TEMPLATE


def user_unit_dir() -> Path:
    """Where a user's own units live: `$XDG_CONFIG_HOME/systemd/user`."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"
