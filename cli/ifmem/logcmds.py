"""`ifmem log` (and `log seal`, `log prune`) and `ifmem replay`: the event log, with or
without a daemon."""

from __future__ import annotations

import fnmatch
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from ifmem.clientcmds import SocketOption
from ifmem.closedpipe import exit_when_stdout_closes
from ifmem.exits import fail
from ifmem.timefmt import format_ns, since_option

DbOption = Annotated[
    Path | None,
    typer.Option("--db", help="Event log to read (default: ~/.local/share/ifmem/events.db)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
FOLLOW_POLL_S = 0.2
# The largest integer SQLite holds: a seq or a count past it is a usage error.
SQLITE_INT_MAX = 2**63 - 1


def _open(db: Path | None) -> Any:
    """The whole log (sealed segments and the live file) for reading."""
    from ifmemd.errors import IfmemError
    from ifmemd.log.chain import LogChain
    from ifmemd.system import paths

    try:
        return LogChain.open(db or paths.log_path())
    except IfmemError as e:
        fail(str(e))


log_app = typer.Typer(
    help="Print the event log; seal its live file or prune old segments.",
    no_args_is_help=False,
)


_HEX_DIGEST = re.compile(r"[0-9a-f]{32,}")


def _summary(body: dict[str, Any], width: int = 100) -> str:
    """One line for a body: digests and hashes shortened so the rest of it shows."""

    def short(v: Any) -> str:
        if isinstance(v, str) and _HEX_DIGEST.fullmatch(v):
            v = v[:12] + "…"
        return json.dumps(v, ensure_ascii=False)

    text = " ".join(f"{k}={short(v)}" for k, v in sorted(body.items()) if k != "v")
    return text if len(text) <= width else text[: width - 1] + "…"


@log_app.callback(invoke_without_command=True)
def log(
    ctx: typer.Context,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing events as they are committed.")
    ] = False,
    kind: Annotated[
        list[str] | None,
        typer.Option("--kind", "-k", help="Only events of this kind; a glob like 'shard.*'."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only events since T: 30s, 5m, 2h, 1d, or an ISO 8601 time."),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", "-n", min=1, max=SQLITE_INT_MAX, help="Only the last N matching events."
        ),
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print the event log: one event a line, oldest first."""
    from ifmemd.log.eventlog import _row

    if ctx.invoked_subcommand is not None:
        return
    since_ns = since_option(since)
    patterns = kind or []

    def wanted(ev: dict[str, Any]) -> bool:
        if ev["ts_ns"] < since_ns:
            return False
        return not patterns or any(fnmatch.fnmatchcase(ev["kind"], p) for p in patterns)

    def show(ev: dict[str, Any]) -> None:
        if as_json:
            print(json.dumps(ev, ensure_ascii=False), flush=True)
        else:
            line = (
                f"{ev['seq']:>8}  {format_ns(ev['ts_ns'])}  {ev['kind']:<18} {_summary(ev['body'])}"
            )
            print(line, flush=True)

    with _open(db) as elog:
        matched = [ev for ev in (_row(r).to_json() for r in elog.rows(0)) if wanted(ev)]
        if limit is not None:
            matched = matched[-limit:]
        for ev in matched:
            show(ev)
        elog.refresh_head()
        if not follow:
            return
        exit_when_stdout_closes()
        try:
            _follow(elog, elog.head_seq, lambda ev: show(ev) if wanted(ev) else None)
        except KeyboardInterrupt:
            return


def _follow(elog: Any, last: int, emit: Callable[[dict[str, Any]], None]) -> None:
    """Print new events as they commit: pushed by the daemon when it serves this log,
    else read from the file whenever SQLite says it changed."""
    from ifmemd.log.eventlog import _row

    while True:
        last = _follow_daemon(elog.path, last, emit)
        # No daemon (or another log's daemon): catch up from the file, then try again.
        # A seal moves the live file away: read on into the new one.
        elog.refresh_head()
        version = elog.data_version()
        for row in elog.rows(last):
            last = row[0]
            emit(_row(row).to_json())
        while (
            elog.data_version() == version
            and not elog.sealed_meanwhile()
            and not _daemon_serves(elog.path)
        ):
            time.sleep(FOLLOW_POLL_S)


def _daemon_serves(db: Path) -> bool:
    from ifmemd.errors import IfmemError
    from ifmemd.system.paths import socket_path
    from ifmemd.wire.protocol import Client

    try:
        with Client(socket_path(), timeout=2) as client:
            return Path(client.request("status")["log"]["path"]).resolve() == db.resolve()
    except IfmemError:
        return False


def _follow_daemon(db: Path, last: int, emit: Callable[[dict[str, Any]], None]) -> int:
    """Stream events after `last` from the daemon's `subscribe`; the last seq seen when it ends."""
    from ifmemd.errors import IfmemError
    from ifmemd.system.paths import socket_path
    from ifmemd.wire.protocol import Client

    try:
        with Client(socket_path(), timeout=5) as client:
            served = Path(client.request("status")["log"]["path"]).resolve()
            if served != db.resolve():
                return last
            for event in client.iter_events(since_seq=last):
                last = event["seq"]
                emit(event)
    except IfmemError:
        return last
    return last


def replay(
    upto: Annotated[
        int | None,
        typer.Option(
            "--upto", min=0, max=SQLITE_INT_MAX, help="Rebuild the state as it was at this seq."
        ),
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Rebuild the daemon's state from the log and print it ("what did it know at seq N")."""
    from ifmemd.errors import IfmemError
    from ifmemd.log.replay import replay as rebuild
    from ifmemd.system import paths

    with _open(db) as elog:
        pruned = elog.first_seq > 1  # the log starts after a prune
        if upto is not None and upto < elog.first_seq - 1:
            fail(f"--upto {upto}: the log was pruned before seq {elog.first_seq}; no state then")
        try:
            result = rebuild(elog, snapshot_path=None if db else paths.snapshot_path(), upto=upto)
        except IfmemError as e:
            fail(str(e))
    state = result.state
    if as_json:
        print(json.dumps(state.to_json(), ensure_ascii=False, indent=2))
        return
    print(f"state at seq {state.seq} (hash {state.hash.hex()[:16]}…)")
    source = f"snapshot at seq {result.from_snapshot} + " if result.from_snapshot else ""
    print(f"rebuilt from {source}{result.replayed} events; daemon runs: {state.runs}")
    if pruned:
        print(f"note: {result.snapshot_note}")
    print(f"working memory: {len(state.memories)} item(s)")
    for m in state.memories.values():
        print(f"  memory:{m.memory_id}  {m.text[:80]}")
    print(f"shards: {len(state.shards)}")
    for s in state.shards.values():
        print(
            f"  {s.name:<12} {s.status:<10} files={s.files} tokens={s.tokens} restarts={s.restarts}"
        )
    print(f"queries without an answer: {len(state.pending)}")
    for p in state.pending.values():
        print(f"  {p.qid}  (seq {p.seq})  {p.question[:60]}")
    print("events by kind: " + ", ".join(f"{k}={v}" for k, v in sorted(state.counts.items())))


def _through_daemon(db: Path, socket: Path | None, op: str, **args: Any) -> dict[str, Any] | None:
    """Run `op` in the daemon if one serves the log `db`; None if none does."""
    from ifmemd.errors import IfmemError
    from ifmemd.system import paths
    from ifmemd.wire.protocol import Client, DaemonUnreachableError

    try:
        with Client(socket or paths.socket_path(), timeout=120) as client:
            served = Path(client.request("status")["log"]["path"])
            if served.resolve() != db.resolve():
                return None
            return client.request(op, **args)
    except DaemonUnreachableError:
        return None
    except IfmemError as e:
        fail(str(e))


def _signer() -> Any:
    from ifmemd.errors import IfmemError
    from ifmemd.log.keys import load_signer
    from ifmemd.system import paths

    key = paths.key_path()
    try:
        return load_signer(key)
    except IfmemError as e:
        fail(str(e))
    except OSError as e:
        fail(f"signing key {key}: {e.strerror or e}; the daemon makes it at its first start")


@log_app.command("seal")
def seal(
    db: DbOption = None,
    socket: SocketOption = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            envvar="IFMEM_CONFIG",
            help="Config whose [log] compress applies when no daemon runs.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Seal the live log file into a read-only segment now (through the daemon if it runs)."""
    from ifmemd.config import ConfigError, load_config
    from ifmemd.errors import IfmemError
    from ifmemd.log import maintenance
    from ifmemd.system import paths

    path = db or paths.log_path()
    result = _through_daemon(path, socket, "seal")
    if result is None:
        try:
            compress = load_config(config).log.compress == "zstd"
            maintenance.require_log(path)
            segment = maintenance.seal_files(
                path, _signer(), paths.checkpoints_path(), compress=compress
            )
        except (ConfigError, IfmemError) as e:
            fail(str(e))
        result = {
            "segment": str(segment.path),
            "first_seq": segment.first,
            "last_seq": segment.last,
        }
    if as_json:
        print(json.dumps(result))
    else:
        print(
            f"sealed seq {result['first_seq']}\u2013{result['last_seq']} into {result['segment']}"
        )


@log_app.command("prune")
def prune(
    before: Annotated[
        str,
        typer.Option(
            "--before",
            help="Delete sealed segments wholly before this seq, or this time (ISO 8601, 30d).",
        ),
    ],
    db: DbOption = None,
    socket: SocketOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete the oldest sealed segments, after recording `log.pruned` in the log."""
    from ifmemd.errors import IfmemError
    from ifmemd.log import maintenance
    from ifmemd.system import paths

    from ifmem.exits import USAGE

    if before.isdigit():
        bound = {"before_seq": int(before)}
        if int(before) < 1:
            fail("--before: a seq is at least 1", USAGE)
    else:
        bound = {"before_ns": since_option(before)}
    path = db or paths.log_path()
    result = _through_daemon(path, socket, "prune", **bound)
    if result is None:
        try:
            maintenance.require_log(path)
            plan, record = maintenance.prune_files(
                path, _signer(), None if db else paths.snapshot_path(), **bound
            )
        except IfmemError as e:
            fail(str(e))
        result = {
            "deleted": [s.path.name for s in plan.doomed],
            "first_kept_seq": plan.first_kept_seq,
            "seq": record.seq,
        }
    if as_json:
        print(json.dumps(result))
    else:
        kept = result["first_kept_seq"]
        print(
            f"pruned seq 1\u2013{kept - 1} ({len(result['deleted'])} segment(s)); "
            f"log.pruned at seq {result['seq']}"
        )
