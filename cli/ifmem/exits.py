"""Exit codes and the one place library errors become messages (DESIGN.md: CLI)."""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing costs the fast path ~2 ms: annotations only
if TYPE_CHECKING:
    from typing import NoReturn

OK = 0
FAILURE = 1
USAGE = 2
UNREACHABLE = 3
CLOSED_STDOUT = 141  # 128 + SIGPIPE: what a shell reports for `git log | head` (closedpipe.py)


def fail(message: str, code: int = FAILURE) -> NoReturn:
    """Print `ifmem: message` to stderr and exit with `code`.

    SystemExit rather than typer.Exit: the fast client path runs without typer.
    """
    print(f"ifmem: {message}", file=sys.stderr)
    raise SystemExit(code)
