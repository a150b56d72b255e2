"""Watch a shard's directories and report which paths changed, in coalesced batches.

Built on `watchfiles`: inotify through Rust's `notify` crate (what uvicorn and
many others rely on). Over raw inotify it brings recursive watches that follow
directories as they appear, bursts coalesced in Rust without holding the GIL
(a `git checkout` touching thousands of files arrives as a few sets of
paths, not thousands of wake-ups), and the same API over polling, which is
what a shard falls back to when the kernel's inotify watches run out
(`fs.inotify.max_user_watches`): one warning says so, and `mode` says
"polling" from then on (shown by `ifmem status` and `ifmem doctor`).

A watched root that vanishes is noticed within `ROOT_CHECK_MS`; the watch is
set up again on the roots still there, and a root that comes back is
reported as changed so all it holds is looked at. So is a root that is
another directory now (a symlink such as `current` pointed at a new release).

Limitation: running out of watches is seen when the watch is set up (at a
start, or when a root comes back). When directories created later exceed the
limit, `notify` reports it to no one (watchfiles drops the error), and
changes under those directories are seen only at the next start or reload.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable

import watchfiles

# What watchfiles raises when it cannot hand a path to Python (not re-exported).
from watchfiles._rust_notify import WatchfilesRustInternalError

# Changes are handed over once none came for STEP_MS, or after DEBOUNCE_MS of a burst.
STEP_MS = 30
DEBOUNCE_MS = 400
# How often the roots are checked for vanishing or coming back.
ROOT_CHECK_MS = 1_000
# Polling (when inotify cannot be used): how often the whole tree is looked at.
POLL_MS = 1_000
_LIMIT_ERRNOS = frozenset({errno.ENOSPC, errno.EMFILE, errno.ENFILE})
# A watch that a file name not valid UTF-8 ended again within this long is set
# up again only after this long (a log file with such a name, written on).
UNDECODABLE_PAUSE_S = 1.0

ChangeSink = Callable[[set[str]], None]
Warn = Callable[[str, str], None]


class Watcher:
    """Watches `roots` on its own thread until `stop` is set; reports paths to `on_change`.

    `on_watching(mode)` is called each time a watch is in place ("inotify" or
    "polling"): changes made after that are reported. An error it cannot
    recover from goes to `fail`.
    """

    def __init__(
        self,
        roots: list[str],
        on_change: ChangeSink,
        on_watching: Callable[[str], None],
        warn: Warn,
        fail: Callable[[Exception], None],
        *,
        force_polling: bool = False,
    ) -> None:
        self.roots = roots
        self.on_change = on_change
        self.on_watching = on_watching
        self.warn = warn
        self.fail = fail
        self.mode = "polling" if force_polling else "inotify"
        self.stop = threading.Event()
        # Only once a watch failed for lack of permission: it also hides running out of watches.
        self._skip_denied = False
        # When a file name not valid UTF-8 last ended the watch (time.monotonic()).
        self._undecodable_at: float | None = None
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            self._follow()
        except Exception as e:
            # Not hidden: handed to the shard's main thread, which raises it.
            self.fail(e)

    def _follow(self) -> None:
        while not self.stop.is_set():
            present = [r for r in self.roots if os.path.isdir(r)]
            try:
                came_back = self._watch(present)
            except PermissionError:
                if self._skip_denied:
                    raise
                # A directory we may not read: watch the rest (the scan warns about it).
                self._skip_denied = True
                continue
            except OSError as e:
                if self.mode == "polling":
                    raise
                self.mode = "polling"
                why = "inotify watches ran out" if _out_of_watches(e) else "inotify failed"
                self.warn(
                    present[0] if present else "",
                    f"{why} ({e}); polling every {POLL_MS / 1000:g} s instead: changes take "
                    "longer to show; raise fs.inotify.max_user_watches to watch",
                )
                continue
            except WatchfilesRustInternalError as e:
                if "decode path" not in str(e):
                    raise
                self._undecodable(present, e)
                continue
            if came_back:
                self.on_change(came_back)

    def _undecodable(self, present: list[str], error: Exception) -> None:
        """A change to a file whose name is not valid UTF-8 (which no scan indexes)
        ended the watch: the roots are looked at again for changes made meanwhile,
        and the watch is set up again, after a pause if this keeps happening."""
        now = time.monotonic()
        if self._undecodable_at is None:
            self.warn(
                present[0] if present else "",
                f"a file whose name is not valid UTF-8 changed ({error}); such changes "
                "end the watch, which is set up again and the tree looked at again",
            )
        elif now - self._undecodable_at < UNDECODABLE_PAUSE_S:
            self.stop.wait(UNDECODABLE_PAUSE_S)
        self._undecodable_at = now
        self.on_change(set(present))

    def _watch(self, present: list[str]) -> set[str]:
        """Watch `present` until a root vanishes, a missing one returns, or one is
        another directory now (a symlink pointed elsewhere); returns those that
        returned or changed."""
        missing = set(self.roots) - set(present)
        # The watches hold the directories the roots were when set up.
        watched = {root: _identity(root) for root in present}
        if not present:
            self.stop.wait(ROOT_CHECK_MS / 1000)
            return {r for r in missing if os.path.isdir(r)}
        announced = False
        for changes in watchfiles.watch(
            *present,
            watch_filter=None,
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            rust_timeout=ROOT_CHECK_MS,
            yield_on_timeout=True,
            stop_event=self.stop,
            force_polling=self.mode == "polling",
            poll_delay_ms=POLL_MS,
            raise_interrupt=False,
            ignore_permission_denied=self._skip_denied,
        ):
            if not announced:
                # The first yield (a change or a timeout) means the watches are in place.
                announced = True
                self.on_watching(self.mode)
            if changes:
                self.on_change({path for _, path in changes})
            back = {r for r in missing if os.path.isdir(r)}
            moved = {r for r in present if _identity(r) != watched[r]}
            if back or moved or not all(os.path.isdir(r) for r in present):
                return back | {r for r in moved if os.path.isdir(r)}
        return set()


def _identity(path: str) -> tuple[int, int] | None:
    """The directory `path` is now (following symlinks), or None if none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _out_of_watches(error: OSError) -> bool:
    """Whether watchfiles failed because inotify's per-user limits were reached."""
    return error.errno in _LIMIT_ERRNOS or "watch limit" in str(error)
