"""Remote shards: another host's ifmemd as one shard, through `ssh -T host ifmem proxy`.

Why OpenSSH and not a protocol of our own: it is the audited, keyed,
encrypted transport every such user already has (git, rsync and borg use it
the same way), so ifmem adds no network listener and no authentication
scheme. On the remote, `ifmem proxy` joins the SSH channel to the remote
daemon's socket, whose SO_PEERCRED check then applies to the SSH user.

The supervisor runs `ssh` as it runs a shard process (`RemoteShard.run_once`)
and speaks the socket protocol (v1) over its pipes. Heartbeats are the
remote's `status`, asked every heartbeat_interval on the same connection;
silence past heartbeat_timeout gets ssh killed by the supervisor's watchdog,
and the restart policy applies as to any shard. Each search is an `ask` whose
id is unique to this handle (the remote answers a repeated id with the answer
it recorded), so many asks share one connection and come back in any order.
Each answer carries the remote log's `log_id` and the `seq` and `hash` of its
`query.answered`; the local log records them beside the passages, so that
`ifmem audit verify --peer` can hold the quote against the remote's signed log.

ssh runs with BatchMode=yes: no prompt can ever block, a missing key or an
unknown host fails at once. A host key that no longer matches known_hosts, or
a key the remote refuses, would fail the same way on every restart, so the
shard fails at once, with ssh's own words in `shard.failed`.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio
from anyio.abc import Process

from ifmemd.config import DaemonConfig, RemoteTarget, ShardConfig
from ifmemd.errors import IfmemError
from ifmemd.supervisor import (
    SPAWN_FAILED,
    STOP_GRACE_S,
    Pending,
    ReplyGroup,
    ShardHandle,
    ShardUnavailableError,
    Supervisor,
    _reap,
    open_child,
    spawn_failure,
)
from ifmemd.wire import protocol
from ifmemd.wire.framing import LineReader

SSH = "ssh"
# ssh keeps the first value it is given for an option: these come before the
# user's ssh_options, so none of them can turn BatchMode off.
FORCED_OPTIONS = ("-T", "-o", "BatchMode=yes")
REMOTE_COMMAND = ("ifmem", "proxy")
# What names the remote's signed record of an answer (see `ifmem audit verify --peer`).
QUOTE_FIELDS = ("log_id", "seq", "hash")
STDERR_TAIL_LINES = 5
STDERR_MAX_LINE = 4096
# ssh's words for failures no restart mends: the user must fix keys or known_hosts.
SSH_FATAL = (
    "Host key verification failed",
    "REMOTE HOST IDENTIFICATION HAS CHANGED",
    "Permission denied (",  # ssh's own: "Permission denied (publickey)."
)


def make_handle(
    config: ShardConfig, daemon: DaemonConfig, clock: Callable[[], float] = time.monotonic
) -> ShardHandle:
    """The supervisor's handle for `config`: a `RemoteShard` when it has `remote`."""
    if config.remote is not None:
        return RemoteShard(config, config.remote, daemon, clock)
    return ShardHandle(config, daemon, clock)


def ssh_command(config: ShardConfig, target: RemoteTarget) -> list[str]:
    """The ssh command line of a remote shard; ifmem's own options first (see FORCED_OPTIONS)."""
    return [SSH, *FORCED_OPTIONS, *config.ssh_options, *target.ssh_args(), *REMOTE_COMMAND]


class RemoteShard(ShardHandle):
    """A shard that is another host's ifmemd, reached over one ssh connection."""

    def __init__(
        self,
        config: ShardConfig,
        target: RemoteTarget,
        daemon: DaemonConfig,
        clock: Callable[[], float],
    ) -> None:
        super().__init__(config, daemon, clock)
        self.target = target
        # Ids unique to this handle, so never one the remote has answered before
        # (it would replay that answer); the name says whose they are in its log.
        self._prefix = f"{config.name}.{secrets.token_hex(8)}."
        self._polls = 0
        self.remote_log_id = ""
        self._stderr: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._closed_by_remote = False

    # -- requests -----------------------------------------------------------------

    async def submit(self, op: str, /, group: ReplyGroup | None = None, **fields: Any) -> Pending:
        if not self.ready and self.exit_reason:
            # Say why it is down (ssh's words), not only that it is.
            raise ShardUnavailableError(self.name, f"{self.status}: {self.exit_reason}")
        return await super().submit(op, group, **fields)

    async def send(self, obj: dict[str, Any]) -> None:
        """Send a shard-protocol message as the socket-protocol request it stands for."""
        if obj["op"] != "search":
            return  # `reload` and the like concern the remote's own config, not ours
        args: dict[str, Any] = {"question": obj["query"], "k": obj["k"]}
        if self.config.remote_shards:
            args["shards"] = list(self.config.remote_shards)
        await super().send(
            protocol.make_request(protocol.ASK, f"{self._prefix}{obj['rid']}", **args)
        )

    async def _poll(self) -> None:
        """Ask the remote's status now and every heartbeat_interval: the heartbeat."""
        while True:
            self._polls += 1
            request = protocol.make_request(protocol.STATUS, f"{self._prefix}s{self._polls}")
            try:
                await super().send(request)
            except ShardUnavailableError:
                return  # ssh is gone: its reader sees the end and says why
            await anyio.sleep(self.daemon.heartbeat_interval)

    # -- the ssh process ----------------------------------------------------------

    async def run_once(self, supervisor: Supervisor) -> int:
        """Run ssh to the remote until it exits; its exit code (255: ssh's own failure)."""
        self.status = "starting"
        if self.ready_event.is_set():
            self.ready_event = anyio.Event()
        self.fatal = self.exit_reason = ""
        self._stderr.clear()
        self._closed_by_remote = False
        try:
            process, stdin = await open_child(
                ssh_command(self.config, self.target), stderr=subprocess.PIPE
            )
        except OSError as e:
            self.exit_reason = spawn_failure(e)
            return SPAWN_FAILED
        self.stdin = stdin
        self.process, self.pid = process, process.pid
        spawned = self.last_heard = self.clock()
        await supervisor.record(
            "shard.spawned", {"shard": self.name, "pid": process.pid, "remote": self.target.url}
        )
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(supervisor._watchdog, self, process)
                stderr_done = anyio.Event()
                tg.start_soon(self._read_stderr, process, stderr_done)
                try:
                    await super().send(protocol.client_hello())
                    tg.start_soon(self._poll)
                    await self._read(supervisor, process, spawned)
                    # Done with this connection (or it with us): EOF lets ssh end, and
                    # it says why it ended on stderr, just before it exits.
                    stdin.close()
                    with anyio.move_on_after(STOP_GRACE_S):
                        await stderr_done.wait()
                except ShardUnavailableError as e:
                    self.exit_reason = e.reason
                finally:
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await _reap(process, stdin)
            self._explain()
            # Askers waiting for this run to come up: it will not; they get the reason.
            self.ready_event.set()
        assert process.returncode is not None  # _reap waited for it
        return process.returncode

    def _explain(self) -> None:
        """Name why the run ended from ssh's last words, unless already known."""
        if self.status == "hung" and not self.exit_reason:
            self.exit_reason = (
                f"no status from {self.target.url} within "
                f"{self.daemon.heartbeat_timeout:g} s; ssh killed"
            )
        lines = [line for line in self._stderr if line]
        if self._closed_by_remote and not lines and not self.exit_reason:
            self.exit_reason = f"{self.target.url} closed the connection"
        fatal = next((line for line in lines if any(f in line for f in SSH_FATAL)), "")
        if fatal and not self.fatal:
            self.fatal = f"ssh {self.target.url}: {fatal}"
        if not self.exit_reason and lines:
            self.exit_reason = f"ssh: {lines[-1]}"
        if self.fatal and not self.exit_reason:
            self.exit_reason = self.fatal

    async def _read_stderr(self, process: Process, done: anyio.Event) -> None:
        assert process.stderr is not None
        reader = LineReader(process.stderr, STDERR_MAX_LINE)
        try:
            while True:
                try:
                    raw = await reader.read_line()
                except protocol.ProtocolError:
                    continue  # a line over the limit is dropped; reading on keeps ssh unblocked
                line = raw.decode("utf-8", "replace").strip()
                self._stderr.append(line)
                # The journal keeps what ssh says; the log keeps its last words.
                print(f"ifmemd: remote shard {self.name!r}: {line}", file=sys.stderr, flush=True)
        except (anyio.EndOfStream, anyio.BrokenResourceError, protocol.ConnectionClosedError):
            pass  # ssh has ended
        finally:
            done.set()

    async def _read(self, supervisor: Supervisor, process: Process, spawned: float) -> None:
        assert process.stdout is not None
        reader = LineReader(process.stdout)
        try:
            protocol.check_server_hello(await reader.read_message())
            while True:
                msg = await reader.read_message()
                self.last_heard = self.clock()
                rid = msg.get("id")
                if not isinstance(rid, str) or not rid.startswith(self._prefix):
                    continue  # not ours (the remote could not read a line of ours)
                tag = rid[len(self._prefix) :]
                if tag.startswith("s"):
                    try:
                        if not await self._on_status(supervisor, msg, spawned):
                            return
                    except (KeyError, TypeError, ValueError) as e:
                        self.exit_reason = (
                            f"remote sent a status this ifmem cannot read ({type(e).__name__}: {e})"
                        )
                        return
                elif tag.isdigit():
                    self._on_answer(int(tag), msg)
        except (anyio.EndOfStream, anyio.BrokenResourceError, protocol.ConnectionClosedError):
            self._closed_by_remote = True  # ssh ended; its stderr may say why
        except protocol.RemoteError as e:
            # The remote daemon refused us: another user than its own is never let in.
            self.exit_reason = f"remote ifmemd: {e.message} ({e.code})"
            if e.code == protocol.DENIED:
                self.fatal = self.exit_reason
        except IfmemError as e:
            self.exit_reason = f"remote sent what is not the ifmem protocol: {e}"

    def _on_answer(self, rid: int, msg: dict[str, Any]) -> None:
        if msg.get("ok") is not True:
            error = msg.get("error")
            error = error if isinstance(error, dict) else {}
            reason = f"remote: {error.get('message', 'error')} ({error.get('code', '?')})"
            self._resolve({"type": "error", "rid": rid, "message": reason})
            return
        try:
            reply = self._reply(msg["result"])
        except (KeyError, TypeError, ValueError) as e:
            # A remote that answers in another shape fails this ask, not the daemon.
            reason = f"remote sent an answer this ifmem cannot read ({type(e).__name__}: {e})"
            self._resolve({"type": "error", "rid": rid, "message": reason})
            return
        self.served += 1
        self._resolve({"type": "result", "rid": rid, **reply})

    def _reply(self, result: dict[str, Any]) -> dict[str, Any]:
        """A remote `ask` result as a shard's search reply, quoting the remote's record of it."""
        host = self.target.host
        # Paths as the remote sees them, prefixed with its host: a citation says where.
        # (The coordinator checks every field's type as it reads the rows.)
        rows = [
            [
                f"{host}:{p['path']}",
                p["start_line"],
                p["end_line"],
                p["score"],
                p.get("coverage", 0.0),
                p.get("snippet", ""),
                # The remote's citation is already its span: the whole passage here.
                p["start_line"],
                p["end_line"],
                # The version the remote cut it from ("" from an ifmem before digests).
                p.get("digest", ""),
                # How like the question it is, when the remote's shard ranks by meaning.
                *([p["similarity"]] if "similarity" in p else []),
            ]
            for p in result["passages"]
        ]
        missing = [k for k in QUOTE_FIELDS if k not in result]
        if missing:
            # An answer nobody could audit is not taken (an ifmemd too old to quote its log).
            raise ValueError(f"no {', '.join(missing)} of the remote's record; upgrade its ifmem")
        return {"passages": rows, "remote": {k: result[k] for k in QUOTE_FIELDS}}

    async def _on_status(self, supervisor: Supervisor, msg: dict[str, Any], spawned: float) -> bool:
        """A heartbeat (or, the first time, readiness); False when the remote cannot serve us."""
        if msg.get("ok") is not True:
            self.exit_reason = f"remote status failed: {msg.get('error')}"
            return False
        status = msg["result"]
        theirs = {s["name"]: s for s in status["shards"]}
        unknown = [n for n in self.config.remote_shards if n not in theirs]
        if unknown:
            self.fatal = self.exit_reason = (
                f"{self.target.url} has no shard named {', '.join(map(repr, unknown))} "
                f"(it has {', '.join(map(repr, theirs))}); fix remote_shards"
            )
            return False
        mine = [theirs[n] for n in self.config.remote_shards or theirs]
        self.remote_log_id = status["log"]["log_id"]
        self.rss_bytes = sum(s.get("rss_bytes", 0) for s in mine)
        if self.status == "ready":
            supervisor.heard(self.name, self.rss_bytes, self.served, status["uptime_s"])
            return True
        info = {
            "files": sum(s.get("files", 0) for s in mine),
            "lines": sum(s.get("lines", 0) for s in mine),
            "tokens": sum(s.get("tokens", 0) for s in mine),
            "digest": "",  # the corpus is the remote's: its own log has the digests
            "load_ms": round((self.clock() - spawned) * 1000, 1),
        }
        self.ready_info = info | {"bytes": 0}
        await supervisor.record(
            "shard.ready",
            info | {"shard": self.name, "remote": self.target.url, "log_id": self.remote_log_id},
        )
        self.status = "ready"
        self.failure = ""
        self.ready_event.set()
        return True

    def status_json(self) -> dict[str, Any]:
        return super().status_json() | {
            "remote": self.target.url,
            "remote_log_id": self.remote_log_id or None,
            "exit_reason": self.exit_reason or None,
        }
