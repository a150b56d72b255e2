"""The commands that talk to a running daemon: ask, remember, forget, status, reload, stop.

They import only the stdlib client (`ifmemd.protocol`), never the daemon's
heavy modules, so `ifmem ask` starts fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ifmem.exits import FAILURE, UNREACHABLE, fail

SocketOption = Annotated[
    Path | None,
    typer.Option(
        "--socket",
        envvar="IFMEM_SOCKET",
        help="Daemon socket (default: $XDG_RUNTIME_DIR/ifmem/ifmem.sock).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the daemon's JSON answer.")]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", min=0.1, help="Seconds to wait for the daemon.")
]


def _socket(path: Path | None) -> Path:
    if path is not None:
        return path
    from ifmemd.paths import socket_path

    return socket_path()


def call(socket: Path | None, op: str, timeout: float = 30.0, **args: Any) -> Any:
    """One request to the daemon; errors become a message and an exit code."""
    from ifmemd.errors import IfmemError
    from ifmemd.protocol import Client, DaemonUnreachableError, RemoteError

    try:
        with Client(_socket(socket), timeout=timeout) as client:
            return client.request(op, retries=2, **args)
    except DaemonUnreachableError as e:
        fail(str(e), UNREACHABLE)
    except RemoteError as e:
        fail(str(e), FAILURE)
    except IfmemError as e:
        fail(str(e), FAILURE)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=2))


def ask(
    question: Annotated[str, typer.Argument(help="The question, in any words.")],
    shard: Annotated[
        list[str] | None, typer.Option("--shard", "-s", help="Ask only this shard (repeatable).")
    ] = None,
    k: Annotated[int, typer.Option("-k", min=1, max=100, help="How many passages.")] = 5,
    socket: SocketOption = None,
    timeout: TimeoutOption = 30.0,
    as_json: JsonOption = False,
) -> None:
    """Ask the memory a question; prints passages with `path:start-end` citations."""
    args: dict[str, Any] = {"question": question, "k": k}
    if shard:
        args["shards"] = shard
    result = call(socket, "ask", timeout, **args)
    if as_json:
        _print_json(result)
        return
    passages = result["passages"]
    if not passages:
        print("no passage matches.")
    for i, p in enumerate(passages, 1):
        print(f"{i}. {p['citation']}  [{p['shard']}]")
        snippet = " ".join(p.get("snippet", "").split())
        if snippet:
            print(f"   {snippet}")
    for m in result.get("missing", []):
        print(f"missing: shard {m['shard']!r}: {m['reason']}", file=sys.stderr)


def remember(
    text: Annotated[str, typer.Argument(help="What to remember.")],
    socket: SocketOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add a note to working memory; prints its id (cite it as memory:ID)."""
    result = call(socket, "remember", text=text)
    if as_json:
        _print_json(result)
    else:
        print(f"remembered as {result['citation']}")


def forget(
    memory_id: Annotated[str, typer.Argument(help="The id printed by `ifmem remember`.")],
    socket: SocketOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove a note from working memory (the log keeps the history)."""
    result = call(socket, "forget", memory_id=memory_id)
    if as_json:
        _print_json(result)
    else:
        print(f"forgot memory:{result['memory_id']}")


def status(socket: SocketOption = None, as_json: JsonOption = False) -> None:
    """Show the daemon, its log position and every shard's health."""
    result = call(socket, "status", timeout=10.0)
    if as_json:
        _print_json(result)
        return
    log = result["log"]
    print(f"ifmemd {result['version']}  pid {result['pid']}  up {result['uptime_s']} s")
    print(f"log     {log['path']}  seq {log['seq']}  ({log['hash'][:16]}…)")
    print(f"socket  {result['socket']}  clients {result['clients']}  memories {result['memories']}")
    rows = [("SHARD", "STATUS", "FILES", "TOKENS", "SERVED", "RESTARTS", "RSS MB", "HEARTBEAT")]
    for s in result["shards"]:
        rows.append(
            (
                s["name"],
                s["status"],
                str(s["files"]),
                str(s["tokens"]),
                str(s["served"]),
                str(s["restarts"]),
                f"{s['rss_bytes'] / 1e6:.1f}",
                f"{s['heartbeat_age_s']:.1f}s ago",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    for s in result["shards"]:
        if s.get("failure"):
            print(f"{s['name']}: {s['failure']}")


def reload(socket: SocketOption = None, as_json: JsonOption = False) -> None:
    """Re-read the config and corpora; changed shards restart, others keep running."""
    result = call(socket, "reload", timeout=60.0)
    if as_json:
        _print_json(result)
        return
    for what in ("added", "removed", "restarted", "kept"):
        if result.get(what):
            print(f"{what}: {', '.join(result[what])}")


def stop(socket: SocketOption = None, as_json: JsonOption = False) -> None:
    """Stop the daemon cleanly (in-flight questions finish first)."""
    result = call(socket, "stop", timeout=10.0)
    _wait_gone(_socket(socket), STOP_WAIT_S)
    if as_json:
        _print_json(result)
    else:
        print("ifmemd stopped")


STOP_WAIT_S = 15.0


def _wait_gone(path: Path, timeout: float) -> None:
    """Wait until nothing answers on `path` any more, so `stop` then `daemon` just works."""
    import socket as sock_mod
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sock_mod.socket(sock_mod.AF_UNIX, sock_mod.SOCK_STREAM) as s:
            try:
                s.connect(str(path))
            except OSError:
                return
        time.sleep(0.05)
    fail(f"ifmemd did not stop within {timeout:g} s", FAILURE)


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
