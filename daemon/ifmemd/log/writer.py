"""Group commit: many concurrent producers, one writer, one transaction per batch.

Producers `await writer.append(kind, body)`; the writer task takes every
event queued since its last commit, appends them in one transaction, and only
then wakes their producers. Events that arrive together share one fsync.
After each commit, committed records are handed to `on_commit` (the live
projection, subscribers) in seq order, each with the fields it was appended
with (so the projection need not parse back what was just encoded), and a
checkpoint is published every `checkpoint_every` events.

Between commits the writer seals the live file into a segment
(`segments.seal`) when it holds `segment_events` events or its first event is
`segment_age_s` old, or when `seal()` asks: appends that arrive meanwhile
wait and go into the new live file. `before_seal` and `after_seal` (given the
new segment, or None if sealing failed) let readers of the live file close
and reopen it.

The transaction runs on the event loop's thread: while it waits for its
fsync (~0.1-0.3 ms), requests that arrive wait in their sockets and then make
up the next batch together. Handing each commit to a worker thread instead
cost more than it saved: ~0.2 ms of wake-ups per commit on a 2-vCPU VM, and
more CPU per ask (bench/README.md). A disk that stops answering stops the
loop, and with it the systemd watchdog's pings: a daemon that cannot record
is not healthy.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus

from ifmemd.errors import IfmemError, StoreError
from ifmemd.log import checkpoint as cp
from ifmemd.log import segments
from ifmemd.log.eventlog import EventLog, Record
from ifmemd.log.events import encode
from ifmemd.log.segments import Segment


@dataclass(slots=True)
class _Batch:
    """Events queued since the last commit; their producers share one wake-up."""

    items: list[tuple[str, bytes]] = field(default_factory=list)
    # The fields each item was encoded from (None for a body appended encoded).
    fields: list[Mapping[str, Any] | None] = field(default_factory=list)
    done: anyio.Event = field(default_factory=anyio.Event)
    records: list[Record] = field(default_factory=list)
    error: IfmemError | None = None


# A seal refused (a reader kept the -wal from being folded) is tried again this much later.
SEAL_RETRY_S = 30.0


@dataclass(slots=True)
class _SealRequest:
    """A `seal()` waiting for the writer's turn."""

    done: anyio.Event = field(default_factory=anyio.Event)
    segment: Segment | None = None
    error: StoreError | None = None


class WriterClosedError(IfmemError):
    """Raised when an event is appended after the writer has stopped."""

    def __init__(self) -> None:
        super().__init__("append event: the log writer has stopped; the event was not recorded")


class LogWriter:
    """The single writer of an `EventLog`, batching concurrent appends."""

    def __init__(
        self,
        log: EventLog,
        *,
        checkpoint_every: int = 1000,
        checkpoints_path: Path | None = None,
        on_commit: Callable[[list[Record], list[Mapping[str, Any] | None]], None] | None = None,
        segment_events: int | None = None,
        segment_age_s: float | None = None,
        before_seal: Callable[[], None] | None = None,
        after_seal: Callable[[Segment | None], None] | None = None,
    ) -> None:
        self.log = log
        self.checkpoint_every = checkpoint_every
        self.checkpoints_path = checkpoints_path
        self.on_commit = on_commit
        self.segment_events = segment_events
        self.segment_age_s = segment_age_s
        self.before_seal = before_seal
        self.after_seal = after_seal
        self._seal_waiters: list[_SealRequest] = []
        self._seal_retry_at = 0.0  # after a failed seal, when to try sealing on our own again
        self._first_ts = self._live_first_ts()
        self._batch = _Batch()
        self.last_error: StoreError | None = None
        self._wakeup = anyio.Event()
        self._closed = False
        self._stopped = anyio.Event()
        self._last_checkpoint = log.head_seq
        self.batches = 0

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def healthy(self) -> bool:
        """Open, and its last commit (if any) succeeded."""
        return not self._closed and self.last_error is None

    async def append(self, kind: str, fields: Mapping[str, Any]) -> Record:
        """Append one event; returns its record once it is durable."""
        return await self._append(kind, encode(kind, fields), fields)

    async def append_raw(self, kind: str, body: bytes) -> Record:
        """Append one event whose canonical body is already encoded."""
        return await self._append(kind, body, None)

    async def _append(self, kind: str, body: bytes, fields: Mapping[str, Any] | None) -> Record:
        if self._closed:
            raise WriterClosedError()
        batch = self._batch
        index = len(batch.items)
        batch.items.append((kind, body))
        batch.fields.append(fields)
        self._wakeup.set()
        await batch.done.wait()
        if batch.error is not None:
            raise batch.error
        return batch.records[index]

    async def append_many(self, events: Sequence[tuple[str, Mapping[str, Any]]]) -> list[Record]:
        """Append several events in this order, in one transaction; return their records."""
        if self._closed:
            raise WriterClosedError()
        encoded = [(kind, encode(kind, fields)) for kind, fields in events]
        batch = self._batch
        start = len(batch.items)
        batch.items.extend(encoded)
        batch.fields.extend(fields for _, fields in events)
        self._wakeup.set()
        await batch.done.wait()
        if batch.error is not None:
            raise batch.error
        return batch.records[start : start + len(encoded)]

    async def settled(self) -> None:
        """Return once every event appended so far is committed and handed to
        `on_commit`: what the state says then stands for the whole log. (A batch
        is taken and committed with no await between: none is half-way.)"""
        while self._batch.items and not self._closed:
            batch = self._batch
            self._wakeup.set()
            await batch.done.wait()

    def enqueue(self, kind: str, fields: Mapping[str, Any]) -> None:
        """Queue an event without waiting for it (for the writer's own bookkeeping)."""
        if not self._closed:
            self._batch.items.append((kind, encode(kind, fields)))
            self._batch.fields.append(fields)
            self._wakeup.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Commit batches until `close()`; drains what was queued before closing."""
        task_status.started()
        try:
            while True:
                if self._seal_waiters:
                    self._seal_now()
                batch = self._batch
                if not batch.items:
                    if self._closed:
                        return
                    await self._wakeup.wait()
                    self._wakeup = anyio.Event()
                    # One more turn of the loop: producers woken with this
                    # one join the batch instead of waiting out its fsync.
                    await anyio.lowlevel.checkpoint()
                    continue
                self._batch = _Batch()
                await self._commit(batch)
        finally:
            self._closed = True
            if self._batch.items:
                self._batch.error = WriterClosedError()
                self._batch.done.set()
            self._stopped.set()

    async def _commit(self, batch: _Batch) -> None:
        try:
            # No await: a cancelled writer never leaves a commit half-known.
            records = self.log.append_batch(batch.items)
        except StoreError as e:
            self.last_error = e
            batch.error = e
            batch.done.set()
            return
        self.last_error = None
        self.batches += 1
        batch.records = records
        if self.on_commit is not None:
            self.on_commit(records, batch.fields)
        batch.done.set()
        if records and not self._first_ts:
            self._first_ts = records[0].ts_ns
        if self._seal_due():
            self._seal_now()
        if self.log.head_seq - self._last_checkpoint >= self.checkpoint_every:
            try:
                checkpoint = await anyio.to_thread.run_sync(self.write_checkpoint)
            except OSError as e:
                # The events are committed; a checkpoint that cannot be written
                # (disk full) must not stop the writer. It is tried again after
                # the next commit.
                print(
                    f"ifmemd: write checkpoint: {self.checkpoints_path}: {e.strerror or e}",
                    file=sys.stderr,
                    flush=True,
                )
                return
            if checkpoint is not None:
                self.enqueue("checkpoint", {"seq": checkpoint.seq, "hash": checkpoint.hash.hex()})

    def write_checkpoint(self) -> cp.Checkpoint | None:
        """Publish a signed checkpoint of the current head (none for an empty log)."""
        log = self.log
        if log.head_seq == 0 or log.signer is None:
            return None
        checkpoint = cp.Checkpoint.make(log.signer, log.log_id, log.head_seq, log.head_hash)
        cp.publish(checkpoint, self.checkpoints_path)
        self._last_checkpoint = log.head_seq
        return checkpoint

    # -- sealing -------------------------------------------------------------------

    def _live_first_ts(self) -> int:
        first = self.log.first_row()
        return first.ts_ns if first is not None else 0

    def _seal_due(self) -> bool:
        if time.monotonic() < self._seal_retry_at:
            return False
        log = self.log
        held = log.head_seq - log.first_seq + 1
        if self.segment_events is not None and held >= self.segment_events:
            return True
        age_ns = log.clock() - self._first_ts
        # A file holding only the `log.sealed` row it was created with is not sealed again.
        return (
            self.segment_age_s is not None
            and self._first_ts > 0
            and held > 1
            and age_ns >= self.segment_age_s * 1e9
        )

    async def seal(self) -> Segment:
        """Seal the live file now (between commits); the new segment."""
        if self._closed:
            raise WriterClosedError()
        request = _SealRequest()
        self._seal_waiters.append(request)
        self._wakeup.set()
        await request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.segment is not None
        return request.segment

    def _seal_now(self) -> None:
        """Seal on the writer's own turn: no commit runs meanwhile. Never raises: a
        failed seal leaves the live file as it was and is reported to whoever asked."""
        waiters, self._seal_waiters = self._seal_waiters, []
        segment: Segment | None = None
        error: StoreError | None = None
        if self.before_seal is not None:
            self.before_seal()
        log = self.log
        try:
            self.log, segment, first = segments.seal(log, self.checkpoints_path)
        except StoreError as e:
            error = e
            self._seal_retry_at = time.monotonic() + SEAL_RETRY_S
            print(f"ifmemd: {e}", file=sys.stderr, flush=True)
            # Before the move the old file is still the live one; after it,
            # recovery at the next start continues the log.
            assert log.signer is not None
            if log.path.exists():
                self.log = EventLog.open(log.path, log.signer)
                self.log.clock = log.clock
        else:
            self._last_checkpoint = first.seq - 1
            self._first_ts = first.ts_ns
            if self.on_commit is not None:
                self.on_commit([first], [None])
        finally:
            if self.after_seal is not None:
                self.after_seal(segment)
        if error is not None and not self.log.path.exists():
            # Nothing can be appended until the log is continued: stop the writer.
            self._closed = True
        for request in waiters:
            request.segment, request.error = segment, error
            request.done.set()

    async def close(self) -> None:
        """Stop accepting appends; return when everything queued is committed."""
        self._closed = True
        self._wakeup.set()
        await self._stopped.wait()
