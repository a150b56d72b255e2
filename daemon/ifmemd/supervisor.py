"""The supervisor: keeps one child process per shard alive and records what they do.

Each shard runs `python -m ifmemd.shards.shard` under its own task: spawn, send its
init line, read results and heartbeats from its stdout, kill it with SIGKILL
when it goes silent for `heartbeat_timeout`, restart it with backoff when it
exits, mark it failed past the restart intensity. Shards never write the log;
every event about them is recorded here through `record`. A handle runs its
own process (`ShardHandle.run_once`): a remote shard's is `ssh` (see
`ifmemd.remote`, which supplies its handles through `make_handle`).
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import Process, TaskGroup, TaskStatus

from ifmemd.config import Config, DaemonConfig, ShardConfig
from ifmemd.errors import IfmemError
from ifmemd.pipewriter import PipeWriter
from ifmemd.restart import RestartPolicy, heartbeat_overdue
from ifmemd.shards import pipejson
from ifmemd.shards.index import Passage
from ifmemd.wire.framing import LineReader
from ifmemd.wire.protocol import ConnectionClosedError, ProtocolError

Recorder = Callable[[str, Mapping[str, Any]], Awaitable[Any]]
HandleFactory = Callable[[ShardConfig, DaemonConfig, Callable[[], float]], "ShardHandle"]
SHARD_STDOUT_MAX_LINE = 16 << 20
STOP_GRACE_S = 2.0


class ShardUnavailableError(IfmemError):
    """Raised when a search is sent to a shard that is not ready or dies before answering."""

    def __init__(self, shard: str, reason: str) -> None:
        self.shard = shard
        self.reason = reason
        super().__init__(f"shard {shard!r} unavailable: {reason}")


class ReplyGroup:
    """Requests to several shards, awaited together: `done` is set once, when the
    last of them has its reply (one wake-up for the asker, not one per shard)."""

    def __init__(self) -> None:
        self.outstanding = 0
        self.done = anyio.Event()

    def expect(self) -> None:
        """One more request to wait for. If every earlier one had its reply (`done` is
        set), `done` is re-armed: a shard asked once it finished starting answers later."""
        if self.done.is_set():
            self.done = anyio.Event()
        self.outstanding += 1

    def finished_one(self) -> None:
        self.outstanding -= 1
        if not self.outstanding:
            self.done.set()


@dataclass(slots=True)
class Pending:
    """A request sent to a shard, waiting for its reply (see `ShardHandle.submit`)."""

    rid: int
    done: anyio.Event
    group: ReplyGroup | None = None
    reply: dict[str, Any] | None = None
    error: str | None = None
    at: float = 0.0  # perf_counter() when the reply (or the failure) came

    def finish(self, reply: dict[str, Any] | None, error: str | None) -> None:
        if self.done.is_set():
            return
        self.reply, self.error, self.at = reply, error, time.perf_counter()
        self.done.set()
        if self.group is not None:
            self.group.finished_one()


class ShardHandle:
    """One supervised shard: its config, its current process, its health."""

    def __init__(self, config: ShardConfig, daemon: DaemonConfig, clock: Callable[[], float]):
        self.config = config
        self.daemon = daemon
        self.clock = clock
        self.status = "starting"
        self.pid: int | None = None
        self.process: Process | None = None
        self.stdin: PipeWriter | None = None  # the process's stdin
        self.policy = RestartPolicy(*daemon.restart_intensity)
        self.last_heard = clock()
        self.ready_info: dict[str, Any] = {}
        self.served = 0
        self.rss_bytes = 0
        # A shard ranking by meaning names the model of its vectors when ready
        # (`vectors`); shards of one model can share a question's vector. Its
        # heartbeats count the questions it encoded.
        self.vectors = ""
        self.encoded = 0
        # When it last let a question to encode for the others go unanswered in
        # time (time.monotonic(); the coordinator then asks another for a while).
        self.embed_late_at = -math.inf
        # Lines from its process that were not messages (dropped, see `_unreadable`).
        self.dropped_lines = 0
        self.failure = ""
        # How its files are watched: "inotify", "polling", "off" (watch = false); None: not yet.
        self.watch: str | None = None if config.watch else "off"
        # Passages of a `semantic` file shard still without their vector (None: not told yet).
        self.vectors_queued: int | None = None
        self.scope: anyio.CancelScope | None = None
        self._waiters: dict[int, Pending] = {}
        self._next_rid = 0
        self.ready_event = anyio.Event()
        # For a memory shard: whether working memory is empty (from the
        # projection, the source of truth); an empty one finds nothing, so
        # asks need not wake its process.
        self.empty: Callable[[], bool] | None = None
        self.fatal = ""  # why the shard process said it cannot serve (no restart helps)
        self.exit_reason = ""  # why its last run ended, when known (recorded in shard.exited)
        # A model-backed shard is ready on its index first ("loading"), its model
        # follows ("ready"); "down" from a process's exit until the next is ready.
        self.model_status = "loading" if config.uses_model else ""

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def model_ready(self) -> bool:
        """Whether this shard's model can be asked now (never, for a local shard)."""
        return self.config.uses_model and self.model_status == "ready"

    @property
    def outstanding(self) -> int:
        """How many requests to this shard await their reply."""
        return len(self._waiters)

    @property
    def ready(self) -> bool:
        return self.status == "ready" and self.process is not None

    async def run_once(self, supervisor: Supervisor) -> int:
        """Run this shard's process until it exits; its exit code (negative: a signal)."""
        return await supervisor._run_once(self)

    async def send(self, obj: dict[str, Any]) -> None:
        stdin = self.stdin
        if self.process is None or stdin is None or stdin.closed:
            raise ShardUnavailableError(self.name, f"not running ({self.status})")
        data = pipejson.dumps(obj)
        try:
            await stdin.send(data)
        except OSError as e:
            raise ShardUnavailableError(self.name, f"pipe closed: {e}") from e

    async def submit(self, op: str, /, group: ReplyGroup | None = None, **fields: Any) -> Pending:
        """Send `op` to this shard; its reply comes to the returned `Pending`
        (and counts in `group`, if given).

        The caller must `collect` it, or `discard` it if it stops waiting.
        """
        if not self.ready:
            raise ShardUnavailableError(self.name, f"status is {self.status}")
        self._next_rid += 1
        pending = Pending(self._next_rid, anyio.Event(), group)
        self._waiters[pending.rid] = pending
        if group is not None:
            group.expect()
        try:
            await self.send({"op": op, "rid": pending.rid, **fields})
        except BaseException:
            self.discard(pending)
            if group is not None:
                group.outstanding -= 1
            raise
        return pending

    async def collect(self, pending: Pending) -> dict[str, Any]:
        """Wait for the reply to a submitted request (the caller bounds the wait)."""
        try:
            await pending.done.wait()
        finally:
            self.discard(pending)
        return self.outcome(pending)

    def outcome(self, pending: Pending) -> dict[str, Any]:
        """The reply to a request that is done (its asker has discarded it);
        raises ShardUnavailableError if it failed."""
        if pending.error is not None:
            raise ShardUnavailableError(self.name, pending.error)
        assert pending.reply is not None, "outcome() of a request not done"
        return pending.reply

    def discard(self, pending: Pending) -> None:
        """Stop waiting for a reply: one that still comes is dropped."""
        self._waiters.pop(pending.rid, None)

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send `op` to this shard and wait for its reply (the caller bounds the wait)."""
        return await self.collect(await self.submit(op, **fields))

    @staticmethod
    def passages(reply: dict[str, Any]) -> list[Passage]:
        """The passages of a `search` reply."""
        return [Passage.from_row(p) for p in reply["passages"]]

    async def ask_model(self, question: str, k: int) -> dict[str, Any]:
        """Ask this shard's model; its answer with citations and token usage."""
        return await self.request("ask", question=question, k=k)

    async def synthesize(self, question: str, answers: list[dict[str, Any]]) -> dict[str, Any]:
        """Have this shard's model merge shard answers into one that keeps every citation."""
        return await self.request("synthesize", question=question, answers=answers)

    def _resolve(self, msg: dict[str, Any]) -> None:
        waiter = self._waiters.get(msg.get("rid", -1))
        if waiter is None:
            return  # the asker timed out and left
        if msg["type"] == "error":
            waiter.finish(None, str(msg.get("message", "error")))
        else:
            waiter.finish(msg, None)

    def _fail_waiters(self, reason: str) -> None:
        waiters = list(self._waiters.values())
        self._waiters.clear()
        for waiter in waiters:
            waiter.finish(None, reason)

    def status_json(self) -> dict[str, Any]:
        info = self.ready_info
        return {
            "name": self.name,
            "kind": self.config.kind,
            "backend": self.config.backend,
            **(
                {"model": self.config.model, "model_status": self.model_status}
                if self.config.uses_model
                else {}
            ),
            "description": self.config.description,
            "status": self.status,
            "pid": self.pid,
            "restarts": self.policy.total,
            "files": info.get("files", 0),
            "lines": info.get("lines", 0),
            "tokens": info.get("tokens", 0),
            "load_ms": info.get("load_ms"),
            **({"watch": self.watch} if self.config.kind == "files" else {}),
            **({"vectors_queued": self.vectors_queued} if self.config.semantic else {}),
            "served": self.served,
            **({"encoded": self.encoded} if self.config.semantic else {}),
            "rss_bytes": self.rss_bytes,
            "heartbeat_age_s": round(max(0.0, self.clock() - self.last_heard), 3),
            "failure": self.failure or None,
        }


# The exit code recorded for a shard whose process could not be started at all
# (out of descriptors, processes or memory), as a shell's for a command it cannot
# run: the restart policy then treats it as a crash, with its backoff.
SPAWN_FAILED = 127


def spawn_failure(error: OSError) -> str:
    """Why a shard's process could not be started, for `shard.exited`."""
    return f"cannot start its process: {error.strerror or error}"


def _unreadable(handle: ShardHandle, why: str) -> None:
    """Say (to the journal) that a line from `handle`'s process was dropped: the
    first, then each time the count doubles, so that a flood says so but briefly."""
    handle.dropped_lines += 1
    if handle.dropped_lines & (handle.dropped_lines - 1) == 0:
        print(
            f"ifmemd: shard {handle.name!r}: dropped a line that is not a message ({why}); "
            f"{handle.dropped_lines} so far",
            file=sys.stderr,
            flush=True,
        )


async def open_child(
    command: list[str], *, stderr: int | None = None
) -> tuple[Process, PipeWriter]:
    """Start a shard's process (or a remote's ssh): its stdout a pipe we read,
    its stdin our own pipe, written without a task switch (see PipeWriter)."""
    child_end, our_end = os.pipe()
    try:
        process = await anyio.open_process(
            command, stdin=child_end, stdout=subprocess.PIPE, stderr=stderr
        )
    except BaseException:
        os.close(our_end)
        raise
    finally:
        os.close(child_end)
    return process, PipeWriter(our_end)


class Supervisor:
    """All shards of a config, each under its own supervising task."""

    def __init__(
        self,
        config: Config,
        record: Recorder,
        memories: Callable[[], list[dict[str, str]]],
        clock: Callable[[], float] = time.monotonic,
        memory_empty: Callable[[], bool] | None = None,
        make_handle: HandleFactory | None = None,
    ) -> None:
        self.config = config
        self.make_handle = make_handle or ShardHandle
        self.record = record
        self.memories = memories
        self.memory_empty = memory_empty or (lambda: not self.memories())
        self.clock = clock
        self.shards: dict[str, ShardHandle] = {}
        self._tg: TaskGroup | None = None
        self.stopping = False
        # Heartbeats heard since the last `shard.heartbeats` event, by shard, each
        # [rss_bytes, served, uptime_s]: an array, not an object, as 8,640 rows a
        # day would otherwise spend a third of their bodies on the same keys.
        self._beats: dict[str, list[list[Any]]] = {}

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start every shard and supervise them until `stop()`."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for shard in self.config.shards:
                self._start(shard)
            tg.start_soon(self._heartbeat_rounds)
            task_status.started()

    async def _heartbeat_rounds(self) -> None:
        """Record the heartbeats of each `heartbeat_interval` as one event.

        One event a round instead of one a heartbeat: at the default 10 s with
        four shards that is 8,640 rows a day instead of 34,560, and each row
        carries 128 bytes of hash and signature. Hang detection reads
        `last_heard`, not the log, so it is unchanged.
        """
        while True:
            await anyio.sleep(self.config.daemon.heartbeat_interval)
            await self._record_round()

    def heard(self, shard: str, rss_bytes: int, served: int, uptime_s: float) -> None:
        """A heartbeat of `shard`, for the round's `shard.heartbeats` event."""
        self._beats.setdefault(shard, []).append([rss_bytes, served, uptime_s])

    async def _record_round(self) -> None:
        beats, self._beats = self._beats, {}
        # A shard's own timer is not aligned with the round: a silent round
        # beside a round with two heartbeats is jitter, not a hang.
        silent = sorted(
            name for name, h in self.shards.items() if h.process is not None and name not in beats
        )
        if beats or silent:
            await self.record("shard.heartbeats", {"beats": beats, "silent": silent})

    def _start(self, config: ShardConfig) -> ShardHandle:
        assert self._tg is not None
        handle = self.make_handle(config, self.config.daemon, self.clock)
        if config.kind == "memory":
            handle.empty = self.memory_empty
        self.shards[config.name] = handle
        self._tg.start_soon(self._supervise, handle)
        return handle

    async def _supervise(self, handle: ShardHandle) -> None:
        with anyio.CancelScope() as scope:
            handle.scope = scope
            while not self.stopping:
                handle.policy.started(self.clock())
                code = await handle.run_once(self)
                handle.process = None
                if handle.config.uses_model:
                    handle.model_status = "down"  # the next process loads its model anew
                handle._fail_waiters(f"the shard exited (code {code})")
                why = {"reason": handle.exit_reason} if handle.exit_reason else {}
                await self.record("shard.exited", {"shard": handle.name, "code": code, **why})
                if self.stopping:
                    handle.status = "stopped"
                    return
                if handle.fatal:
                    # It said why it cannot serve (no key, corpus over budget): a restart
                    # would fail the same way. `ifmem reload` gives it a fresh start.
                    handle.status = "failed"
                    handle.failure = handle.fatal
                    handle.ready_event.set()  # askers waiting for it to load: it never will
                    await self.record(
                        "shard.failed", {"shard": handle.name, "reason": handle.fatal}
                    )
                    return
                decision = handle.policy.exited(self.clock())
                if decision.failed:
                    handle.status = "failed"
                    handle.failure = f"shard {handle.name!r} {decision.reason}"
                    handle.ready_event.set()  # askers waiting for it to load: it never will
                    await self.record(
                        "shard.failed", {"shard": handle.name, "reason": decision.reason}
                    )
                    return
                handle.status = "restarting"
                await self.record(
                    "shard.restarting",
                    {
                        "shard": handle.name,
                        "delay_s": decision.delay_s,
                        "restarts": decision.restarts,
                    },
                )
                await anyio.sleep(decision.delay_s)

    async def _run_once(self, handle: ShardHandle) -> int:
        """Run the shard's process until it exits; return its exit code (negative: signal)."""
        handle.status = "starting"
        # Replace only a spent event: askers may already wait on the one not yet set
        # (a new handle's first run), and must be woken by this run's `ready`.
        if handle.ready_event.is_set():
            handle.ready_event = anyio.Event()
        handle.exit_reason = ""
        try:
            process, stdin = await open_child([sys.executable, "-m", "ifmemd.shards.shard"])
        except OSError as e:
            handle.exit_reason = spawn_failure(e)
            return SPAWN_FAILED
        handle.stdin = stdin
        handle.process, handle.pid = process, process.pid
        handle.last_heard = self.clock()
        await self.record("shard.spawned", {"shard": handle.name, "pid": process.pid})
        cfg, daemon = handle.config, self.config.daemon
        handle.fatal = ""
        init = {
            "op": "init",
            "name": cfg.name,
            "description": cfg.description,
            "kind": cfg.kind,
            "paths": list(cfg.paths),
            "exclude": list(cfg.exclude),
            "respect_gitignore": cfg.respect_gitignore,
            "watch": cfg.watch,
            "max_file_bytes": cfg.max_file_bytes,
            "semantic": cfg.semantic,
            "heartbeat_interval": daemon.heartbeat_interval,
            "memories": self.memories() if cfg.kind == "memory" else [],
        }
        if cfg.uses_model:
            init["model"] = cfg.model_settings()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watchdog, handle, process)
                try:
                    # A process that died at once (it could not import, say) took
                    # its stdin with it: its exit code and the restart policy tell.
                    with contextlib.suppress(ShardUnavailableError):
                        await handle.send(init)
                    await self._read(handle, process)
                finally:
                    tg.cancel_scope.cancel()
            with anyio.CancelScope(shield=True):
                return await process.wait()
        finally:
            with anyio.CancelScope(shield=True):
                await _reap(process, stdin)

    async def _watchdog(self, handle: ShardHandle, process: Process) -> None:
        timeout = self.config.daemon.heartbeat_timeout
        while True:
            await anyio.sleep(min(1.0, timeout / 4))
            if heartbeat_overdue(handle.last_heard, self.clock(), timeout):
                handle.status = "hung"
                with contextlib.suppress(ProcessLookupError):
                    process.kill()  # SIGKILL: a stopped (SIGSTOP) process ignores anything less
                return

    async def _read(self, handle: ShardHandle, process: Process) -> None:
        assert process.stdout is not None
        reader = LineReader(process.stdout, SHARD_STDOUT_MAX_LINE)
        while True:
            try:
                line = await reader.read_line()
            except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionClosedError):
                return
            except ProtocolError as e:
                # Longer than any message: skipped whole, the next line is read.
                _unreadable(handle, e.reason)
                continue
            try:
                msg = pipejson.loads(line)
                if not isinstance(msg, dict):
                    raise ValueError(f"a JSON {type(msg).__name__}, not an object")
                await self._message(handle, msg)
            except (ValueError, KeyError, TypeError) as e:
                # A shard's bug, or a library writing to its protocol: the line
                # is dropped, the shard's own messages still count.
                _unreadable(handle, f"{e!r:.200}")

    async def _message(self, handle: ShardHandle, msg: dict[str, Any]) -> None:
        """Act on one message from a shard (KeyError, TypeError, ValueError: malformed)."""
        name = handle.name
        handle.last_heard = self.clock()
        kind = msg.get("type")
        if kind in ("result", "answer", "synthesis", "error"):
            handle._resolve(msg)
        elif kind == "heartbeat":
            handle.served, handle.rss_bytes = msg["served"], msg["rss_bytes"]
            handle.encoded = msg.get("encoded", handle.encoded)
            self.heard(name, msg["rss_bytes"], msg["served"], msg["uptime_s"])
        elif kind == "ready":
            info = {k: msg[k] for k in ("files", "lines", "tokens", "digest", "load_ms")}
            # Model-backed shards say which model and whether the API counted the tokens.
            info |= {k: msg[k] for k in ("model", "token_source") if k in msg}
            handle.ready_info = info | {"bytes": msg.get("bytes", 0)}
            handle.vectors = str(msg.get("vectors", ""))
            await self.record("shard.ready", info | {"shard": name})
            if handle.config.uses_model:
                handle.model_status = str(msg.get("model_status", "ready"))
            handle.status = "ready"
            handle.failure = ""
            handle.ready_event.set()
        elif kind == "model_ready":
            info = {k: msg[k] for k in ("model", "tokens", "token_source", "load_ms")}
            handle.ready_info |= {k: info[k] for k in ("tokens", "token_source")}
            await self.record("shard.model_ready", info | {"shard": name})
            handle.model_status = "ready"
        elif kind == "warmed":
            await self.record(
                "shard.warmed", {"shard": name, "model": msg["model"], **msg["usage"]}
            )
        elif kind == "changed":
            # One batch of file changes the shard has indexed.
            await self.record(
                "corpus.changed",
                {"shard": name, "changed": msg["changed"], "removed": msg["removed"]},
            )
        elif kind == "watching":
            handle.watch = str(msg["mode"])
        elif kind == "vectors":
            handle.vectors_queued = int(msg["queued"])
        elif kind == "fatal":
            handle.fatal = str(msg.get("reason", "the shard cannot serve"))
        elif kind == "warning":
            await self.record(
                "shard.warning", {"shard": name, "path": msg["path"], "reason": msg["reason"]}
            )

    # -- control ------------------------------------------------------------------

    def ready_shards(self) -> list[ShardHandle]:
        return [h for h in self.shards.values() if h.ready]

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until every shard is ready or failed; False on timeout."""
        with anyio.move_on_after(timeout):
            while any(h.status not in ("ready", "failed") for h in self.shards.values()):
                await anyio.sleep(0.01)
            return True
        return False

    async def broadcast_memory(self, op: str, fields: dict[str, str]) -> None:
        """Tell every running memory shard about a remembered or forgotten item."""
        for handle in self.shards.values():
            if handle.config.kind == "memory" and handle.process is not None:
                with contextlib.suppress(ShardUnavailableError):
                    await handle.send({"op": op, **fields})

    async def reload(self, new: Config) -> dict[str, list[str]]:
        """Apply a new config: restart changed shards, start new, stop removed, keep the rest.

        Unchanged file shards re-read their corpus in place; failed shards get a fresh start.
        """
        diff = self.config.diff_shards(new)
        self.config = new
        changes: dict[str, list[str]] = {
            "added": list(diff.added),
            "removed": list(diff.removed),
            "restarted": [],
            "kept": [],
        }
        for name in diff.removed:
            await self._stop_one(self.shards.pop(name))
        for name in diff.added:
            self._start(_shard(new, name))
        for name in (*diff.changed, *diff.unchanged):
            handle, cfg = self.shards[name], _shard(new, name)
            if name in diff.changed or handle.status == "failed":
                # Stopped in place, not popped: until its successor takes the name,
                # `status` still lists it and an ask names it as missing, not unknown.
                await self._stop_one(handle)
                self._start(cfg)
                changes["restarted"].append(name)
            else:
                handle.daemon = new.daemon
                with contextlib.suppress(ShardUnavailableError):
                    await handle.send({"op": "reload"})
                changes["kept"].append(name)
        return changes

    async def _stop_one(self, handle: ShardHandle) -> None:
        handle.status = "stopping"  # no new searches
        if handle.scope is not None:
            handle.scope.cancel()
        # Its reader goes with the scope, so searches in flight would wait out ask_timeout.
        handle._fail_waiters("the shard is being stopped")
        handle.ready_event.set()  # and askers waiting for it to load: it never will
        process, stdin = handle.process, handle.stdin
        if process is not None and stdin is not None:
            await _reap(process, stdin)
            # The cancelled supervising task records nothing: say here that it is gone,
            # or a replay of the log would show it ready forever.
            await self.record(
                "shard.exited",
                {"shard": handle.name, "code": process.returncode, "reason": "stopped"},
            )
        handle.status = "stopped"

    async def stop(self) -> None:
        """Stop every shard: close its stdin, give it a moment, then kill it."""
        self.stopping = True
        async with anyio.create_task_group() as tg:
            for handle in self.shards.values():
                tg.start_soon(self._stop_one, handle)
        # The round in progress: every heartbeat received is in the log.
        if self._beats:
            await self._record_round()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()


def _shard(config: Config, name: str) -> ShardConfig:
    shard = config.shard(name)
    assert shard is not None, name  # names come from this config's own diff
    return shard


async def _reap(process: Process, stdin: PipeWriter) -> None:
    """End a shard process: EOF on stdin, a grace period, then SIGKILL; always waited for."""
    # Two reapers may race (the stopping supervisor and the shard's own task):
    # each gives the process its grace period, whoever closed stdin first.
    stdin.close()
    if process.returncode is None:
        with anyio.move_on_after(STOP_GRACE_S):
            await process.wait()
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    with anyio.CancelScope(shield=True):
        await process.wait()
    await process.aclose()
