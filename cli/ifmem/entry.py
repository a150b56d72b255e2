"""The `ifmem` console script: the fast path first, typer for everything else."""

from __future__ import annotations

import sys


def main() -> None:
    from ifmem import fast
    from ifmem.closedpipe import quiet_on_closed_stdout

    with quiet_on_closed_stdout():
        if fast.run(sys.argv[1:]):
            return
    from ifmem.main import app

    app()
