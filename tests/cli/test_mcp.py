"""`ifmem mcp` end to end: the SDK's stdio client, the installed command, a real daemon."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from daemonproc import DaemonFactory, DaemonProc, factory
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, TextContent

_SCRIPT = Path(sys.executable).with_name("ifmem")
# The installed console script, as a host would run it; the module if not installed.
IFMEM = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "ifmem"]
TOOLS = {"memory_ask", "memory_remember", "memory_forget", "memory_status", "memory_log"}
START_HINT = "systemctl --user start ifmem.socket"
CITATION = re.compile(r"^.+:\d+-\d+$")
SESSION_TIMEOUT_S = 20


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProc]:
    """One daemon for the tests that leave it running."""
    with factory(tmp_path_factory.mktemp("mcp")) as make:
        yield make()


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[DaemonFactory]:
    with factory(tmp_path) as make:
        yield make


@contextlib.asynccontextmanager
async def session(daemon: DaemonProc, *args: str) -> AsyncIterator[ClientSession]:
    """An initialized MCP session with a fresh `ifmem mcp` talking to `daemon`."""
    env = {**daemon.env(), "IFMEM_SOCKET": str(daemon.socket_path)}
    params = StdioServerParameters(command=IFMEM[0], args=[*IFMEM[1:], "mcp", *args], env=env)
    with (daemon.root / "mcp.stderr").open("a") as errlog, anyio.fail_after(SESSION_TIMEOUT_S):
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as s,
        ):
            await s.initialize()
            yield s


async def call(s: ClientSession, tool: str, **arguments: Any) -> CallToolResult:
    result = await s.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    return result


async def ok(s: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool that must succeed; its structured output."""
    result = await call(s, tool, **arguments)
    assert not result.is_error, text(result)
    assert result.structured_content is not None
    return result.structured_content


async def error(s: ClientSession, tool: str, **arguments: Any) -> str:
    """Call a tool that must fail; its error message."""
    result = await call(s, tool, **arguments)
    assert result.is_error, result
    return text(result)


def text(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


@pytest.mark.anyio
async def test_lists_tools_with_schemas_and_shards_as_resources(shared: DaemonProc) -> None:
    async with session(shared) as s:
        assert s.server_info is not None and s.server_info.name == "ifmem"
        assert s.instructions and "memory_ask" in s.instructions
        tools = {t.name: t for t in (await s.list_tools()).tools}
        assert set(tools) == TOOLS
        for t in tools.values():
            assert t.description and len(t.description) > 80, t.name
            assert t.output_schema is not None, t.name
        ask = tools["memory_ask"].input_schema
        assert ask["required"] == ["question"]
        assert ask["properties"]["k"]["minimum"] == 1
        assert ask["properties"]["k"]["maximum"] == 100
        passage = tools["memory_ask"].output_schema
        assert passage is not None and "passages" in passage["properties"]
        assert tools["memory_forget"].input_schema["required"] == ["id"]
        assert set(tools["memory_remember"].input_schema["properties"]) == {"text", "source"}
        assert tools["memory_status"].annotations is not None
        assert tools["memory_status"].annotations.read_only_hint is True
        assert tools["memory_forget"].annotations is not None
        assert tools["memory_forget"].annotations.destructive_hint is True

        templates = (await s.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["ifmem://shard/{name}"]
        resources = {str(r.uri): r for r in (await s.list_resources()).resources}
        assert set(resources) == {f"ifmem://shard/{n}" for n in ("docs", "code", "working")}
        assert resources["ifmem://shard/docs"].mime_type == "application/json"

        read = await s.read_resource("ifmem://shard/docs")
        (content,) = read.contents
        docs = json.loads(content.text)  # type: ignore[union-attr]
        assert docs["name"] == "docs"
        assert docs["status"] == "ready"
        assert docs["files"] == 3
        assert docs["tokens"] > 0
        assert docs["uri"] == "ifmem://shard/docs"
        with pytest.raises(MCPError, match="no shard named 'nope'"):
            await s.read_resource("ifmem://shard/nope")


@pytest.mark.anyio
async def test_ask_status_and_log_return_structured_output(shared: DaemonProc) -> None:
    async with session(shared) as s:
        answer = await ok(s, "memory_ask", question="lighthouse beacon fog", k=3)
        assert answer["question"] == "lighthouse beacon fog"
        assert 1 <= len(answer["passages"]) <= 3
        best = answer["passages"][0]
        assert best["path"].endswith("beacon.md")
        assert best["shard"] == "docs"
        assert CITATION.match(best["citation"])
        assert best["citation"] == f"{best['path']}:{best['start_line']}-{best['end_line']}"
        assert "lighthouse" in best["snippet"]
        assert isinstance(best["score"], float)
        assert answer["missing"] == []
        assert set(answer["shards"]) == {"docs", "code", "working"}

        only_code = await ok(s, "memory_ask", question="pump water", shards=["code"])
        assert {p["shard"] for p in only_code["passages"]} == {"code"}
        assert only_code["shards"] == ["code"]

        message = await error(s, "memory_ask", question="pump", shards=["nope"])
        assert "no shard named 'nope'" in message

        status = await ok(s, "memory_status")
        assert status["pid"] == shared.pid
        assert {sh["name"] for sh in status["shards"]} == {"docs", "code", "working"}
        assert all(sh["status"] == "ready" for sh in status["shards"])
        assert status["log"]["path"] == str(shared.db_path)

        await ok(s, "memory_ask", question="glacier ice")
        # No --db: memory_log reads the log of the daemon it talks to.
        log = await ok(s, "memory_log", kind="query.*", limit=2)
        assert log["log"] == str(shared.db_path)
        assert [e["kind"] for e in log["events"]] == ["query.received", "query.answered"]
        assert log["events"][-1]["body"]["question"] == "glacier ice"
        assert log["events"][0]["seq"] < log["events"][1]["seq"] <= log["head_seq"]
        assert re.match(r"\d{4}-\d\d-\d\dT", log["events"][0]["time"])

        tail = await ok(s, "memory_log", limit=5)
        assert len(tail["events"]) == 5
        assert tail["events"][-1]["seq"] == tail["head_seq"]
        assert (await ok(s, "memory_log", kind="no.such.kind"))["events"] == []


@pytest.mark.anyio
async def test_remembered_fact_is_found_by_a_later_session(shared: DaemonProc) -> None:
    fact = "The staging database for project Zanzibar lives on host quokka-7."
    async with session(shared) as first:
        remembered = await ok(first, "memory_remember", text=fact, source="test session 1")
        memory_id = remembered["memory_id"]
        assert remembered["citation"] == f"memory:{memory_id}"
        assert remembered["source"] == "test session 1"

    async with session(shared) as second:
        answer = await ok(second, "memory_ask", question="where is the Zanzibar staging database")
        cited = [p for p in answer["passages"] if p["path"] == f"memory:{memory_id}"]
        assert cited, answer
        assert cited[0]["citation"].startswith(f"memory:{memory_id}")
        assert cited[0]["shard"] == "working"
        assert "quokka-7" in cited[0]["snippet"]

        log = await ok(second, "memory_log", kind="memory.remembered", limit=1)
        body = log["events"][0]["body"]
        assert body["memory_id"] == memory_id
        assert body["source"] == "test session 1"

        forgotten = await ok(second, "memory_forget", id=f"memory:{memory_id}")
        assert forgotten["memory_id"] == memory_id
        answer = await ok(second, "memory_ask", question="where is the Zanzibar staging database")
        assert all(p["path"] != f"memory:{memory_id}" for p in answer["passages"])
        message = await error(second, "memory_forget", id=memory_id)
        assert f"no remembered item memory:{memory_id}" in message


MALFORMED = [
    ("memory_ask", {"question": "x", "k": 0}, "greater than or equal to 1"),
    ("memory_ask", {"question": "x", "k": 101}, "less than or equal to 100"),
    ("memory_ask", {"question": "x", "k": "many"}, "valid integer"),
    ("memory_ask", {"question": "x", "k": True}, "must be an integer, not a boolean"),
    ("memory_ask", {}, "question\n  Field required"),
    ("memory_ask", {"question": 42}, "valid string"),
    ("memory_ask", {"question": ""}, "at least 1 character"),
    ("memory_ask", {"question": "   "}, "question must not be empty"),
    ("memory_ask", {"question": "x", "shards": "docs"}, "valid list"),
    ("memory_remember", {"text": ["a"]}, "valid string"),
    ("memory_remember", {"text": "x", "source": "s" * 1025}, "at most 1024 characters"),
    ("memory_remember", {"text": "x", "source": "é" * 600}, "source is 1200 bytes"),
    ("memory_forget", {}, "id\n  Field required"),
    ("memory_log", {"limit": 0}, "greater than or equal to 1"),
    ("no_such_tool", {}, "Unknown tool"),
]


@pytest.mark.anyio
async def test_malformed_arguments_are_rejected_clearly(shared: DaemonProc) -> None:
    async with session(shared) as s:
        for tool, arguments, expected in MALFORMED:
            message = await error(s, tool, **arguments)
            assert expected in message, (tool, arguments, message)
            # The server is still there after each bad call.
            assert (await ok(s, "memory_status"))["pid"] == shared.pid


@pytest.mark.anyio
async def test_daemon_down_gives_an_error_with_the_start_hint(daemons: DaemonFactory) -> None:
    daemon = daemons()
    async with session(daemon, "--db", str(daemon.db_path)) as s:
        await ok(s, "memory_remember", text="Remember me while the daemon restarts.")
        daemon.stop()
        for tool, arguments in (
            ("memory_ask", {"question": "anything"}),
            ("memory_remember", {"text": "lost"}),
            ("memory_forget", {"id": "abc"}),
            ("memory_status", {}),
        ):
            message = await error(s, tool, **arguments)
            assert message.startswith(f"Error executing tool {tool}: the ifmem daemon"), message
            assert "the ifmem daemon is not running" in message, message
            assert str(daemon.socket_path) in message
            assert "`ifmem daemon`" in message and START_HINT in message, message
        with pytest.raises(MCPError, match=r"daemon is not running.*`ifmem daemon`"):
            await s.read_resource("ifmem://shard/docs")
        # Nothing to list without the daemon, but listing still answers.
        assert (await s.list_resources()).resources == []

        # The log is read from the file, daemon or not.
        log = await ok(s, "memory_log", kind="memory.*")
        texts = [e["body"]["text"] for e in log["events"]]
        assert texts == ["Remember me while the daemon restarts."]

        daemon.start()
        answer = await ok(s, "memory_ask", question="remember daemon restarts")
        assert any(p["path"].startswith("memory:") for p in answer["passages"]), answer


@pytest.mark.anyio
async def test_memory_log_without_a_log_says_so(daemons: DaemonFactory) -> None:
    daemon = daemons(start=False)
    async with session(daemon) as s:
        message = await error(s, "memory_log")
        assert "no such file" in message and "ifmem daemon" in message, message


def test_other_commands_do_not_import_the_mcp_sdk() -> None:
    code = (
        "import sys; from ifmem import main; "
        "assert not [m for m in sys.modules if m == 'mcp' or m.startswith('mcp.')], 'mcp imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
