"""`ifmem mcp`: the memory as an MCP server over stdio, for Claude Code and other MCP hosts.

A thin client of the daemon: every tool is one request on the daemon's socket
through `ifmemd.wire.protocol.Client`, and the answer goes back as structured output
with an output schema. Nothing here ranks, stores or decides; `memory_log` alone
reads the event log file itself, read-only, with the same library code as
`ifmem log`, so it works while the daemon is stopped.

Built on the SDK's high-level `MCPServer` (v1's FastMCP): the input schema,
argument validation and the output schema all come from one typed signature,
so what a model is told and what is enforced cannot drift apart. Shards are
resources `ifmem://shard/{name}`; `resources/list` asks the daemon which exist.

Error handling: a failure a caller can act on (daemon down, refused, slow; a
bad argument; an unknown shard or memory id) becomes a tool result with
`isError` and a message that says what is wrong and what to do. The SDK turns
anything else into a generic error result too, so no call ends the server.

This module imports the MCP SDK at the top: only `ifmem mcp` imports it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import json
import logging
from collections import deque
from pathlib import Path
from typing import Annotated, Any, Final

import anyio.to_thread
from ifmemd import __version__
from ifmemd.errors import IfmemError
from ifmemd.log.chain import LogChain
from ifmemd.system import paths
from ifmemd.wire.protocol import (
    MAX_K,
    MAX_SOURCE_BYTES,
    Client,
    ConnectionClosedError,
    DaemonTimeoutError,
    DaemonUnreachableError,
    RemoteError,
)
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.types import Resource, ToolAnnotations
from pydantic import BaseModel, BeforeValidator, Field

from ifmem.timefmt import format_ns

logger = logging.getLogger("ifmem.mcp")

SHARD_URI: Final = "ifmem://shard/{name}"
DEFAULT_K: Final = 5
DEFAULT_LOG_LIMIT: Final = 20
MAX_LOG_LIMIT: Final = 500
STATUS_TIMEOUT_S: Final = 10.0
"""How long `status`, `remember` and `forget` may take; `ask` has its own (`--timeout`)."""

START_HINT: Final = (
    "Start it with `ifmem daemon` (in a terminal, foreground) or "
    "`systemctl --user start ifmem.socket` (systemd), then call this tool again."
)

INSTRUCTIONS: Final = """\
ifmem is the user's long-term memory: project documentation, code, past sessions \
and notes remembered by agents, kept by a local daemon and searched on demand.

- Before answering questions about the user's projects, earlier decisions or \
anything you may have been told in an earlier session, call memory_ask, and cite \
the `citation` of every passage you rely on.
- When you learn something worth keeping beyond this session (a decision, a \
preference, where something lives, the outcome of an investigation), call \
memory_remember with one self-contained statement.
- When a remembered fact turns out wrong, memory_forget it and remember the \
correction.
- memory_status lists the shards (what each holds and whether it is healthy); \
memory_log shows what the memory was recently asked and told.
"""


def _not_bool(value: Any) -> Any:
    # JSON true is no count; pydantic would quietly take it for 1.
    if isinstance(value, bool):
        raise ValueError("must be an integer, not a boolean")
    return value


NotBool = BeforeValidator(_not_bool)


# --- structured output ---------------------------------------------------------


class Passage(BaseModel):
    """One passage of an answer, with where it comes from."""

    citation: str = Field(
        description="Where the passage is: `path:start-end` (1-based, inclusive line numbers) "
        "for a file, `memory:ID…` for a remembered note. Quote it when you use the passage."
    )
    path: str = Field(description="The file, or `memory:ID` for a remembered note.")
    start_line: int = Field(description="First line of the passage (1-based).")
    end_line: int = Field(description="Last line of the passage (inclusive).")
    shard: str = Field(description="The shard that found it.")
    snippet: str = Field(description="The passage's text, possibly shortened.")
    score: float = Field(
        description="Fused rank score, higher is better; comparable only within one answer."
    )


class MissingShard(BaseModel):
    """A shard that was asked but could not answer."""

    shard: str
    reason: str = Field(description="Why it could not answer (failed, restarting, timed out…).")


class ShardNote(BaseModel):
    """A model-backed shard that answered from its index alone this time, and why."""

    shard: str
    note: str = Field(description="Why (its model is still loading, say).")


class ModelAnswer(BaseModel):
    """An answer written by a shard's model (shards with an LLM backend only)."""

    shard: str
    model: str = ""
    text: str = ""
    verified: bool = Field(
        False, description="True when every citation in the text was checked against the corpus."
    )
    citations: list[dict[str, Any]] = Field(default_factory=list)
    unverified: list[dict[str, Any]] = Field(
        default_factory=list, description="Citations that could not be checked, and why."
    )


class Synthesis(BaseModel):
    """One answer merged from several model answers, when the daemon is configured to."""

    shard: str
    model: str = ""
    text: str = ""
    citations: list[dict[str, Any]] = Field(default_factory=list)
    invented: list[Any] = Field(
        default_factory=list, description="Citations the merge made up; removed from the text."
    )
    error: str | None = Field(None, description="Why no synthesis was made, when none was.")


class AskResult(BaseModel):
    """The answer to memory_ask."""

    question: str
    passages: list[Passage] = Field(description="The most relevant passages, best first.")
    missing: list[MissingShard] = Field(
        description="Shards that could not answer this time: their passages are absent, "
        "not irrelevant. Empty when every shard answered."
    )
    shards: list[str] = Field(description="The shards that answered.")
    notes: list[ShardNote] = Field(
        default_factory=list,
        description="Shards with an LLM backend whose model could not be asked yet: they "
        "gave their index's passages only. Asking again later gets their model's answer.",
    )
    answers: list[ModelAnswer] = Field(
        default_factory=list,
        description="Answers written by shards with an LLM backend, with their citations; "
        "empty when every shard is a local index.",
    )
    synthesis: Synthesis | None = Field(
        None, description="The model answers merged into one, when configured."
    )
    qid: str = Field(description="The query's id in the audit log.")
    seq: int = Field(description="Log position of the recorded answer.")


class RememberResult(BaseModel):
    """A note now in working memory."""

    memory_id: str = Field(description="The note's id: pass it to memory_forget.")
    citation: str = Field(description="How answers cite the note: `memory:ID`.")
    source: str | None = Field(None, description="The source given, if any.")
    seq: int = Field(description="Log position of the `memory.remembered` event.")


class ForgetResult(BaseModel):
    """A note removed from working memory."""

    memory_id: str
    seq: int = Field(description="Log position of the `memory.forgotten` event.")


class ShardInfo(BaseModel):
    """One shard's identity, size and health, as the daemon reports it."""

    name: str
    description: str | None = None
    kind: str | None = Field(None, description="`files` or `memory` (working memory).")
    backend: str | None = None
    status: str = Field(description="starting, ready, restarting or failed.")
    files: int = Field(0, description="Files loaded.")
    lines: int = Field(0, description="Lines loaded.")
    tokens: int = Field(0, description="Tokens held in memory.")
    served: int = Field(0, description="Questions answered since it started.")
    restarts: int = Field(0, description="Restarts since the daemon started.")
    rss_bytes: int | None = Field(None, description="Resident memory of the shard's process.")
    heartbeat_age_s: float | None = Field(None, description="Seconds since its last heartbeat.")
    failure: str | None = Field(None, description="Why it failed, when it did.")


class LogPosition(BaseModel):
    """Where the daemon's event log stands."""

    path: str
    seq: int = Field(description="Sequence number of the last event.")
    hash: str = Field(description="Hash of the last event (hex).")


class StatusResult(BaseModel):
    """The daemon and every shard."""

    version: str
    pid: int
    uptime_s: float
    socket: str
    log: LogPosition
    memories: int = Field(description="Notes in working memory.")
    clients: int = Field(0, description="Connected clients.")
    shards: list[ShardInfo]


class LogEvent(BaseModel):
    """One event of the audit log."""

    seq: int
    time: str = Field(description="When it was committed, UTC ISO 8601.")
    kind: str = Field(description="e.g. query.answered, memory.remembered, shard.failed.")
    body: dict[str, Any]


class LogResult(BaseModel):
    """The most recent matching events, oldest first."""

    log: str = Field(description="The event log file read.")
    head_seq: int = Field(description="Sequence number of the last event in the log.")
    events: list[LogEvent]


# --- errors --------------------------------------------------------------------


def explain(e: IfmemError) -> str:
    """What went wrong talking to the daemon and what to do about it, for a model to read.

    Tool errors reach the model as "Error executing tool NAME: " and this text.
    """
    if isinstance(e, DaemonUnreachableError):
        return (
            f"the ifmem daemon is not running (nothing answers on {e.path}: {e.reason}). "
            f"{START_HINT}"
        )
    if isinstance(e, RemoteError) and e.op == "handshake":
        return f"the ifmem daemon refused the connection: {e.message} ({e.code}). {START_HINT}"
    if isinstance(e, RemoteError):
        return f"{e.message} ({e.code})"
    if isinstance(e, DaemonTimeoutError):
        return (
            f"the ifmem daemon did not answer within {e.timeout:g} s; it is running but busy "
            "or stuck. Check `ifmem status`; for memory_ask, try fewer shards or a smaller k."
        )
    if isinstance(e, ConnectionClosedError):
        return (
            f"the ifmem daemon closed the connection ({e.reason}); it may be stopping or "
            f"restarting. Check `ifmem status`. If it is stopped: {START_HINT}"
        )
    return str(e)


# --- the server ----------------------------------------------------------------

ASK_DESCRIPTION: Final = """\
Search the user's long-term memory (documentation, code, past sessions, and notes \
stored with memory_remember) and return the most relevant passages, best first, each \
with a citation.

Use it before answering questions about the user's projects, earlier decisions or \
anything you may have been told in a previous session. Quote the `citation` of every \
passage you rely on: `path:start-end` for a file, `memory:ID` for a remembered note. \
Phrase the question in the words the source would likely use; several narrow \
questions work better than one broad one. `missing` lists shards that could not \
answer this time (their passages are absent, not irrelevant); memory_status says why."""

REMEMBER_DESCRIPTION: Final = """\
Store a fact in working memory so that later sessions (yours or another agent's) \
find it with memory_ask, cited as `memory:ID`.

Use it for durable information: decisions and their reasons, user preferences, where \
something lives, the outcome of an investigation. Write one self-contained statement \
that makes sense without this conversation: name the project, file or person, and \
give dates where they matter. Each call stores a new note (calling twice stores it \
twice). Notes are recorded in a signed audit log: never store secrets."""

FORGET_DESCRIPTION: Final = """\
Remove a note from working memory by its id, as returned by memory_remember or cited \
by memory_ask (`memory:ID` and the bare ID are both accepted). Later memory_ask calls \
no longer return it; the audit log keeps the history. Use it when a remembered fact \
has become wrong or obsolete, then memory_remember the corrected fact."""

STATUS_DESCRIPTION: Final = """\
Report the memory daemon's health: version, uptime, event log position, number of \
remembered notes, and every shard with its description, status (starting, ready, \
restarting, failed), size and heartbeat. Use it to learn which shards exist (for \
memory_ask's `shards`) or why an answer lists missing shards."""

LOG_DESCRIPTION: Final = """\
Read the most recent events of the memory's signed audit log, oldest first: questions \
asked and answered, notes remembered and forgotten, shards starting, failing and \
restarting. Use it to see what the memory was recently asked or told, or to diagnose \
a failing shard. Works while the daemon is stopped."""

SHARD_DESCRIPTION: Final = (
    "One memory shard: its description, kind, files and size loaded, and health "
    "(status, restarts, heartbeat, failure), as JSON. Needs the daemon running."
)


class IfmemMCP(MCPServer):
    """The MCP server: five tools and the shard resources, all backed by one daemon."""

    def __init__(
        self, socket_path: Path, db: Path | None = None, ask_timeout: float = 30.0
    ) -> None:
        super().__init__(
            name="ifmem",
            title="ifmem memory",
            description="A memory for LLM agents larger than one context window.",
            instructions=INSTRUCTIONS,
            version=__version__,
            log_level="WARNING",
        )
        self.socket_path = socket_path
        self.db = db
        self.ask_timeout = ask_timeout
        read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)
        tools = (
            (self.memory_ask, "Ask the memory", ASK_DESCRIPTION, read_only),
            (
                self.memory_remember,
                "Remember a fact",
                REMEMBER_DESCRIPTION,
                ToolAnnotations(
                    read_only_hint=False,
                    destructive_hint=False,
                    idempotent_hint=False,
                    open_world_hint=False,
                ),
            ),
            (
                self.memory_forget,
                "Forget a remembered fact",
                FORGET_DESCRIPTION,
                ToolAnnotations(
                    read_only_hint=False,
                    destructive_hint=True,
                    idempotent_hint=True,
                    open_world_hint=False,
                ),
            ),
            (self.memory_status, "Memory status", STATUS_DESCRIPTION, read_only),
            (self.memory_log, "Memory audit log", LOG_DESCRIPTION, read_only),
        )
        for fn, title, description, hints in tools:
            self.add_tool(
                fn,
                name=fn.__name__,
                title=title,
                description=description,
                annotations=hints,
                structured_output=True,
            )
        self.resource(
            SHARD_URI,
            name="shard",
            title="Memory shard",
            description=SHARD_DESCRIPTION,
            mime_type="application/json",
        )(self.read_shard)

    # -- talking to the daemon ----------------------------------------------------

    def _request_blocking(self, op: str, timeout: float, args: dict[str, Any]) -> Any:
        with Client(self.socket_path, timeout=timeout) as client:
            # A retry resends the same request id: the daemon answers it once.
            return client.request(op, retries=1, **args)

    async def request(self, op: str, timeout: float = STATUS_TIMEOUT_S, **args: Any) -> Any:
        """One daemon request, in a worker thread so the server keeps serving meanwhile."""
        call = functools.partial(self._request_blocking, op, timeout, args)
        return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)

    async def _tool_request(self, op: str, timeout: float, **args: Any) -> Any:
        """`request`, with daemon errors turned into a tool error result."""
        try:
            return await self.request(op, timeout, **args)
        except IfmemError as e:
            raise ToolError(explain(e)) from e

    # -- tools --------------------------------------------------------------------

    async def memory_ask(
        self,
        question: Annotated[
            str,
            Field(
                min_length=1,
                description="What to look for, in natural language or keywords "
                "(e.g. 'how are shards restarted after a crash').",
            ),
        ],
        shards: Annotated[
            list[str] | None,
            Field(
                description="Ask only these shards, by name (memory_status lists them). "
                "Omit to ask every shard."
            ),
        ] = None,
        k: Annotated[
            int,
            Field(ge=1, le=MAX_K, description=f"How many passages to return, 1 to {MAX_K}."),
            NotBool,
        ] = DEFAULT_K,
    ) -> AskResult:
        args: dict[str, Any] = {"question": question, "k": k}
        if shards:
            args["shards"] = shards
        result = await self._tool_request("ask", self.ask_timeout, **args)
        return AskResult.model_validate(result)

    async def memory_remember(
        self,
        text: Annotated[
            str,
            Field(
                min_length=1,
                description="The fact, as one self-contained statement "
                "(e.g. 'The ifmem project deploys from the release branch, decided 2025-03-02').",
            ),
        ],
        source: Annotated[
            str | None,
            Field(
                min_length=1,
                max_length=MAX_SOURCE_BYTES,
                description="Where the fact comes from, for the audit log: a URL, a file, "
                f"'user', a session name (at most {MAX_SOURCE_BYTES} bytes).",
            ),
        ] = None,
    ) -> RememberResult:
        args: dict[str, Any] = {"text": text}
        if source is not None:
            args["source"] = source
        result = await self._tool_request("remember", STATUS_TIMEOUT_S, **args)
        return RememberResult.model_validate(result)

    async def memory_forget(
        self,
        id: Annotated[
            str,
            Field(
                min_length=1,
                description="The note's id, bare or as cited (`memory:3f9a0c1b2d4e`).",
            ),
        ],
    ) -> ForgetResult:
        result = await self._tool_request("forget", STATUS_TIMEOUT_S, memory_id=id)
        return ForgetResult.model_validate(result)

    async def memory_status(self) -> StatusResult:
        result = await self._tool_request("status", STATUS_TIMEOUT_S)
        return StatusResult.model_validate(result)

    async def memory_log(
        self,
        kind: Annotated[
            str | None,
            Field(
                min_length=1,
                description="Only events of this kind; a glob such as 'memory.*', "
                "'query.answered' or 'shard.*'. Omit for every kind.",
            ),
        ] = None,
        limit: Annotated[
            int,
            Field(
                ge=1,
                le=MAX_LOG_LIMIT,
                description=f"How many of the most recent matching events, 1 to {MAX_LOG_LIMIT}.",
            ),
            NotBool,
        ] = DEFAULT_LOG_LIMIT,
    ) -> LogResult:
        path = await self._log_path()
        read = functools.partial(_read_log, path, kind, limit)
        try:
            return await anyio.to_thread.run_sync(read)
        except IfmemError as e:
            raise ToolError(str(e)) from e

    async def _log_path(self) -> Path:
        """The log to read: `--db`, else the one the running daemon writes, else the default."""
        if self.db is not None:
            return self.db
        try:
            status = await self.request("status", STATUS_TIMEOUT_S)
            return Path(status["log"]["path"])
        except (IfmemError, KeyError, TypeError):
            return paths.log_path()

    # -- resources ----------------------------------------------------------------

    async def list_resources(self) -> list[Resource]:
        """The static resources plus one `ifmem://shard/NAME` per shard the daemon runs."""
        listed = await super().list_resources()
        try:
            status = await self.request("status", STATUS_TIMEOUT_S)
        except IfmemError as e:
            # Hosts list resources when they connect, often before the daemon is up:
            # an empty list (with the template still advertised) beats a failed server.
            logger.warning("resources/list: no shards to list: %s", explain(e))
            return listed
        for s in status.get("shards", []):
            info = ShardInfo.model_validate(s)
            listed.append(
                Resource(
                    uri=SHARD_URI.format(name=info.name),
                    name=info.name,
                    title=f"Shard {info.name}",
                    description=f"{info.description or info.name} "
                    f"({info.status}; {info.files} files, {info.tokens} tokens)",
                    mime_type="application/json",
                )
            )
        return listed

    async def read_shard(self, name: str) -> str:
        uri = SHARD_URI.format(name=name)
        try:
            status = await self.request("status", STATUS_TIMEOUT_S)
        except IfmemError as e:
            raise ResourceError(f"read {uri}: {explain(e)}") from e
        shards = status.get("shards", [])
        for s in shards:
            if s.get("name") == name:
                info = ShardInfo.model_validate(s).model_dump(mode="json")
                return json.dumps({"uri": uri, **info}, ensure_ascii=False, indent=2)
        known = ", ".join(s.get("name", "?") for s in shards) or "none"
        raise ResourceNotFoundError(f"no shard named {name!r} (shards: {known})")


def _read_log(path: Path, kind: str | None, limit: int) -> LogResult:
    """The last `limit` events of kind `kind` (a glob) in the log at `path`, oldest first."""
    with LogChain.open(path) as elog:  # sealed segments and the live file
        head = elog.head_seq
        # Without a filter only the tail is read; with one, a scan keeps the last matches.
        after = max(0, head - limit) if kind is None else 0
        recent = deque(
            (
                r
                for r in elog.records(after, head)
                if kind is None or fnmatch.fnmatchcase(r.kind, kind)
            ),
            maxlen=limit,
        )
        events = [
            LogEvent(seq=r.seq, time=format_ns(r.ts_ns), kind=r.kind, body=r.data()) for r in recent
        ]
    return LogResult(log=str(path), head_seq=head, events=events)


def serve(socket_path: Path | None, db: Path | None, ask_timeout: float) -> None:
    """Serve MCP on stdin/stdout until the client closes them."""
    server = IfmemMCP(socket_path or paths.socket_path(), db, ask_timeout)
    # The SDK logs through rich, wrapped to a terminal's width; hosts keep our
    # stderr as a log file, where one line an entry reads better.
    logging.basicConfig(
        level=logging.WARNING, format="ifmem mcp: %(levelname)s: %(message)s", force=True
    )
    # Ctrl-C in a terminal: the client is gone too; no traceback.
    with contextlib.suppress(KeyboardInterrupt):
        server.run("stdio")
