"""What every benchmark that runs a real ifmemd shares: its world, start, stop and log.

A `Daemon` is a real `ifmemd` process in a directory of its own (HOME, XDG
directories, socket, log), configured from a TOML text the benchmark writes.
Its event log is read through `ifmemd.log` (never with SQL of our own), so
a benchmark sees the events exactly as `ifmem log` does. `machine()` says
what the numbers were measured on.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import apsw
from ifmemd.errors import IfmemError
from ifmemd.log.chain import LogChain
from ifmemd.log.events import decode
from ifmemd.wire.protocol import Client

BIN = Path(sys.executable).parent


Ready = Callable[[list[dict[str, Any]]], bool]


def all_ready(shards: list[dict[str, Any]]) -> bool:
    """Every shard ready, and every shard's model: a model-backed shard is ready on its
    index first, its model after (`model_status`)."""
    return all(s["status"] == "ready" and s.get("model_status") in (None, "ready") for s in shards)


class DaemonError(RuntimeError):
    """Raised when the daemon under test exits or its shards do not come up."""


class Daemon:
    """A real `ifmemd` under `home`, started and stopped by a benchmark."""

    def __init__(
        self,
        home: Path,
        config: str,
        *,
        db_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        self.home = home
        # How to run ifmemd: the installed one by default; another source tree's
        # (`python -m ifmemd.main` with its PYTHONPATH in `env`) for a baseline.
        self.command = list(command) if command else [str(BIN / "ifmemd")]
        for d in ("config", "data", "state", "run", "cache"):
            (home / d).mkdir(parents=True, exist_ok=True, mode=0o700)
        self.config = home / "config" / "ifmem.toml"
        self.config.write_text(config)
        runtime = home / "run"
        # A Unix socket's path holds at most 107 bytes: a deep work dir gets a short one.
        if len(str(runtime / "ifmem" / "ifmem.sock")) > 100:
            runtime = Path(tempfile.mkdtemp(prefix="ifm-bench-", dir="/tmp"))
        self.runtime = runtime
        self.socket = runtime / "ifmem" / "ifmem.sock"
        self.db = (db_dir or home / "data") / "events.db"
        self.db.parent.mkdir(parents=True, exist_ok=True)
        self.stderr_path = home / "ifmemd.stderr"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("IFMEM_")}
        for var in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID"):
            self.env.pop(var, None)
        self.env.update(
            HOME=str(home),
            XDG_CONFIG_HOME=str(home / "config"),
            XDG_DATA_HOME=str(home / "data"),
            XDG_STATE_HOME=str(home / "state"),
            XDG_CACHE_HOME=str(home / "cache"),
            XDG_RUNTIME_DIR=str(runtime),
            **(env or {}),
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float, *, until: Ready | None = None) -> float:
        """Start and wait until `until(shards)` holds (by default every shard ready, models
        included); seconds from spawn to then."""
        cmd = [
            *self.command,
            *("--config", str(self.config)),
            *("--socket", str(self.socket)),
            *("--db", str(self.db)),
        ]
        t0 = time.perf_counter()
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                cmd, env=self.env, stdin=subprocess.DEVNULL, stdout=err, stderr=err
            )
        self.wait(until or all_ready, timeout)
        return time.perf_counter() - t0

    def wait(self, until: Ready, timeout: float) -> None:
        """Poll `status` until `until(shards)` holds; DaemonError if the daemon or a shard fails."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise DaemonError(f"ifmemd exited with {self.proc.returncode}: {self.stderr()}")
            if time.monotonic() > deadline:
                raise DaemonError(f"shards not ready within {timeout:g} s: {self.stderr()}")
            shards: list[dict[str, Any]] = []
            with contextlib.suppress(IfmemError, OSError):  # not listening yet
                shards = self.status()["shards"]
            if shards and until(shards):
                return
            # A shard that crashes while loading is restarted with backoff:
            # report it instead of waiting out the timeout.
            broken = [s for s in shards if s["status"] == "failed" or s["restarts"] >= 2]
            if broken:
                names = ", ".join(f"{s['name']} ({s['status']})" for s in broken)
                raise DaemonError(f"shard not starting: {names}: {self.stderr()}")
            time.sleep(0.02)

    def stderr(self) -> str:
        with contextlib.suppress(OSError):
            return self.stderr_path.read_text(errors="replace")[-2000:]
        return ""

    def client(self, timeout: float = 60) -> Client:
        return Client(self.socket, timeout=timeout)

    def status(self) -> dict[str, Any]:
        with self.client(timeout=5) as c:
            return c.request("status")

    def ask(self, question: str, k: int = 5, timeout: float = 120) -> dict[str, Any]:
        with self.client(timeout=timeout) as c:
            return c.request("ask", question=question, k=k)

    def stop(self) -> None:
        """Stop through the socket, as `ifmem stop` does; SIGKILL only if it hangs."""
        try:
            self._stop()
        finally:
            if not self.runtime.is_relative_to(self.home):
                shutil.rmtree(self.runtime, ignore_errors=True)

    def _stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(IfmemError, OSError), self.client(timeout=10) as c:
            c.request("stop")
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def events(
        self, kinds: Iterable[str], after: int = 0, upto: int | None = None
    ) -> Iterator[tuple[int, int, str, dict[str, Any]]]:
        """(seq, ts_ns, kind, body) of the log's events of `kinds`, in order, upcast as on read."""
        wanted = frozenset(kinds)
        with LogChain.open(self.db) as log:  # sealed segments and the live file
            for r in log.records(after, upto):
                if r.kind in wanted:
                    yield r.seq, r.ts_ns, r.kind, decode(r.seq, r.kind, r.body)


def machine() -> dict[str, Any]:
    """The machine a benchmark ran on, for its report."""
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem = f"{kib / 2**20:.1f} GiB"
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": mem,
        "python": platform.python_version(),
        "sqlite": apsw.sqlite_lib_version(),
        "apsw": apsw.apswversion(),
    }
