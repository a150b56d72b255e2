"""Talking to the daemon and printing its answers; no typer, no heavy imports.

Shared by the typer commands (`clientcmds.py`) and the fast path (`fast.py`)
that `ifmem ask` takes: its whole process must cost at most 3x a bare
`python -c pass`. So nothing here imports json (and the `re` it pulls in:
~6 ms) but `--json` output, nor pathlib, typing or socket (~2 ms each).
"""

from __future__ import annotations

import os
import sys
import time

from ifmem.exits import FAILURE, UNREACHABLE, fail

# Annotations only (they are never evaluated: `from __future__ import annotations`).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    SocketArg = Path | str | None

STOP_WAIT_S = 15.0
# The longest --timeout: a day (past it, a mistake; inf or NaN cannot be waited on).
MAX_TIMEOUT_S = 86_400.0


def socket_path(path: SocketArg) -> str:
    """The socket to talk to: `path` if given, else the default (`IFMEM_SOCKET`, XDG)."""
    if path is not None:
        return os.fspath(path)
    from ifmemd.system.paths import socket_location

    return socket_location()


def call(socket: SocketArg, op: str, timeout: float = 30.0, **args: Any) -> Any:
    """One request to the daemon; errors become a message and an exit code."""
    from ifmemd.errors import IfmemError
    from ifmemd.wire.protocol import Client, DaemonUnreachableError

    try:
        with Client(socket_path(socket), timeout=timeout) as client:
            return client.request(op, retries=2, **args)
    except DaemonUnreachableError as e:
        fail(str(e), UNREACHABLE)
    except IfmemError as e:
        fail(str(e), FAILURE)


def print_json(obj: Any) -> None:
    import json

    print(json.dumps(obj, ensure_ascii=False, indent=2))


def ask(
    question: str,
    shards: list[str] | None,
    k: int,
    socket: SocketArg,
    timeout: float,
    as_json: bool,
) -> None:
    args: dict[str, Any] = {"question": question, "k": k}
    if shards:
        args["shards"] = shards
    result = call(socket, "ask", timeout, **args)
    if as_json:
        print_json(result)
        return
    _print_answers(result)
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
    for n in result.get("notes", []):
        print(f"note: shard {n['shard']!r}: {n['note']}", file=sys.stderr)


def _print_answers(result: dict[str, Any]) -> None:
    """Model-backed shards' answers (and their synthesis), each with its citations."""
    synthesis = result.get("synthesis")
    if synthesis and synthesis.get("text"):
        print(f"answer (merged by {synthesis['shard']}, {synthesis['model']}):")
        print(f"   {synthesis['text']}")
        for c in synthesis.get("citations", []):
            print(f"   [{c['n']}] {c['citation']}")
        print()
    for a in result.get("answers", []):
        flag = "cited" if a["verified"] else "UNVERIFIED: not backed by a valid citation"
        print(f"answer from {a['shard']} ({a['model']}; {flag}):")
        print(f"   {a['text']}")
        for c in a["citations"]:
            print(f"   [{c['n']}] {c['citation']}")
        for u in a["unverified"]:
            print(f"   [?] {u['reason']}")
        print()


def proxy(socket: SocketArg) -> None:
    """Join stdin and stdout to the daemon's socket until it closes (for remote shards)."""
    from ifmemd.wire import proxy as relay
    from ifmemd.wire.protocol import DaemonUnreachableError

    try:
        relay.run(socket_path(socket))
    except DaemonUnreachableError as e:
        fail(str(e), UNREACHABLE)


def remember(text: str, socket: SocketArg, as_json: bool) -> None:
    result = call(socket, "remember", text=text)
    if as_json:
        print_json(result)
    else:
        print(f"remembered as {result['citation']}")


def forget(memory_id: str, socket: SocketArg, as_json: bool) -> None:
    result = call(socket, "forget", memory_id=memory_id)
    if as_json:
        print_json(result)
    else:
        print(f"forgot memory:{result['memory_id']}")


POLLING_NOTE = (
    "inotify watches ran out (fs.inotify.max_user_watches): its files are polled every "
    "second, so changes take longer to show"
)


def status(socket: SocketArg, as_json: bool) -> None:
    result = call(socket, "status", timeout=10.0)
    if as_json:
        print_json(result)
        return
    log = result["log"]
    print(f"ifmemd {result['version']}  pid {result['pid']}  up {result['uptime_s']} s")
    print(f"log     {log['path']}  seq {log['seq']}  ({log['hash'][:16]}…)")
    print(f"socket  {result['socket']}  clients {result['clients']}  memories {result['memories']}")
    rows = [
        ("SHARD", "STATUS", "WATCH", "FILES", "TOKENS", "SERVED", "RESTARTS", "RSS MB", "HEARTBEAT")
    ]
    for s in result["shards"]:
        model = s.get("model_status")  # a model-backed shard's model comes up after its index
        rows.append(
            (
                s["name"],
                s["status"] + (f" (model {model})" if model and model != "ready" else ""),
                s.get("watch") or "-",
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
        if s.get("watch") == "polling":
            print(f"{s['name']}: {POLLING_NOTE}")
        if s.get("vectors_queued"):
            print(f"{s['name']}: {s['vectors_queued']} passages not yet ranked by meaning")


def reload(socket: SocketArg, as_json: bool) -> None:
    result = call(socket, "reload", timeout=60.0)
    if as_json:
        print_json(result)
        return
    for what in ("added", "removed", "restarted", "kept"):
        if result.get(what):
            print(f"{what}: {', '.join(result[what])}")


def stop(socket: SocketArg, as_json: bool) -> None:
    result = call(socket, "stop", timeout=10.0)
    wait_gone(socket_path(socket), STOP_WAIT_S)
    if as_json:
        print_json(result)
    else:
        print("ifmemd stopped")


def wait_gone(path: str, timeout: float) -> None:
    """Wait until nothing answers on `path`, so `stop` then `daemon` just works."""
    import socket as socket_mod

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket_mod.socket(socket_mod.AF_UNIX, socket_mod.SOCK_STREAM) as s:
            try:
                s.connect(str(path))
            except OSError:
                return
        time.sleep(0.05)
    fail(f"ifmemd did not stop within {timeout:g} s", FAILURE)
