"""Private files: reading a secret one (the signing key, an API key) only its owner may read,
and creating a file only its owner can read, whatever the umask."""

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


def create_private(path: Path | str) -> bool:
    """Create `path` empty with mode 0600 unless it exists; True if this call created it.

    For files another library fills (SQLite derives its -wal and -shm modes
    from the database file's). The mode is set with fchmod, not left to the
    umask, so it is exactly 0600: private even under umask 000, writable even
    under umask 0277.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    return True
