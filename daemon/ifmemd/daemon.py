"""ifmemd: the daemon that composes the log, the supervisor, the coordinator and the server.

Start-up: read the config, open the log, rebuild the state (snapshot + the
tail, hash chain checked), mark queries that never got an answer as
`query.abandoned`, bind (or inherit) the socket, tell systemd READY=1, start
the shards. Shutdown (SIGTERM, `ifmem stop`): stop accepting, let in-flight
requests finish, stop the shards, record `daemon.stopping`, write a
checkpoint and a snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ifmemd import __version__
from ifmemd.config import ConfigError, load_config
from ifmemd.coordinator import LOGGED_PASSAGE_FIELDS, ask_shards, fuse, synthesize
from ifmemd.errors import LogInUseError, LogLockedError, NothingToPruneError, StoreError
from ifmemd.log import maintenance, segments
from ifmemd.log import snapshot as snapshots
from ifmemd.log.chain import LogChain
from ifmemd.log.eventlog import EventLog, Record
from ifmemd.log.events import decode
from ifmemd.log.keys import load_or_create_signer
from ifmemd.log.replay import replay
from ifmemd.log.segments import Segment
from ifmemd.log.state import Event, Projection, reads_body
from ifmemd.log.writer import LogWriter
from ifmemd.remote import make_handle
from ifmemd.supervisor import Supervisor
from ifmemd.system import paths, sdnotify
from ifmemd.wire import protocol
from ifmemd.wire.peercred import Peer
from ifmemd.wire.protocol import RequestId
from ifmemd.wire.server import Connection, OpError, Server, bind_socket, listener_from

DRAIN_TIMEOUT_S = 5.0
# How long a starting daemon waits for the log's folder (an `ifmem log seal` at work).
LOG_LOCK_WAIT_S = 10.0
# SIGHUPs waiting to be acted on; more in a burst are one reload.
HUP_BUFFER = 4
SUBSCRIBER_BUFFER = 10000
BACKLOG_PAGE = 1000
# How many of the unknown shards an ask named its error quotes.
SHOWN_NAMES = 5


@dataclass(frozen=True, slots=True)
class Options:
    """Where the daemon keeps things; defaults from `ifmemd.system.paths`."""

    config: Path | None = None
    socket: Path | None = None
    db: Path | None = None
    key: Path | None = None
    state_dir: Path | None = None


class _Subscriber:
    def __init__(self, kinds: list[str] | None) -> None:
        self.kinds = set(kinds) if kinds else None
        self.send, self.receive = anyio.create_memory_object_stream[Record](SUBSCRIBER_BUFFER)


class Daemon:
    """One running ifmemd."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.config_path = options.config
        self.config = load_config(options.config)
        state_dir = options.state_dir or paths.state_dir()
        self.checkpoints_path = state_dir / "checkpoints"
        self.snapshot_path = state_dir / "snapshot.json"
        self.socket_path = options.socket or paths.socket_path()
        signer = load_or_create_signer(options.key or paths.key_path())
        db = options.db or paths.log_path()
        # Held while the daemon runs: one writer a log (another daemon, or
        # `ifmem log seal|prune` on the files, would break the chain).
        self._lock = contextlib.ExitStack()
        try:
            self._lock.enter_context(segments.locked(db, wait_s=LOG_LOCK_WAIT_S))
        except LogLockedError as e:
            raise LogInUseError(db) from e
        segments.recover(db, signer)
        self.log = EventLog.open(db, signer)
        # Reads what the writer does not hold: sealed segments and committed rows.
        self.reader = LogChain.open(self.log.path)
        result = replay(self.reader, snapshot_path=self.snapshot_path)
        self.projection = Projection(result.state)
        self.replay_note = f"replayed {result.replayed} events" + (
            f" after snapshot at seq {result.from_snapshot}" if result.from_snapshot else ""
        )
        self.writer = LogWriter(
            self.log,
            checkpoint_every=self.config.daemon.checkpoint_every,
            checkpoints_path=self.checkpoints_path,
            on_commit=self._on_commit,
            segment_events=self.config.log.segment_events,
            segment_age_s=self.config.log.segment_age,
            before_seal=self._before_seal,
            after_seal=self._after_seal,
        )
        self.supervisor = Supervisor(
            self.config,
            self.writer.append,
            self._memories,
            memory_empty=lambda: not self.projection.memories,
            make_handle=make_handle,
        )
        self.server: Server | None = None
        self.started = time.monotonic()
        self._subscribers: set[_Subscriber] = set()
        # Held while a sealed segment is compressed or segments are pruned: a prune
        # planned from the plain file's name would miss the .zst that replaced it.
        self._segments_lock = anyio.Lock()
        self._inflight: dict[str, anyio.Event] = {}
        self._stop = anyio.Event()
        self._reload_lock = anyio.Lock()
        self._stop_reason = ""
        self._bound_socket = False
        self._snapshot_seq = result.state.seq
        self._tg: TaskGroup | None = None
        self._hups: MemoryObjectSendStream[int] | None = None  # SIGHUPs (set by `run`)

    # -- the log ------------------------------------------------------------------

    def _on_commit(self, records: list[Record], fields: list[Mapping[str, Any] | None]) -> None:
        for r, appended in zip(records, fields, strict=True):
            # The state reads few bodies, and those the daemon just encoded from
            # `appended`: the fields are what the body decodes to (less "v").
            if not reads_body(r.kind):
                data: Mapping[str, Any] = {}
            elif appended is not None:
                data = appended
            else:
                data = decode(r.seq, r.kind, r.body)
            self.projection.advance(Event(r.seq, r.ts_ns, r.kind, data), r.hash)
        for sub in list(self._subscribers):
            for r in records:
                if sub.kinds is None or r.kind in sub.kinds:
                    try:
                        sub.send.send_nowait(r)
                    except anyio.WouldBlock:
                        # A subscriber that cannot keep up is dropped, not waited for.
                        self._subscribers.discard(sub)
                        sub.send.close()
                        break

    def _before_seal(self) -> None:
        # Sealing folds the -wal into the file, which a reader mid-read would block.
        self.reader.close()

    def _after_seal(self, segment: Segment | None) -> None:
        self.log = self.writer.log
        self.reader = LogChain.open(self.log.path)
        if segment is None or self._tg is None:
            return
        print(f"ifmemd: sealed {segment.path}", file=sys.stderr, flush=True)
        # A snapshot on the new live file: start-up need not open the segment.
        self._tg.start_soon(self._snapshot_now)
        if self.config.log.compress == "zstd":
            self._tg.start_soon(self._compress, [segment])

    async def _compress(self, found: list[Segment]) -> None:
        """Compress sealed segments off the event loop; readers then find the .zst."""
        for segment in found:
            if segment.compressed:
                continue
            async with self._segments_lock:
                if not segment.path.exists():
                    continue  # pruned meanwhile
                try:
                    await anyio.to_thread.run_sync(segments.compress, segment)
                except StoreError as e:
                    # The plain segment stays, readable as it is; the next start tries again.
                    print(f"ifmemd: {e}", file=sys.stderr, flush=True)
                    continue
                self.reader.reload_segments()

    def _memories(self) -> list[dict[str, str]]:
        return [
            {"memory_id": m.memory_id, "text": m.text} for m in self.projection.memories.values()
        ]

    # -- running ------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until stopped by a signal or `ifmem stop`.

        Signals are caught from here to the end: one that comes before the task
        reading them starts waits for it (a SIGHUP right after READY, say).
        SIGHUP has a handler of its own rather than anyio's receiver: closing a
        receiver puts back the default action (the end of the process) before
        anything else could be put there, and a SIGHUP at that moment, at the
        end of a stop, ended the daemon. This one is swapped for "ignore" in one
        step, and the interpreter leaves that as it is when it exits.
        """
        self._hups, hups = anyio.create_memory_object_stream[int](HUP_BUFFER)
        loop = asyncio.get_running_loop()

        def on_hup(signum: int, _frame: object) -> None:
            # On the loop's thread, between two bytecodes: hand it to the loop.
            loop.call_soon_threadsafe(self._hup)

        signal.signal(signal.SIGHUP, on_hup)
        try:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                await self._run(signals, hups)
        finally:
            signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def _hup(self) -> None:
        assert self._hups is not None
        with contextlib.suppress(anyio.WouldBlock, anyio.ClosedResourceError):
            self._hups.send_nowait(signal.SIGHUP)  # a burst is one reload (or a few)

    async def _run(self, signals: AsyncIterator[int], hups: MemoryObjectReceiveStream[int]) -> None:
        inherited = sdnotify.listen_fds()
        if inherited:
            sock = inherited[0]
        else:
            sock = bind_socket(self.socket_path)
            self._bound_socket = True
        listener = await listener_from(sock)
        async with anyio.create_task_group() as tg:
            self._tg = tg
            await tg.start(self.writer.run)
            await self._recover()
            if self.config.log.compress == "zstd":
                # Segments a crash left uncompressed.
                tg.start_soon(self._compress, self.reader.segments)
            self.server = Server(
                listener, self._handle, self._denied, self.config.daemon.max_clients
            )
            await tg.start(self.supervisor.run)
            server_scope = anyio.CancelScope()
            tg.start_soon(self._serve, server_scope)
            tg.start_soon(self._signals, signals)
            tg.start_soon(self._reloads, hups)
            tg.start_soon(self._watchdog)
            sdnotify.notify("READY=1", f"STATUS={self._status_line()}", f"MAINPID={os.getpid()}")
            print(
                f"ifmemd {__version__}: listening on {self.socket_path}; {self.replay_note}; "
                f"log {self.log.path} at seq {self.log.head_seq}",
                file=sys.stderr,
                flush=True,
            )
            await self._stop.wait()
            sdnotify.notify("STOPPING=1", "STATUS=stopping")
            self.server.stop_accepting()
            await self.server.wait_idle(DRAIN_TIMEOUT_S)
            server_scope.cancel()
            await self.supervisor.stop()
            await self._shutdown_log()
            # The socket goes last: whoever waits for it to vanish (`ifmem stop`, then
            # perhaps a new daemon on this log) finds the shards gone and the log
            # complete. Unlinked before closing, so we never remove a successor's socket.
            if self._bound_socket:
                self.socket_path.unlink(missing_ok=True)
            await listener.aclose()
            tg.cancel_scope.cancel()
        self.reader.close()
        self.log.close()
        self._lock.close()

    async def _serve(self, scope: anyio.CancelScope) -> None:
        assert self.server is not None
        with scope:
            await self.server.serve()

    async def _recover(self) -> None:
        abandoned = [
            ("query.abandoned", {"qid": qid, "reason": "the daemon stopped before answering"})
            for qid in self.projection.pending
        ]
        await self.writer.append_many(
            [
                *abandoned,
                (
                    "daemon.started",
                    {
                        "pid": os.getpid(),
                        "version": __version__,
                        "shards": [s.name for s in self.config.shards],
                        "abandoned": len(abandoned),
                    },
                ),
            ]
        )

    async def _shutdown_log(self) -> None:
        await self.writer.append("daemon.stopping", {"reason": self._stop_reason or "stop"})
        checkpoint = await anyio.to_thread.run_sync(self.writer.write_checkpoint)
        if checkpoint is not None:
            await self.writer.append(
                "checkpoint", {"seq": checkpoint.seq, "hash": checkpoint.hash.hex()}
            )
        await self.writer.close()
        await self._snapshot_now()

    async def _snapshot_now(self) -> None:
        """Save a snapshot of the state as it is now: taken on the event loop, which
        alone advances it, and written from a worker thread."""
        state = self.projection.state()
        await anyio.to_thread.run_sync(snapshots.save, self.snapshot_path, self.log.log_id, state)
        self._snapshot_seq = state.seq

    async def _signals(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            self.request_stop(signal.Signals(signum).name)

    async def _reloads(self, hups: MemoryObjectReceiveStream[int]) -> None:
        async for _ in hups:
            if self._stop.is_set():
                continue  # no reload once stopping
            try:
                await self.reload()
            except ConfigError as e:
                print(f"ifmemd: reload refused: {e}", file=sys.stderr, flush=True)

    async def _watchdog(self) -> None:
        interval = sdnotify.watchdog_interval()
        period = min(interval, 2.0) if interval else 2.0
        while True:
            await anyio.sleep(period)
            lines = [f"STATUS={self._status_line()}"]
            # Only a daemon whose writer still commits is healthy enough to pet the watchdog.
            if interval and self.writer.healthy:
                lines.append("WATCHDOG=1")
            sdnotify.notify(*lines)
            if self.projection.seq - self._snapshot_seq >= self.config.daemon.checkpoint_every:
                # Not taken in a thread: the loop advances the state meanwhile, and a
                # copy made across that could stand on a seq it lacks events of.
                await self._snapshot_now()

    def _status_line(self) -> str:
        shards = self.supervisor.shards.values()
        ready = sum(1 for h in shards if h.ready)
        failed = [h.name for h in shards if h.status == "failed"]
        text = f"{ready}/{len(shards)} shards ready; log at seq {self.projection.seq}"
        return text + (f"; failed: {', '.join(failed)}" if failed else "")

    def request_stop(self, reason: str) -> None:
        self._stop_reason = reason
        self._stop.set()

    async def reload(self) -> dict[str, Any]:
        """Re-read the config and corpora; a broken config changes nothing and says why."""
        # SIGHUP and `ifmem reload` may race: one reload at a time, each reading
        # the file afresh, so the last one applies the newest config.
        async with self._reload_lock:
            new = load_config(self.config_path)
            changes = await self.supervisor.reload(new)
            self.config = new
            self.writer.checkpoint_every = new.daemon.checkpoint_every
            if self.server is not None:
                # Open connections stay; only new ones count against the new limit.
                self.server.max_clients = new.daemon.max_clients
            await self.writer.append(
                "config.loaded", {"shards": [s.name for s in new.shards], **changes}
            )
            return changes

    # -- requests -----------------------------------------------------------------

    async def _denied(self, peer: Peer | None, reason: str) -> None:
        # An unidentifiable peer is recorded with uid and pid -1.
        who = {"uid": -1, "pid": -1}
        if peer is not None:
            who = {"uid": peer.uid, "gid": peer.gid, "pid": peer.pid}
        await self.writer.append("client.denied", {**who, "reason": reason})

    async def _handle(self, conn: Connection, request: protocol.Request) -> Any:
        op = request.op
        # The id as sent: 5 and "5" are different requests (JSON keeps them apart).
        rid = request.id
        args = request.args
        if op == protocol.ASK:
            return await self.ask(rid, args["question"], args.get("shards"), args.get("k", 10))
        if op == protocol.REMEMBER:
            async with self._exclusive(rid):
                return await self.remember(rid, args["text"], args.get("source"))
        if op == protocol.FORGET:
            async with self._exclusive(rid):
                return await self.forget(rid, args["memory_id"])
        if op == protocol.STATUS:
            return self.status()
        if op == protocol.RELOAD:
            try:
                return await self.reload()
            except ConfigError as e:
                raise OpError(protocol.BAD_REQUEST, f"reload refused, nothing changed: {e}") from e
        if op == protocol.STOP:
            self.request_stop("ifmem stop")
            return {"stopping": True}
        if op == protocol.SUBSCRIBE:
            await self.subscribe(conn, request)
            return None
        if op == protocol.SEAL:
            return await self.seal()
        if op == protocol.PRUNE:
            return await self.prune(args.get("before_seq"), args.get("before_ns"))
        raise OpError(protocol.UNKNOWN_OP, f"unknown op {op!r}")

    @contextlib.asynccontextmanager
    async def _exclusive(self, rid: RequestId) -> AsyncIterator[None]:
        """One request per id at a time: a retry racing its original (a client that
        timed out and resent) then finds the original's answer instead of acting twice."""
        while rid in self._inflight:
            await self._inflight[rid].wait()
        done = self._inflight[rid] = anyio.Event()
        try:
            yield
        finally:
            del self._inflight[rid]
            done.set()

    def _recorded(self, rid: RequestId) -> Record | None:
        seq = self.projection.answered.get(rid)
        return self.reader.record(seq) if seq is not None else None

    async def ask(self, rid: RequestId, question: str, shards: list[str] | None, k: int) -> dict:
        """Answer a question, exactly once per request id."""
        while rid in self._inflight:  # the same id is being answered right now
            await self._inflight[rid].wait()
        recorded = self._recorded(rid)
        if recorded is not None and recorded.kind != "query.abandoned":
            return self._replayed(rid, question, recorded)
        # A shard named twice is asked once (and recorded once).
        names = list(dict.fromkeys(shards)) if shards else list(self.supervisor.shards)
        unknown = [n for n in names if n not in self.supervisor.shards]
        if unknown:
            named = ", ".join(map(protocol.shown, unknown[:SHOWN_NAMES]))
            more = f" and {len(unknown) - SHOWN_NAMES} more" if len(unknown) > SHOWN_NAMES else ""
            raise OpError(protocol.NOT_FOUND, f"no shard named {named}{more}")
        done = self._inflight[rid] = anyio.Event()
        try:
            return await self._answer(rid, question, names, k, routed=not shards)
        finally:
            del self._inflight[rid]
            done.set()

    async def _answer(
        self, rid: RequestId, question: str, names: list[str], k: int, *, routed: bool = True
    ) -> dict:
        # Taken before the first await: a reload may remove a shard meanwhile, and
        # the removed handle then reports itself stopped rather than vanishing.
        handles = [self.supervisor.shards[n] for n in names]
        await self.writer.append(
            "query.received", {"qid": rid, "question": question, "shards": names, "k": k}
        )
        coordinator = self.config.coordinator
        answers = await ask_shards(
            handles,
            question,
            k,
            self.config.daemon.ask_timeout,
            route_top_n=coordinator.route_top_n,
            route_min_coverage_ratio=coordinator.route_min_coverage_ratio,
            routed=routed,
        )
        if answers and all(a.missing for a in answers):
            # Nothing to give: a failure, recorded as such (a retry of this id
            # gets the same failure; a later question is asked afresh).
            reason = "no shard answered: " + "; ".join(f"{a.shard}: {a.missing}" for a in answers)
            await self.writer.append("query.failed", {"qid": rid, "reason": reason})
            raise OpError(protocol.UNAVAILABLE, reason)
        passages = fuse(answers, k)
        missing = [{"shard": a.shard, "reason": a.missing} for a in answers if a.missing]
        answered = [a.shard for a in answers if not a.missing]
        result: dict[str, Any] = {
            "qid": rid,
            "question": question,
            "passages": passages,
            "missing": missing,
            "shards": answered,
        }
        notes = [{"shard": a.shard, "note": a.note} for a in answers if a.note]
        if notes:
            result["notes"] = notes
        model_answers = [a for a in answers if a.reply is not None]
        if model_answers:
            result["answers"] = [a.answer_json() for a in model_answers]
        if coordinator.synthesize and len(model_answers) >= 2:
            first = self.supervisor.shards[model_answers[0].shard]
            result["synthesis"] = await synthesize(first, question, model_answers)
        logged = {
            "results": [a.result_body() for a in answers if not a.missing],
            "passage_fields": list(LOGGED_PASSAGE_FIELDS),
        }
        record = await self.writer.append("query.answered", {**result, **logged})
        # seq, hash and log_id name the signed record of this answer: a host that
        # asked us as its remote shard records them, for `audit verify --peer`.
        return {**result, **self._signed(record), "replayed": False}

    def _signed(self, record: Record) -> dict[str, Any]:
        return {"seq": record.seq, "hash": record.hash.hex(), "log_id": self.log.log_id.hex()}

    def _replayed(self, rid: RequestId, question: str | None, record: Record) -> dict:
        data = decode(record.seq, record.kind, record.body)
        if record.kind == "query.failed":
            raise OpError(protocol.UNAVAILABLE, f"query {rid} failed: {data['reason']}")
        if not record.kind.startswith("query.") or (
            question is not None and data.get("question") != question
        ):
            raise OpError(
                protocol.DUPLICATE_ID, f"request id {rid!r} was already used for another request"
            )
        data.pop("v", None)
        # The log's record of each shard, not part of the reply.
        data.pop("results", None)
        data.pop("passage_fields", None)
        return {**data, **self._signed(record), "replayed": True}

    async def remember(self, rid: RequestId, text: str, source: str | None = None) -> dict:
        """Add `text` to working memory, exactly once per request id; `source` says where
        it came from (recorded in the event when given)."""
        # Only a given source is written or returned: bodies without one stay as before.
        with_source = {"source": source} if source is not None else {}
        recorded = self._recorded(rid)
        if recorded is not None:
            data = decode(recorded.seq, recorded.kind, recorded.body)
            # The same id for other text is another request, not a retry.
            if (
                recorded.kind != "memory.remembered"
                or data["text"] != text
                or data.get("source") != source
            ):
                raise OpError(
                    protocol.DUPLICATE_ID,
                    f"request id {rid!r} was already used for another request",
                )
            return {
                "memory_id": data["memory_id"],
                "citation": f"memory:{data['memory_id']}",
                **with_source,
                "seq": recorded.seq,
                "replayed": True,
            }
        memory_id = secrets.token_hex(6)
        while memory_id in self.projection.memories:
            memory_id = secrets.token_hex(6)
        record = await self.writer.append(
            "memory.remembered",
            {"memory_id": memory_id, "text": text, "rid": rid, **with_source},
        )
        await self.supervisor.broadcast_memory("add", {"memory_id": memory_id, "text": text})
        return {
            "memory_id": memory_id,
            "citation": f"memory:{memory_id}",
            **with_source,
            "seq": record.seq,
            "replayed": False,
        }

    async def forget(self, rid: RequestId, memory_id: str) -> dict:
        if memory_id.startswith("memory:"):
            memory_id = memory_id[len("memory:") :]
        recorded = self._recorded(rid)
        if recorded is not None:
            # A retry must name the same item; anything else reusing the id is refused.
            data = decode(recorded.seq, recorded.kind, recorded.body)
            if recorded.kind != "memory.forgotten" or data["memory_id"] != memory_id:
                raise OpError(
                    protocol.DUPLICATE_ID,
                    f"request id {rid!r} was already used for another request",
                )
            return {"memory_id": memory_id, "seq": recorded.seq, "replayed": True}
        if memory_id not in self.projection.memories:
            raise OpError(protocol.NOT_FOUND, f"no remembered item memory:{memory_id}")
        record = await self.writer.append("memory.forgotten", {"memory_id": memory_id, "rid": rid})
        await self.supervisor.broadcast_memory("remove", {"memory_id": memory_id})
        return {"memory_id": memory_id, "seq": record.seq, "replayed": False}

    async def seal(self) -> dict[str, Any]:
        """Seal the live log file now (`ifmem log seal`)."""
        try:
            segment = await self.writer.seal()
        except StoreError as e:
            raise OpError(protocol.UNAVAILABLE, f"seal refused: {e}") from e
        return {"segment": str(segment.path), "first_seq": segment.first, "last_seq": segment.last}

    async def prune(self, before_seq: int | None, before_ns: int | None) -> dict[str, Any]:
        """Delete the sealed segments wholly before a seq or a time (`ifmem log prune`)."""
        async with self._segments_lock:
            return await self._prune(before_seq, before_ns)

    async def _prune(self, before_seq: int | None, before_ns: int | None) -> dict[str, Any]:
        chain = self.reader
        # A note forgotten but not yet committed must not be carried over the prune.
        await self.writer.settled()
        try:
            plan = segments.plan_prune(
                chain.segments,
                chain.first_row_after,
                before_seq=before_seq,
                before_ns=before_ns,
            )
            carried = maintenance.carried_memories(
                self.projection.memories.values(), plan.first_kept_seq, chain
            )
        except NothingToPruneError as e:
            raise OpError(protocol.NOT_FOUND, str(e)) from e
        except StoreError as e:
            raise OpError(protocol.UNAVAILABLE, f"prune refused: {e}") from e
        # No await since `settled`: nothing appended meanwhile goes before these.
        *_, record = await self.writer.append_many([*carried, ("log.pruned", plan.fields())])
        # What else the deleted events built lives on in a snapshot standing after them.
        await self._snapshot_now()
        self.reader.close()
        try:
            segments.delete_pruned(plan)
        finally:
            self.reader = LogChain.open(self.log.path)
        return {
            "deleted": [s.path.name for s in plan.doomed],
            "first_kept_seq": plan.first_kept_seq,
            "seq": record.seq,
        }

    def status(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started, 1),
            "socket": str(self.socket_path),
            "config": str(self.config_path) if self.config_path else None,
            "log": {
                "path": str(self.log.path),
                "log_id": self.log.log_id.hex(),
                "seq": self.projection.seq,
                "hash": self.projection.hash.hex(),
            },
            "memories": len(self.projection.memories),
            "clients": self.server.clients if self.server else 0,
            "shards": [h.status_json() for h in self.supervisor.shards.values()],
        }

    async def subscribe(self, conn: Connection, request: protocol.Request) -> None:
        """Stream committed events: the backlog after `since_seq`, then live ones."""
        sub = _Subscriber(request.args.get("kinds"))
        self._subscribers.add(sub)
        try:
            await conn.send(
                protocol.ok_response(request.id, {"subscribed": True, "seq": self.projection.seq})
            )
            last = request.args.get("since_seq")
            if last is not None:
                upto = self.projection.seq
                while last < upto:
                    # A page at a time, each read to its end before sending: no read
                    # stays open across an await (a seal may replace the reader).
                    page = list(
                        self.reader.records(after=last, upto=min(upto, last + BACKLOG_PAGE))
                    )
                    if not page:
                        break
                    for record in page:
                        if sub.kinds is None or record.kind in sub.kinds:
                            await conn.send(protocol.event_message(request.id, record.to_json()))
                        last = record.seq
            async with sub.receive:
                async for record in sub.receive:
                    if last is not None and record.seq <= last:
                        continue
                    await conn.send(protocol.event_message(request.id, record.to_json()))
                    last = record.seq
            # The stream only ends when _on_commit dropped us for falling behind.
            await conn.send(
                protocol.error_response(
                    request.id,
                    protocol.UNAVAILABLE,
                    f"subscriber fell {SUBSCRIBER_BUFFER} events behind and was dropped; "
                    f"subscribe again with since_seq={last}",
                )
            )
        finally:
            self._subscribers.discard(sub)
