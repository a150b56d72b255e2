"""Stop quietly when the reader of stdout goes away (`ifmem log | head`), as git and rg do.

Python ignores SIGPIPE, so a write to a closed pipe raises BrokenPipeError: a
traceback, or with click the failure status 1. Unix tools end with 141, the
status of death by SIGPIPE, which `set -o pipefail` scripts expect. SIGPIPE is
not given back its default action for the whole process instead: a write to
the daemon's socket after the daemon hung up must stay an error the client
reports, not kill it. No typer here: the fast path (`fast.py`) uses this too.
"""

from __future__ import annotations

import io
import os
import select
import sys

from ifmem.exits import CLOSED_STDOUT

# Annotations only: `ifmem ask` imports this module, and must start fast.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import TracebackType
    from typing import Any, NoReturn

_GONE = select.POLLERR | select.POLLHUP


def _fileno(stream: Any) -> int | None:
    try:
        return int(stream.fileno())
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return None  # not a file: typer's CliRunner, a closed stream


def _reader_gone(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, 0)  # POLLERR and POLLHUP are reported without being asked for
    return any(events & _GONE for _, events in poller.poll(0))


def stdout_closed() -> bool:
    """True when stdout is a pipe or socket whose reader has gone."""
    fd = _fileno(sys.stdout)
    return fd is not None and _reader_gone(fd)


def exit_quietly() -> NoReturn:
    """End with status 141 and no message.

    Whatever is still buffered for the closed stdout (or stderr, with `2>&1 |`)
    would fail again at interpreter exit with "Exception ignored…": those
    descriptors are pointed at /dev/null first.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        fd = _fileno(stream)
        if fd is not None and _reader_gone(fd):
            os.dup2(devnull, fd)
    os.close(devnull)
    raise SystemExit(CLOSED_STDOUT)


def quiet_on_closed_stdout() -> _QuietOnClosedStdout:
    """Run a command; if stdout's reader has gone, end with 141 instead of a traceback.

    stdout is flushed on the way out, so output still buffered when the
    command returns meets the closed pipe here and not at interpreter exit.
    A BrokenPipeError with stdout still open (a socket's, say) is not ours to
    hide and propagates.
    """
    return _QuietOnClosedStdout()


class _QuietOnClosedStdout:
    """`quiet_on_closed_stdout`; a class, not `contextlib.contextmanager`:
    contextlib and what it imports cost the fast path ~1 ms."""

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            if not stdout_closed():
                raise
            exit_quietly()
        if isinstance(error, BrokenPipeError) and stdout_closed():
            exit_quietly()
        # rich (typer's --help) handles a broken pipe itself: it points stdout
        # at /dev/null and exits 1 from inside its `except BrokenPipeError`.
        if (
            isinstance(error, SystemExit)
            and isinstance(error.__context__, BrokenPipeError)
            and error.code == 1
        ):
            raise SystemExit(CLOSED_STDOUT) from None
        return False


def exit_when_stdout_closes() -> None:
    """End the process (141) as soon as stdout's reader goes, even if nothing more is written.

    For `ifmem log --follow | head`: like `tail -f`, a follower waiting on a
    quiet log would otherwise live on until the next event. The main thread may
    be blocked reading the daemon's socket, so a watcher thread ends the
    process itself; there is nothing to clean up (the log is open read-only,
    and what was printed went with the reader).
    """
    import threading

    fd = _fileno(sys.stdout)
    if fd is None:
        return

    def watch() -> None:
        poller = select.poll()
        poller.register(fd, 0)
        poller.poll()  # until POLLERR or POLLHUP: never for a file, for a tty at hang-up
        os._exit(CLOSED_STDOUT)

    threading.Thread(target=watch, name="stdout-watch", daemon=True).start()
