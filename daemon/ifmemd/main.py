"""`ifmemd`: run the daemon in the foreground (what systemd's ExecStart runs)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import anyio

from ifmemd import __version__
from ifmemd.errors import IfmemError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ifmemd", description="The ifmem memory daemon.")
    p.add_argument(
        "--config",
        type=Path,
        help="config file (default: $IFMEM_CONFIG or ~/.config/ifmem/ifmem.toml)",
    )
    p.add_argument(
        "--socket",
        type=Path,
        help="socket path (default: $IFMEM_SOCKET or $XDG_RUNTIME_DIR/ifmem/ifmem.sock)",
    )
    p.add_argument("--db", type=Path, help="event log (default: ~/.local/share/ifmem/events.db)")
    p.add_argument("--version", action="version", version=f"ifmemd {__version__}")
    return p


def run(config: Path | None = None, socket: Path | None = None, db: Path | None = None) -> int:
    """Run a daemon until it is stopped; the exit status for the process."""
    from ifmemd.daemon import Daemon, Options

    try:
        daemon = Daemon(Options(config=config, socket=socket, db=db))
        anyio.run(daemon.run)
    except IfmemError as e:
        print(f"ifmemd: {e}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as group:
        # An IfmemError raised inside the daemon's task group arrives wrapped:
        # report it like any other, and let anything else (a bug) propagate.
        ours, rest = group.split(IfmemError)
        if ours is None or rest is not None:
            raise
        for e in _leaves(ours):
            print(f"ifmemd: {e}", file=sys.stderr)
        return 1
    return 0


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for e in group.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out


def main() -> None:
    # Until the daemon reads signals (`Daemon.run`), a SIGHUP (reload) has no
    # config to reload yet: ignored, not the end of a daemon starting.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    args = parser().parse_args()
    sys.exit(run(args.config, args.socket, args.db))


if __name__ == "__main__":
    main()
