"""The thread that writes a file shard's index while its main thread answers searches.

Changes reported by the watcher pile up in one set of paths while a batch is
being applied, so a burst (a `git checkout`, an editor saving through a
temporary file) is looked at once, whatever number of events it made. The
writer has its own connection: searches read the last committed batch (WAL)
and are never blocked by it. Each committed batch that changed something is
told to the supervisor as `{"type": "changed", changed: [{path, digest,
lines}], removed: [path]}`, which the daemon records as `corpus.changed`.

Work the main thread must do after a batch (a model-backed shard's copy of
its passages, a reload's `ready`) is posted to it as an internal op.

A shard ranking by meaning stores new passages without their vectors and
the writer makes them between batches (`fill`, a few passages a step, so a
change waits at most one step): searches find a passage by its words at
once, and by its meaning once its vector is made. How many still wait is
told to the supervisor as `{"type": "vectors", queued}` (`ifmem status`),
at most every REPORT_S and when none are left.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from itertools import chain as _chain
from typing import Any

from ifmemd.shards.sync import Batch, Updater

Send = Callable[[dict[str, Any]], None]
# Makes the vectors of some queued passages; returns how many it made (0: none queued).
Fill = Callable[[], int]
# How many passages wait for their vector.
Queued = Callable[[], int]
REPORT_S = 1.0


class IndexWriter:
    """Applies watched changes and rescans to the index, on its own thread."""

    def __init__(
        self,
        updater: Updater,
        send: Send,
        post: Send,
        fill: tuple[Fill, Queued] | None = None,
    ) -> None:
        """`fill`: make queued vectors between batches (a step, and how many are left)."""
        self.updater = updater
        self.send = send
        self.post = post
        self.fill = fill
        self._reported_at = -REPORT_S
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._paths: set[str] = set()
        self._rescan = False
        self._full = False
        self._reply = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="index-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def changed(self, paths: set[str]) -> None:
        """Paths the watcher saw change (files or directories); applied soon, coalesced."""
        with self._lock:
            self._paths |= paths
        self._wake.set()

    def rescan(self, *, full: bool, reply: bool = False) -> None:
        """Look again: at every file (`full`), or only where a start would (`catch_up`).

        `reply`: post `_synced` with reload=True when done.
        """
        with self._lock:
            self._rescan = True
            self._full |= full
            self._reply |= reply
        self._wake.set()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        queued = self.fill is not None
        while True:
            if queued and not self._wake.is_set():
                try:
                    queued = self._fill_step()
                except Exception as e:
                    # As a failed batch: raised again on the main thread.
                    self.post({"op": "_failed", "error": e})
                    return
                continue
            self._wake.wait()
            with self._lock:
                if self._closed:
                    return
                self._wake.clear()
                paths, self._paths = self._paths, set()
                rescan, full, reply = self._rescan, self._full, self._reply
                self._rescan = self._full = self._reply = False
            try:
                if not rescan:
                    batches = self.updater.refresh(paths)
                elif full:
                    batches = self.updater.scan()
                else:
                    # Paths reported meanwhile may lie in directories listed before.
                    batches = _chain(self.updater.catch_up(), self.updater.refresh(paths))
                touched: list[str] = []
                for batch in batches:
                    self._report(batch)
                    touched.extend(str(c["path"]) for c in batch.changed)
                    touched.extend(batch.removed)
            except Exception as e:
                # Not hidden: raised again on the main thread, which ends the process
                # (and the supervisor restarts it, which rescans).
                self.post({"op": "_failed", "error": e})
                return
            if touched or reply:
                self.post({"op": "_synced", "paths": touched, "reload": reply})
            queued = self.fill is not None

    def _fill_step(self) -> bool:
        """Make some queued vectors and tell how many are left now and then; whether
        there may be more."""
        assert self.fill is not None
        fill, queued = self.fill
        made = fill()
        now = time.monotonic()
        if not made or now - self._reported_at >= REPORT_S:
            self._reported_at = now
            self.send({"type": "vectors", "queued": queued() if made else 0})
        return made > 0

    def _report(self, batch: Batch) -> None:
        for skipped in batch.skipped:
            self.send({"type": "warning", "path": skipped.path, "reason": skipped.reason})
        if batch.changed or batch.removed:
            self.send({"type": "changed", "changed": batch.changed, "removed": batch.removed})
