"""The `ifmem` console script: the fast path first, typer for everything else."""

from __future__ import annotations

import sys


def main() -> None:
    # A terminal whose encoding cannot show a character (a Latin-1 locale, and
    # "…" or a snippet's "☕") gets it escaped, not a traceback.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    from ifmem import fast
    from ifmem.closedpipe import quiet_on_closed_stdout

    with quiet_on_closed_stdout():
        if fast.run(sys.argv[1:]):
            return
    from ifmem.main import app

    app()
