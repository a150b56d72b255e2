"""Run a real `ifmemd` for integration tests: a real process, a real socket, real shards.

`DaemonProc` starts the installed `ifmemd` with a config, socket and event log
of the test's own, waits until `status` says every shard is ready, and hands
out `Client`s. Whatever happens in the test, `close()` (the fixtures' finalizer)
ends the daemon and every shard process it was seen to have, so no test leaves
processes behind. When the daemon misbehaves, its stderr is in the message.

The socket lives in a fresh directory under /tmp rather than under tmp_path: a
Unix socket path is limited to 107 bytes, which a long test name would exceed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from ifmemd.errors import IfmemError
from ifmemd.log.chain import LogChain
from ifmemd.wire.protocol import Client, DaemonUnreachableError

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
POLL_S = 0.02

# Short beats so supervision tests run in a second, not in half a minute.
HEARTBEAT_INTERVAL = 0.2
HEARTBEAT_TIMEOUT = 1.0

DOCS = {
    "alpha.md": "# Alpha\n\nThe quick brown fox jumps over the lazy dog.\n",
    "beacon.md": "# Beacon\n\nA lighthouse beacon guides ships through the fog.\n"
    "Keepers trim the wick every evening.\n",
    "glacier.md": "# Glacier\n\nGlacier ice moves slowly down the valley.\n",
}
CODE = {
    "pump.py": 'def pump_water(litres):\n    """Pump water from the reservoir."""\n'
    "    return litres * 2\n",
    "valve.py": "class Valve:\n    def open(self):\n        return 'valve opened'\n",
}


def ifmemd_command() -> list[str]:
    """The installed `ifmemd` next to this Python, else the module."""
    script = Path(sys.executable).with_name("ifmemd")
    if script.exists():
        return [str(script)]
    found = shutil.which("ifmemd")
    return [found] if found else [sys.executable, "-m", "ifmemd.main"]


def write_corpus(root: Path) -> dict[str, Path]:
    """Write the sample docs and code under `root`; returns their directories."""
    dirs = {"docs": root / "docs", "code": root / "code"}
    for name, files in (("docs", DOCS), ("code", CODE)):
        dirs[name].mkdir(parents=True, exist_ok=True)
        for filename, text in files.items():
            (dirs[name] / filename).write_text(text)
    return dirs


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def config_text(
    shards: Mapping[str, Sequence[str]],
    *,
    heartbeat_interval: float = HEARTBEAT_INTERVAL,
    heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
    restart_intensity: tuple[int, float] = (5, 60),
    ask_timeout: float = 5.0,
    **daemon: Any,
) -> str:
    """An ifmem.toml with one `[[shard]]` of kind files per entry of `shards` (name → globs)."""
    lines = [
        "[daemon]",
        f"heartbeat_interval = {heartbeat_interval!r}",
        f"heartbeat_timeout = {heartbeat_timeout!r}",
        f"restart_intensity = {_toml(list(restart_intensity))}",
        f"ask_timeout = {ask_timeout!r}",
        *(f"{k} = {_toml(v)}" for k, v in daemon.items()),
    ]
    for name, paths in shards.items():
        lines += ["", "[[shard]]", f"name = {_toml(name)}", f"paths = {_toml(list(paths))}"]
    return "\n".join(lines) + "\n"


def _is_shard(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"ifmemd.shards.shard" in cmdline


def _children(pid: int) -> set[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(p) for p in text.split()}


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str, on_fail: Callable[[], str] = str
) -> Any:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}\n{on_fail()}")
        time.sleep(POLL_S)


class DaemonProc:
    """One `ifmemd` process with its own config, socket and event log."""

    def __init__(
        self,
        root: Path,
        config: str,
        *,
        socket_dir: Path | None = None,
        db: Path | None = None,
        prefix: Sequence[str] = (),
    ) -> None:
        self.root = root
        self.prefix = list(prefix)  # a command the daemon runs under (e.g. unshare)
        root.mkdir(parents=True, exist_ok=True)
        self.config_path = root / "ifmem.toml"
        self.config_path.write_text(config)
        self._own_socket_dir = socket_dir is None
        self.socket_dir = socket_dir or Path(tempfile.mkdtemp(prefix="ifm-", dir="/tmp"))
        self.socket_path = self.socket_dir / "s.sock"
        self.db_path = db or root / "data" / "events.db"
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.stderr_path = root / "ifmemd.0.stderr"
        self._shard_pids: set[int] = set()
        self._clients: list[Client] = []

    # -- lifecycle ----------------------------------------------------------------

    def start(self, *, wait: bool = True, timeout: float = START_TIMEOUT_S) -> DaemonProc:
        """Start the daemon (again, on the same log) and wait until every shard is ready."""
        assert self.proc is None or self.proc.poll() is not None, "daemon already running"
        self.runs += 1
        self.stderr_path = self.root / f"ifmemd.{self.runs}.stderr"
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [
                    *self.prefix,
                    *ifmemd_command(),
                    "--config",
                    str(self.config_path),
                    "--socket",
                    str(self.socket_path),
                    "--db",
                    str(self.db_path),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=self.env(),
            )
        if wait:
            self.wait_ready(timeout)
        return self

    def env(self) -> dict[str, str]:
        """The daemon's environment: its key, state and runtime dirs all under `root`.

        Set here, not inherited, so a daemon started by a module-scoped fixture
        (before the per-test HOME is set) never touches the real home either.
        """
        home = self.root / "home"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("IFMEM_", "NOTIFY_", "LISTEN_", "WATCHDOG_"))
        }
        env.update(
            HOME=str(home),
            XDG_CONFIG_HOME=str(home / ".config"),
            XDG_DATA_HOME=str(home / ".local/share"),
            XDG_STATE_HOME=str(home / ".local/state"),
            XDG_CACHE_HOME=str(home / ".cache"),
            XDG_RUNTIME_DIR=str(self.socket_dir),
        )
        return env

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr(self) -> str:
        """What the current (or last) daemon process wrote to stderr."""
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def diagnostics(self) -> str:
        code = None if self.proc is None else self.proc.poll()
        return f"ifmemd exit status: {code}\nifmemd stderr:\n{self.stderr()}"

    def _try_status(self) -> dict[str, Any] | None:
        if not self.running:
            pytest.fail(f"ifmemd exited before it was ready\n{self.diagnostics()}")
        try:
            with Client(self.socket_path, timeout=5.0) as c:
                return self._note(c.request("status"))
        except (DaemonUnreachableError, IfmemError):
            return None

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> dict[str, Any]:
        """Wait until `status` answers with every shard ready, models included; returns it."""

        def ready() -> dict[str, Any] | None:
            status = self._try_status()
            if status and all(
                s["status"] == "ready" and s.get("model_status", "ready") == "ready"
                for s in status["shards"]
            ):
                return status
            return None

        return wait_for(ready, timeout, "every shard ready", self.diagnostics)

    def _note(self, status: dict[str, Any]) -> dict[str, Any]:
        for s in status["shards"]:
            if s.get("pid"):
                self._shard_pids.add(s["pid"])
        return status

    def client(self, timeout: float | None = 10.0) -> Client:
        """A new connected client; closed by `close()` if the test does not."""
        c = Client(self.socket_path, timeout=timeout)
        self._clients.append(c)
        return c

    def request(self, op: str, **args: Any) -> Any:
        """One request on a fresh connection."""
        with Client(self.socket_path, timeout=10.0) as c:
            result = c.request(op, **args)
        return self._note(result) if op == "status" else result

    def status(self) -> dict[str, Any]:
        return self.request("status")

    def shard(self, name: str) -> dict[str, Any]:
        """The status entry of shard `name`."""
        return next(s for s in self.status()["shards"] if s["name"] == name)

    def wait_shard(
        self, name: str, check: Callable[[dict[str, Any]], bool], what: str, timeout: float = 5.0
    ) -> dict[str, Any]:
        """Wait until shard `name`'s status entry passes `check`; returns that entry."""

        def probe() -> dict[str, Any] | None:
            entry = self.shard(name)
            return entry if check(entry) else None

        return wait_for(probe, timeout, f"shard {name!r}: {what}", self.diagnostics)

    def shard_pids(self) -> dict[str, int]:
        return {s["name"]: s["pid"] for s in self.status()["shards"]}

    def live_shards(self) -> set[int]:
        """Shard processes now alive that this daemon started (its children, and any seen)."""
        pids = set(self._shard_pids)
        if self.running:
            pids |= _children(self.pid)
        return {p for p in pids if _is_shard(p) and pid_alive(p)}

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """Stop cleanly with SIGTERM; returns the exit status (fails the test on a hang)."""
        assert self.proc is not None
        shards = self.live_shards()
        if self.running:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"ifmemd did not stop within {timeout:g} s\n{self.diagnostics()}")
        wait_for(
            lambda: not any(pid_alive(p) for p in shards), 5.0, "the shards to exit after stop"
        )
        return code

    def kill9(self) -> None:
        """SIGKILL the daemon, as a crash would; its shards must die with it."""
        assert self.proc is not None
        shards = self.live_shards()
        self.proc.kill()
        self.proc.wait()
        # The shards die by PR_SET_PDEATHSIG; wait so the next start finds no leftovers.
        wait_for(
            lambda: not any(pid_alive(p) and _is_shard(p) for p in shards),
            5.0,
            "the shards to die with the daemon",
        )

    def close(self) -> None:
        """End everything this daemon started, whatever state the test left it in."""
        for c in self._clients:
            c.close()
        shards = self.live_shards()
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in shards:
            if _is_shard(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self._own_socket_dir:
            shutil.rmtree(self.socket_dir, ignore_errors=True)

    # -- the event log ------------------------------------------------------------

    def events(self, *kinds: str) -> list[tuple[int, str, dict[str, Any]]]:
        """Committed events as (seq, kind, body), oldest first; only `kinds` if given."""
        with LogChain.open(self.db_path) as log:  # sealed segments too
            return [
                (r.seq, r.kind, r.data()) for r in log.records() if not kinds or r.kind in kinds
            ]

    def shard_results(self, qid: Any) -> dict[str, dict[str, Any]]:
        """Each shard's result for question `qid`, by shard, from its `query.answered`."""
        [body] = [b for _, _, b in self.events("query.answered") if b["qid"] == qid]
        return {r["shard"]: r for r in body["results"]}


class DaemonFactory:
    """Makes daemons under one test's tmp_path and closes them all at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.corpus = write_corpus(tmp_path / "corpus")
        self.daemons: list[DaemonProc] = []

    def default_config(self, **daemon: Any) -> str:
        """Two file shards, `docs` (*.md) and `code` (*.py), plus the built-in `working`."""
        return config_text(
            {
                "docs": [str(self.corpus["docs"] / "*.md")],
                "code": [str(self.corpus["code"] / "*.py")],
            },
            **daemon,
        )

    def __call__(
        self, config: str | None = None, *, start: bool = True, **kwargs: Any
    ) -> DaemonProc:
        d = DaemonProc(
            self.tmp_path / f"daemon{len(self.daemons)}", config or self.default_config(), **kwargs
        )
        self.daemons.append(d)
        if start:
            d.start()
        return d

    def close(self) -> None:
        for d in self.daemons:
            d.close()


@contextlib.contextmanager
def factory(tmp_path: Path) -> Iterator[DaemonFactory]:
    """A factory of real daemons, all ended (shards included) on exit; wrap it in a fixture."""
    made = DaemonFactory(tmp_path)
    try:
        yield made
    finally:
        made.close()


@contextlib.contextmanager
def descriptors_exhausted(d: DaemonProc, connections: int) -> Iterator[None]:
    """Idle clients holding every file descriptor the daemon `d` may open (start it
    under `prlimit --nofile=N`, N well below `connections`) until the block ends."""
    held = []
    try:
        for _ in range(connections):  # those past the limit wait in the listen backlog
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(d.socket_path))
            held.append(sock)
        wait_for(
            lambda: "Too many open files; retrying" in d.stderr(), 10.0, "EMFILE", d.diagnostics
        )
        yield
    finally:
        for sock in held:
            sock.close()
