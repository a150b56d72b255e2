"""The one error hierarchy of ifmem.

Every error ifmem raises on purpose derives from `IfmemError`. Each subclass
builds its message in `__init__` from the state it was given, so messages read
the same wherever they are raised: the operation, what went wrong, and what
follows for the user.
"""

from __future__ import annotations

# Annotations only: pathlib (and the `re` it imports) is loaded when an error
# that names a file is raised, not by `ifmem ask` at every start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path


class IfmemError(Exception):
    """Base class of every error ifmem raises on purpose."""

    def __new__(cls, *args: object, **kwargs: object) -> IfmemError:
        self = super().__new__(cls, *args)
        self._init_args = (args, kwargs)
        return self

    def __reduce__(self) -> tuple[object, ...]:
        # Subclasses build their message from their own arguments, so rebuild
        # from those (errors cross process boundaries in `audit verify`).
        args, kwargs = self._init_args
        return (_rebuild, (type(self), args, kwargs))


def _path(path: Path | str) -> Path:
    from pathlib import Path

    return Path(path)


def _rebuild(cls: type[IfmemError], args: tuple[object, ...], kwargs: dict) -> IfmemError:
    return cls(*args, **kwargs)


class StoreError(IfmemError):
    """Raised when the event log's SQLite file cannot be opened, read or written."""

    def __init__(self, operation: str, path: Path | str, reason: str) -> None:
        self.operation = operation
        self.path = _path(path)
        self.reason = reason
        super().__init__(f"{operation}: {path}: {reason}")


class NotAnEventLogError(StoreError):
    """Raised when a file exists but is not an ifmem event log of a format we read."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__("open event log", path, f"not an ifmem event log ({reason})")


class LogMissingError(StoreError):
    """Raised when a read-only command is pointed at an event log that does not exist."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(
            "open event log",
            path,
            "no such file; start the daemon once (`ifmem daemon`) or name a log with --db",
        )


class KeyFileError(IfmemError):
    """Raised when the signing key cannot be read, created, or is not private."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = _path(path)
        self.reason = reason
        super().__init__(f"signing key {path}: {reason}")


class LogInUseError(StoreError):
    """Raised when a daemon would start on a log another process holds."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(
            "lock event log",
            path,
            "another ifmemd writes this log (or `ifmem log seal|prune` works on it): "
            "one daemon a log; stop the other, or give this one its own --db",
        )


class LogLockedError(StoreError):
    """Raised when `ifmem log seal|prune` would change the log files while a daemon uses them."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(
            "lock event log",
            path,
            "a running ifmemd has this log open; seal or prune through it "
            "(is its socket elsewhere? pass --socket), or stop it first",
        )


class NothingToPruneError(IfmemError):
    """Raised when `ifmem log prune` finds no sealed segment wholly before its bound."""

    def __init__(self, before_seq: int | None, before_ns: int | None, oldest: str | None) -> None:
        bound = f"seq {before_seq}" if before_seq is not None else f"time {before_ns} ns"
        where = (
            f"the oldest sealed segment, {oldest}, does not end before {bound}"
            if oldest is not None
            else "there is no sealed segment (`ifmem log seal` makes one)"
        )
        super().__init__(
            f"prune before {bound}: nothing to delete: {where}; only whole sealed segments "
            "are pruned, the live file never"
        )


class ChainError(IfmemError):
    """Raised when replay finds a row whose hash chain does not hold."""

    def __init__(self, seq: int, reason: str) -> None:
        self.seq = seq
        self.reason = reason
        super().__init__(
            f"event log is damaged at seq {seq}: {reason}; "
            "run `ifmem audit verify` for the full report"
        )


class UnknownEventError(IfmemError):
    """Raised when the log holds an event kind or version this ifmem does not know."""

    def __init__(self, seq: int, kind: str, reason: str) -> None:
        self.seq = seq
        self.kind = kind
        super().__init__(f"event {seq} ({kind}): {reason}")


class CheckpointError(IfmemError):
    """Raised when a checkpoint line cannot be parsed or its signature does not hold."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"checkpoint {where}: {reason}")
