"""The fast path for the commands agents call in a loop: ask, remember, forget, status
(and `proxy`, which a remote host's ifmemd starts over SSH at every reconnect).

typer (0.29) coerces every option through pydantic, which costs ~120 ms per
process before any work; `ifmem ask` must answer in well under 150 ms. So
these commands are first parsed here with argparse, mirroring their typer
definitions exactly (a test holds the two in step). Anything this parser does
not accept — `--help`, a usage error — falls through to typer, which prints
the proper help and messages.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ifmem import client

FAST_COMMANDS = frozenset({"ask", "remember", "forget", "status", "proxy"})


class _FallBack(Exception):
    """Raised when argparse would print usage: let typer handle the command line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _FallBack(message)


def _parser(command: str) -> _Parser:
    p = _Parser(prog=f"ifmem {command}", add_help=False)
    p.add_argument("--socket", type=Path)
    if command == "proxy":
        return p
    p.add_argument("--json", dest="as_json", action="store_true")
    if command == "ask":
        p.add_argument("question")
        p.add_argument("--shard", "-s", action="append")
        p.add_argument("-k", type=int, default=5)
        p.add_argument("--timeout", type=float, default=30.0)
    elif command == "remember":
        p.add_argument("text")
    elif command == "forget":
        p.add_argument("memory_id")
    return p


def options(command: str) -> set[str]:
    """Every option string the fast parser accepts for `command` (for the sync test)."""
    return {s for action in _parser(command)._actions for s in action.option_strings}


def run(argv: list[str]) -> bool:
    """Run `argv` if it is a fast command this parser fully understands; False otherwise."""
    if not argv or argv[0] not in FAST_COMMANDS or "--help" in argv or "-h" in argv:
        return False
    command = argv[0]
    try:
        a = _parser(command).parse_args(argv[1:])
    except _FallBack:
        return False
    if command == "ask":
        if not 1 <= a.k <= 100 or a.timeout < 0.1:
            return False
        client.ask(a.question, a.shard, a.k, a.socket, a.timeout, a.as_json)
    elif command == "remember":
        client.remember(a.text, a.socket, a.as_json)
    elif command == "forget":
        client.forget(a.memory_id, a.socket, a.as_json)
    elif command == "proxy":
        client.proxy(a.socket)
    else:
        client.status(a.socket, a.as_json)
    return True
