"""The fast path for the commands agents call in a loop: ask, remember, forget, status
(and `proxy`, which a remote host's ifmemd starts over SSH at every reconnect).

typer (0.29) coerces every option through pydantic, which costs ~120 ms per
process before any work; `ifmem ask` must cost at most 3x a bare `python -c
pass`. So these commands are first parsed here by a small table-driven
parser that mirrors their typer definitions (a test holds the two in step).
It imports nothing: argparse alone (with the `re` and `gettext` it pulls in)
cost ~6 ms, as much as the rest of the command. It accepts only the plain
forms (`--opt VALUE`, `--opt=VALUE`, `-kVALUE`, `--`); anything else —
`--help`, an unknown option, a value that is not a number, a missing or extra
argument — falls through to typer, which prints the proper help and messages.
"""

from __future__ import annotations

from ifmem import client

FAST_COMMANDS = frozenset({"ask", "remember", "forget", "status", "proxy"})

# Per command: its options that take a value (option string → destination),
# its flags (→ destination), and its one argument's destination, if any.
_SOCKET = {"--socket": "socket"}
_JSON = {"--json": "as_json"}
_SPECS: dict[str, tuple[dict[str, str], dict[str, str], str | None]] = {
    "ask": (
        {**_SOCKET, "--shard": "shard", "-s": "shard", "-k": "k", "--timeout": "timeout"},
        _JSON,
        "question",
    ),
    "remember": (_SOCKET, _JSON, "text"),
    "forget": (_SOCKET, _JSON, "memory_id"),
    "status": (_SOCKET, _JSON, None),
    "proxy": (_SOCKET, {}, None),
}
# Options given more than once add up; the others keep their last value, as in typer.
_REPEATED = frozenset({"shard"})


class _FallBack(Exception):
    """Raised when the command line is not one this parser fully understands."""


class Parsed:
    """A command line as the fast parser read it."""

    __slots__ = ("argument", "flags", "repeated", "values")

    def __init__(self) -> None:
        self.values: dict[str, str] = {}  # destination → the last value given
        self.repeated: dict[str, list[str]] = {}  # destination → every value given
        self.flags: set[str] = set()
        self.argument = ""


def options(command: str) -> set[str]:
    """Every option string the fast parser accepts for `command` (for the sync test)."""
    values, flags, _ = _SPECS[command]
    return {*values, *flags}


def parse(command: str, argv: list[str]) -> Parsed:
    """`argv` (after the command) as the fast parser reads it; `_FallBack` if it cannot."""
    values, flags, positional = _SPECS[command]
    out = Parsed()
    args: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            args += argv[i:]
            break
        if not arg.startswith("-") or arg == "-":
            args.append(arg)
            continue
        if arg in flags:
            out.flags.add(flags[arg])
            continue
        name, eq, value = arg.partition("=")
        if not (eq and name.startswith("--")):
            # `-kVALUE`: a short option with its value attached.
            name, value = (arg, "") if arg.startswith("--") else (arg[:2], arg[2:])
        if name not in values:
            raise _FallBack(arg)
        if not eq and not value and i < len(argv):
            value = argv[i]
            i += 1
        if not value or value.startswith("-"):
            raise _FallBack(arg)  # an empty value or one like an option: let typer say
        dest = values[name]
        if dest in _REPEATED:
            out.repeated.setdefault(dest, []).append(value)
        else:
            out.values[dest] = value
    if len(args) != (1 if positional else 0):
        raise _FallBack("arguments")
    if args:
        out.argument = args[0]
    return out


def run(argv: list[str]) -> bool:
    """Run `argv` if it is a fast command this parser fully understands; False otherwise."""
    if not argv or argv[0] not in FAST_COMMANDS:
        return False
    command = argv[0]
    try:
        a = parse(command, argv[1:])
        k = int(a.values.get("k", 5))
        timeout = float(a.values.get("timeout", 30.0))
    except (_FallBack, ValueError):
        return False
    socket = a.values.get("socket")
    as_json = "as_json" in a.flags
    if command == "ask":
        if not 1 <= k <= 100 or not 0.1 <= timeout <= client.MAX_TIMEOUT_S:
            return False  # typer says why
        client.ask(a.argument, a.repeated.get("shard"), k, socket, timeout, as_json)
    elif command == "remember":
        client.remember(a.argument, socket, as_json)
    elif command == "forget":
        client.forget(a.argument, socket, as_json)
    elif command == "proxy":
        client.proxy(socket)
    else:
        client.status(socket, as_json)
    return True
