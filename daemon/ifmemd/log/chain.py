"""One log read across its sealed segments and its live file.

`LogChain` gives the reading side of `EventLog` (rows, records, one record,
the head, the keys) over every part of a log in seq order: the sealed
segments beside the live file, then the live file. Parts are opened only when
a read reaches them; a compressed segment is decompressed into a private
temporary folder (0700, its files 0600) removed on close. Sealed parts are
opened immutable: nothing writes them any more.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ifmemd.errors import LogMissingError, StoreError
from ifmemd.log import segments
from ifmemd.log.eventlog import EventLog, Record
from ifmemd.log.logformat import ZERO_HASH
from ifmemd.log.segments import Segment


class LogChain:
    """The sealed segments and the live file of one log, read as one log."""

    def __init__(self, live_path: Path) -> None:
        self.path = live_path
        self._tmp: Path | None = None
        self._open: dict[Path, EventLog] = {}
        self._plain: dict[Path, Path] = {}
        self.live: EventLog | None = None
        self._live_ino = 0
        self._load()

    @classmethod
    def open(cls, live_path: Path) -> LogChain:
        return cls(live_path)

    def _load(self) -> None:
        self.segments = segments.list_segments(self.path)
        try:
            self.live = EventLog.open_readonly(self.path)
            self._live_ino = os.stat(self.path).st_ino
        except LogMissingError:
            # Between a seal's move and its new live file: the segments are the log.
            if not self.segments:
                raise
            self.live = None
        if self.live is not None:
            self.log_id = self.live.log_id
        else:
            self.log_id = self.part(self.segments[-1]).log_id
        self._read_head()

    def _read_head(self) -> None:
        last = self.live if self.live is not None and self.live.head_seq else None
        if last is None and self.segments:
            last = self.part(self.segments[-1])
        if last is None:
            self.head_seq, self.head_hash, self.head_ts = 0, ZERO_HASH, 0
        else:
            self.head_seq, self.head_hash, self.head_ts = (
                last.head_seq,
                last.head_hash,
                last.head_ts,
            )

    # -- parts -------------------------------------------------------------------

    def readable_path(self, segment: Segment) -> Path:
        """A plain SQLite file holding `segment` (a temporary copy if it is compressed)."""
        if not segment.compressed:
            return segment.path
        plain = self._plain.get(segment.path)
        if plain is None:
            if self._tmp is None:
                self._tmp = Path(tempfile.mkdtemp(prefix="ifmem-segments-"))
            plain = self._plain[segment.path] = segments.decompress_to(segment, self._tmp)
        return plain

    def part(self, segment: Segment) -> EventLog:
        """The open sealed segment `segment`."""
        log = self._open.get(segment.path)
        if log is None:
            log = self._open[segment.path] = EventLog.open_readonly(
                self.readable_path(segment), immutable=True
            )
        return log

    def _parts(self, after: int, upto: int | None) -> Iterator[EventLog]:
        """The parts that may hold seqs in (after, upto], in order."""
        for segment in self.segments:
            if segment.last > after and (upto is None or segment.first <= upto):
                yield self.part(segment)
        if self.live is not None:
            yield self.live

    @property
    def first_seq(self) -> int:
        """The lowest seq the log still holds (above 1 once segments were pruned)."""
        if self.segments:
            return self.segments[0].first
        return self.live.first_seq if self.live is not None else 1

    @property
    def first_prev(self) -> bytes:
        """The `prev` of the lowest row held: zeros for seq 1, else the hash it continues."""
        parts = self._parts(0, None)
        for part in parts:
            row = part.first_row()
            if row is not None:
                return row.prev
        return ZERO_HASH

    def first_row_after(self, segment: Segment) -> Record:
        """The first row of the part after `segment` (the next segment, or the live file)."""
        later = [s for s in self.segments if s.first > segment.first]
        part = self.part(later[0]) if later else self.live
        row = part.first_row() if part is not None else None
        if row is None:
            raise StoreError("read sealed segments", self.path, f"nothing follows {segment.name}")
        return row

    def reload_segments(self) -> None:
        """List the segments afresh (one was compressed, or pruned)."""
        for log in self._open.values():
            log.close()
        self._open.clear()
        self.segments = segments.list_segments(self.path)

    # -- reading (as EventLog) ---------------------------------------------------

    def rows(self, after: int = 0, upto: int | None = None) -> Iterator[tuple[Any, ...]]:
        for part in self._parts(after, upto):
            yield from part.rows(after, upto)

    def records(self, after: int = 0, upto: int | None = None) -> Iterator[Record]:
        for part in self._parts(after, upto):
            yield from part.records(after, upto)

    def record(self, seq: int) -> Record | None:
        for part in self._parts(seq - 1, seq):
            found = part.record(seq)
            if found is not None:
                return found
        return None

    def kind_rows(self, kind: str) -> Iterator[Record]:
        for part in self._parts(0, None):
            yield from part.kind_rows(kind)

    def public_keys(self) -> dict[str, bytes]:
        """Every public key the live file names (a seal copies the keys into it),
        or the newest segment's when there is no live file."""
        if self.live is not None:
            return self.live.public_keys()
        return self.part(self.segments[-1]).public_keys()

    def sealed_meanwhile(self) -> bool:
        """Whether the live file was moved away (sealed) or replaced since it was opened."""
        try:
            return os.stat(self.path).st_ino != self._live_ino
        except FileNotFoundError:
            return self.live is not None

    def refresh_head(self) -> None:
        """Re-read the head; reopen the parts if the live file was sealed meanwhile."""
        if self.sealed_meanwhile():
            self._close_parts()
            self._load()
        elif self.live is not None:
            self.live.refresh_head()
            self._read_head()

    def data_version(self) -> int:
        return self.live.data_version() if self.live is not None else 0

    # -- closing -----------------------------------------------------------------

    def _close_parts(self) -> None:
        for log in self._open.values():
            log.close()
        self._open.clear()
        if self.live is not None:
            self.live.close()
            self.live = None

    def close(self) -> None:
        self._close_parts()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
            self._plain.clear()

    def __enter__(self) -> LogChain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
