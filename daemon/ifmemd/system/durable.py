"""The one way ifmem writes a file that must survive a crash.

`write_atomic` writes a temporary file beside the target, fsyncs it, renames
it over the target and fsyncs the directory, so a reader sees the old file or
the new one, never a torn mix. `append_line` appends to an append-only text
file and fsyncs it. The `fsync` and `open` hooks are module attributes so
tests can inject ENOSPC and other faults.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

fsync: Callable[[int], None] = os.fsync
os_open: Callable[..., int] = os.open


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) if missing; a directory we create is mode 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _fsync_dir(path: Path) -> None:
    fd = os_open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make the entries of directory `path` (a rename, a new file) durable."""
    _fsync_dir(path)


def write_atomic(path: Path, data: bytes, mode: int = 0o600, *, exclusive: bool = False) -> None:
    """Replace `path` with `data` durably; the file is created with `mode`.

    With `exclusive`, an existing `path` is left alone and FileExistsError raised.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os_open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        if exclusive:
            # link() fails if the target exists: two racing creators cannot
            # both win, unlike rename().
            os.link(tmp, path)
            tmp.unlink()
        else:
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def append_line(path: Path, line: str, mode: int = 0o600) -> None:
    """Append one line to an append-only text file and make it durable."""
    new = not path.exists()
    fd = os_open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, mode)
    try:
        data = (line.rstrip("\n") + "\n").encode("utf-8")
        end = os.fstat(fd).st_size
        try:
            # One write call: O_APPEND makes it land whole at the end even if
            # another process appends too.
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(f"short write appending to {path} ({written} of {len(data)} bytes)")
            fsync(fd)
        except BaseException:
            # A torn line (disk full) or one not made durable must not stay:
            # the next line would be glued to it and neither could be read.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, end)
            raise
    finally:
        os.close(fd)
    if new:
        _fsync_dir(path.parent)
