"""The typer commands that talk to a running daemon (see `client.py` for the work)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ifmem import client


def _timeout(seconds: float) -> float:
    """A --timeout from 0.1 s to client.MAX_TIMEOUT_S (typer's own range lets NaN pass)."""
    if not 0.1 <= seconds <= client.MAX_TIMEOUT_S:
        raise typer.BadParameter(f"must be from 0.1 to {client.MAX_TIMEOUT_S:g} seconds")
    return seconds


SocketOption = Annotated[
    Path | None,
    typer.Option(
        "--socket",
        envvar="IFMEM_SOCKET",
        help="Daemon socket (default: $XDG_RUNTIME_DIR/ifmem/ifmem.sock).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the daemon's JSON answer.")]


def ask(
    question: Annotated[str, typer.Argument(help="The question, in any words.")],
    shard: Annotated[
        list[str] | None, typer.Option("--shard", "-s", help="Ask only this shard (repeatable).")
    ] = None,
    k: Annotated[int, typer.Option("-k", min=1, max=100, help="How many passages.")] = 5,
    socket: SocketOption = None,
    timeout: Annotated[
        float, typer.Option("--timeout", callback=_timeout, help="Seconds to wait for the answer.")
    ] = 30.0,
    as_json: JsonOption = False,
) -> None:
    """Ask the memory a question; prints passages with `path:start-end` citations."""
    client.ask(question, shard, k, socket, timeout, as_json)


def remember(
    text: Annotated[str, typer.Argument(help="What to remember.")],
    socket: SocketOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add a note to working memory; prints its id (cite it as memory:ID)."""
    client.remember(text, socket, as_json)


def forget(
    memory_id: Annotated[str, typer.Argument(help="The id printed by `ifmem remember`.")],
    socket: SocketOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove a note from working memory (the log keeps the history)."""
    client.forget(memory_id, socket, as_json)


def status(socket: SocketOption = None, as_json: JsonOption = False) -> None:
    """Show the daemon, its log position and every shard's health."""
    client.status(socket, as_json)


def reload(socket: SocketOption = None, as_json: JsonOption = False) -> None:
    """Re-read the config and corpora; changed shards restart, others keep running."""
    client.reload(socket, as_json)


def stop(socket: SocketOption = None, as_json: JsonOption = False) -> None:
    """Stop the daemon cleanly (in-flight questions finish first)."""
    client.stop(socket, as_json)


def proxy(socket: SocketOption = None) -> None:
    """Join stdin and stdout to the daemon's socket: what a remote shard runs over SSH."""
    client.proxy(socket)


def daemon(
    config: Annotated[
        Path | None, typer.Option("--config", envvar="IFMEM_CONFIG", help="Config file.")
    ] = None,
    socket: SocketOption = None,
    db: Annotated[Path | None, typer.Option("--db", help="Event log file.")] = None,
) -> None:
    """Run the daemon in the foreground (the same as `ifmemd`)."""
    from ifmemd.main import run

    code = run(config, socket, db)
    if code:
        raise typer.Exit(code)


def mcp(
    socket: SocketOption = None,
    db: Annotated[
        Path | None,
        typer.Option(
            "--db",
            help="Event log memory_log reads (default: the running daemon's, "
            "else ~/.local/share/ifmem/events.db).",
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", callback=_timeout, help="Seconds memory_ask waits for the daemon."
        ),
    ] = 30.0,
) -> None:
    """Serve the memory to MCP clients (Claude Code, Claude Desktop…) over stdio."""
    # The MCP SDK is heavy and optional: only this command imports it.
    try:
        from ifmem import mcpserver
    except ImportError as e:
        from ifmem.exits import fail

        fail(f"ifmem mcp needs the MCP SDK ({e}); install it with: pip install 'ifmem[mcp]'")
    mcpserver.serve(socket, db, timeout)
