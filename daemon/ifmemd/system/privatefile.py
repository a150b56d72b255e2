"""Reading a secret file (the signing key, an API key) that only its owner may read."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ifmemd.errors import IfmemError


class NotPrivateError(IfmemError):
    """Raised when a secret file cannot be opened, or others could read it."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def read_private(path: Path | str, limit: int = 64 * 1024) -> bytes:
    """The first `limit` bytes of a secret file, refused (as ssh does) unless only we can read it.

    FileNotFoundError passes through, so callers can create a missing file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise NotPrivateError(path, f"cannot open: {e.strerror}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotPrivateError(path, "not a regular file")
        if st.st_mode & 0o077:
            raise NotPrivateError(
                path,
                f"permissions {stat.S_IMODE(st.st_mode):04o} are too open: group or others "
                f"can read it; run `chmod 600 {path}` (and rotate the key if others may have "
                "read it)",
            )
        if st.st_uid != os.getuid():
            raise NotPrivateError(path, f"owned by uid {st.st_uid}, not by you (uid {os.getuid()})")
        return os.read(fd, limit)
    finally:
        os.close(fd)
