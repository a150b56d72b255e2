"""`ifmem audit verify`: check every row of the log, no daemon and no trust in us needed."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from ifmemd.log.peer import PeerReport

from ifmem.exits import FAILURE, USAGE, fail

app = typer.Typer(help="Verify the signed, hash-chained event log.", no_args_is_help=True)


def _progress(done: int, total: int) -> None:
    print(
        f"\rverifying: {done}/{total} events ({100 * done // max(total, 1)}%)",
        end="",
        file=sys.stderr,
        flush=True,
    )


@app.command()
def verify(
    db: Annotated[
        Path | None,
        typer.Option("--db", help="Event log to verify (default: ~/.local/share/ifmem/events.db)."),
    ] = None,
    checkpoint: Annotated[
        list[Path] | None,
        typer.Option(
            "--checkpoint",
            help="A checkpoints file (or saved journal) whose checkpoints the log must still hold.",
        ),
    ] = None,
    pubkey: Annotated[
        list[str] | None,
        typer.Option(
            "--pubkey", help="Trust only this Ed25519 public key (64 hex chars), not the log's own."
        ),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option("--jobs", "-j", min=1, help="Processes to use (default: all cores)."),
    ] = None,
    peer: Annotated[
        list[Path] | None,
        typer.Option(
            "--peer",
            help="A remote shard's event log: check every answer of it recorded here against it.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Verify hashes, chain, keys and signatures of every row; exit 0 only if all hold."""
    from ifmemd.errors import IfmemError
    from ifmemd.log import checkpoint as cp
    from ifmemd.log.peer import cross_check
    from ifmemd.log.verify import verify_log
    from ifmemd.system import paths

    keys = []
    for text in pubkey or []:
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = b""
        if len(key) != 32:
            fail(f"--pubkey {text!r}: expected 64 hexadecimal characters", USAGE)
        keys.append(key)
    path = db or paths.log_path()
    show_progress = sys.stderr.isatty() and not as_json
    try:
        checkpoints = [c for f in checkpoint or [] for c in cp.read_file(f)]
        report = verify_log(
            path,
            checkpoints=checkpoints,
            pubkeys=keys,
            jobs=jobs,
            progress=_progress if show_progress else None,
        )
        peers = [cross_check(path, p, jobs=jobs) for p in peer or []]
    except IfmemError as e:
        fail(str(e))
    if show_progress:
        print(file=sys.stderr)
    if as_json:
        out = report.to_json()
        if peer:
            out["peers"] = [p.to_json() for p in peers]
        print(json.dumps(out))
    else:
        if report.failure is None:
            extra = f", {report.checkpoints} checkpoint(s) hold" if report.checkpoints else ""
            if report.segments:
                extra += f", {report.segments} sealed segment(s)"
            if report.pruned_note:
                extra += f"; {report.pruned_note}"
            print(f"ok: {report.rows} events verified in {path} (log {report.log_id.hex()}){extra}")
        else:
            print(f"FAILED: {path}: first bad {report.failure}")
        for p in peers:
            _print_peer(p)
    if report.failure is not None or not all(p.ok for p in peers):
        raise typer.Exit(FAILURE)


def _print_peer(report: PeerReport) -> None:
    verified = report.verified
    where = f"peer {report.path} (log {verified.log_id.hex()})"
    if verified.failure is not None:
        print(f"FAILED: {where}: first bad {verified.failure}")
    for m in report.mismatches:
        print(f"FAILED: {where}: {m}")
    if report.ok:
        print(f"ok: {where}: {report.checked} remote answer(s) recorded here match it")
