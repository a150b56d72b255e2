"""Reading and cutting a shard's files, in the shard or in a second process beside it.

`read_and_cut` reads one file, digests its bytes and cuts its text into
passages (`store.cut`): everything a file's row and passages need but the
writing. A first build spends about as long on that as on SQLite's part
(FTS5 tokenizing, b-tree inserts), so `ReadAhead` runs it in a child process
(`python -m ifmemd.shards.readahead`) while the shard writes what the child
already sent: on two cores the two halves overlap.

The child must never outlive the shard, nor hold anything the supervisor
waits on (a previous attempt kept the shard's stdout pipe open after the
shard was SIGKILLed, so the supervisor never saw it die):

- its stdin and stdout are pipes to the shard alone, its stderr /dev/null,
  and it inherits no other descriptor (`close_fds`);
- it asks the kernel for SIGKILL when the shard dies (`PR_SET_PDEATHSIG`,
  Linux), and exits at once if the shard died before it asked. The signal
  follows the thread that started the child, so a shard starts it from its
  main thread (its first build), which lives as long as the process;
- elsewhere, its next write to the shard's pipe fails (EPIPE) and ends it.

A child that fails says why in its last message; one that dies leaves its
pipe at EOF. Either way `ReadAhead.read` raises `ReadAheadError`, and what
the shard committed so far stays: the next start continues from it.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from ifmemd.errors import IfmemError
from ifmemd.shards import store
from ifmemd.shards.corpus import Opener, Skipped, open_file, read_file
from ifmemd.shards.store import Passages

# The child sends what it read in groups of at most this many files or bytes
# of text: few enough messages to cost nothing, small enough to keep both busy.
GROUP_FILES = 32
GROUP_BYTES = 1 << 20
# How many groups wait in this process for the writer (a first build's batch of
# 500 files is ~16 groups): the child runs that far ahead, and no further.
QUEUED_GROUPS = 32
_PR_SET_PDEATHSIG = 1


class ReadAheadError(IfmemError):
    """Raised when the process reading files for a build fails or ends early."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"read files in a second process: {reason}")


@dataclass(frozen=True, slots=True)
class Read:
    """One file read and cut: its stat when opened, when reading began, digest, size, passages.

    `passages` is None when the bytes were those of `known_digest` (nothing to cut).
    """

    path: str
    stat: os.stat_result
    started_ns: int
    digest: str
    lines: int
    bytes: int
    passages: Passages | None


def read_and_cut(
    path: str,
    max_bytes: int,
    opener: Opener = open_file,
    clock: Callable[[], int] = time.time_ns,
    known_digest: str = "",
) -> Read | Skipped:
    """Read `path` and cut it into passages, or say why it is left out."""
    started = clock()
    outcome = read_file(path, max_bytes, opener)
    if isinstance(outcome, Skipped):
        return outcome
    digest = store.file_digest(outcome.data)
    text = outcome.text
    passages = None if digest == known_digest else store.cut(path, text)
    lines = text.count("\n") + (1 if text and not text.endswith("\n") else 0)
    return Read(path, outcome.stat, started, digest, lines, len(outcome.data), passages)


class ReadAhead:
    """A child process reading and cutting files for this one, in the order asked.

    A thread moves the child's messages from the pipe to a queue as they come:
    a pipe holds 64 KiB, so without it the child would wait for every batch
    this process writes to SQLite before it could send more, and the two
    would take turns instead of working at once.
    """

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self._frames: queue.Queue[bytes | None] = queue.Queue(maxsize=QUEUED_GROUPS)
        self._drainer = threading.Thread(target=self._drain, name="read-ahead", daemon=True)

    @classmethod
    def start(cls) -> ReadAhead:
        """Start the child now (its imports overlap the caller's walk); raises OSError."""
        # It imports ifmemd from where this process did, however that was set up.
        env = os.environ | {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        process = subprocess.Popen(
            [sys.executable, "-m", "ifmemd.shards.readahead", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
            env=env,
        )
        return cls(process)

    def read(self, paths: list[str], max_bytes: int) -> Iterator[Read | Skipped]:
        """What the child read of each of `paths`, in order; raises ReadAheadError."""
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        try:
            # The child reads the whole request before it writes: no deadlock.
            pickle.dump((max_bytes, paths), stdin, protocol=pickle.HIGHEST_PROTOCOL)
            stdin.close()
        except BrokenPipeError as e:
            raise ReadAheadError(self._ended()) from e
        self._drainer.start()
        left = len(paths)
        while left > 0:
            frame = self._frames.get()
            if frame is None:
                raise ReadAheadError(self._ended())
            # Our own child, over a pipe only the two of us hold.
            message = pickle.loads(frame)
            if isinstance(message, str):
                raise ReadAheadError(f"it failed: {message}")
            left -= len(message)
            yield from message

    def _drain(self) -> None:
        """Queue each message (8-byte length, then a pickle) until EOF, then None."""
        stdout = self.process.stdout
        assert stdout is not None
        while len(header := stdout.read(8)) == 8:
            frame = stdout.read(int.from_bytes(header, "little"))
            if len(frame) < int.from_bytes(header, "little"):
                break  # cut short: the child died mid-message
            self._frames.put(frame)
        self._frames.put(None)

    def _ended(self) -> str:
        code = self.process.wait()
        return f"it ended early (exit status {code})"

    def close(self) -> None:
        """End the child (if it still runs) and reap it."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        if self.process.poll() is None:
            self.process.kill()
        # The thread ends at the pipe's EOF, once there is room in the queue.
        while self._drainer.is_alive():
            with contextlib.suppress(queue.Empty):
                self._frames.get(timeout=0.05)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process.wait()


def _die_with(parent: int) -> None:
    """SIGKILL this process when `parent` dies; exit now if it already has."""
    # Not Linux: a write to the dead parent's pipe ends this process instead.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # Reparented before the prctl took effect: the parent is gone already.
    if os.getppid() != parent:
        os._exit(1)


def _send(reply: IO[bytes], message: object) -> None:
    frame = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    reply.write(len(frame).to_bytes(8, "little"))
    reply.write(frame)
    reply.flush()


def _serve(request: IO[bytes], reply: IO[bytes]) -> None:
    max_bytes, paths = pickle.load(request)
    group: list[Read | Skipped] = []
    size = 0
    for path in paths:
        outcome = read_and_cut(path, max_bytes)
        group.append(outcome)
        size += outcome.bytes if isinstance(outcome, Read) else 0
        if len(group) >= GROUP_FILES or size >= GROUP_BYTES:
            _send(reply, group)
            group, size = [], 0
    if group:
        _send(reply, group)


def main() -> int:
    _die_with(int(sys.argv[1]))
    # What it makes is freed by reference counting as each group is sent; the
    # cycle collector would only walk the same short-lived tuples (~10% of its time).
    gc.disable()
    reply = sys.stdout.buffer
    try:
        _serve(sys.stdin.buffer, reply)
    except BrokenPipeError:
        return 1  # the parent is gone
    except Exception as e:  # told to the parent, which raises it as ReadAheadError
        _send(reply, f"{type(e).__name__}: {e}")
        return 1
    return 0


if __name__ == "__main__":
    # Run as the module it is imported as, so what it pickles names
    # `ifmemd.shards.readahead.Read`, not `__main__.Read`.
    from ifmemd.shards import readahead

    sys.exit(readahead.main())
