"""Run a real shard process over pipes, as the supervisor does, for shard-level tests.

`ShardProc` starts `python -m ifmemd.shards.shard` (optionally under a prefix
command, such as `unshare`), sends its `init`, and collects everything it
writes on a reader thread, so a test can wait for a message or search the
shard while its watcher and writer run. `close()` ends it; `kill9()` is a crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import daemonproc
import pytest

TIMEOUT_S = 20.0


class ShardProc:
    """One shard process and every message it sent so far."""

    def __init__(
        self,
        name: str,
        paths: Sequence[str | Path],
        index_dir: Path,
        *,
        prefix: Sequence[str] = (),
        **init: Any,
    ) -> None:
        self.init = {
            "op": "init",
            "name": name,
            "kind": "files",
            "paths": [str(p) for p in paths],
            "index_dir": str(index_dir),
            "heartbeat_interval": 0.5,
            "memories": [],
            **init,
        }
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "ifmemd.shards.shard"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.messages: list[dict[str, Any]] = []
        self._new: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._rid = 0
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()
        self.send(self.init)

    def _collect(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            msg = json.loads(line)
            with self._lock:
                self.messages.append(msg)
            self._new.put(msg)
        self._new.put(None)

    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(obj).encode() + b"\n")
        self.proc.stdin.flush()

    def seen(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [m for m in self.messages if m.get("type") == kind]

    def wait_for(
        self,
        kind: str,
        check: Callable[[dict[str, Any]], bool] = lambda m: True,
        timeout: float = TIMEOUT_S,
        after: int = 0,
    ) -> dict[str, Any]:
        """The first message of `kind` (from the `after`-th message on) that passes `check`."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                for m in self.messages[after:]:
                    if m.get("type") == kind and check(m):
                        return m
            if self.proc.poll() is not None and self._new.empty():
                pytest.fail(f"shard exited ({self.proc.returncode}) before sending {kind}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no {kind!r} message within {timeout:g} s; got {self.messages[-20:]}")
            try:
                self._new.get(timeout=min(remaining, 0.1))
            except queue.Empty:
                continue

    def count(self) -> int:
        with self._lock:
            return len(self.messages)

    def ready(self, timeout: float = TIMEOUT_S) -> dict[str, Any]:
        return self.wait_for("ready", timeout=timeout)

    def watching(self, timeout: float = TIMEOUT_S) -> str:
        return str(self.wait_for("watching", timeout=timeout)["mode"])

    def search(self, query: str, k: int = 10) -> list[list[Any]]:
        self._rid += 1
        rid = self._rid
        mark = self.count()
        self.send({"op": "search", "rid": rid, "query": query, "k": k})
        return self.wait_for("result", lambda m: m["rid"] == rid, after=mark)["passages"]

    def wait_until(
        self, predicate: Callable[[], Any], what: str, timeout: float = TIMEOUT_S
    ) -> Any:
        return daemonproc.wait_for(predicate, timeout, what)

    def output_ended(self, timeout: float) -> bool:
        """Whether its stdout reached EOF within `timeout`: no process holds it open any more."""
        self._reader.join(timeout)
        return not self._reader.is_alive()

    def kill9(self) -> None:
        """SIGKILL the shard, as a crash would."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.close()

    def close(self) -> int:
        """End the shard (EOF on stdin, then SIGKILL after 10 s) and close its pipes."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._reader.join(5)
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        self.proc.stdout.close()
        return self.proc.returncode
