"""`ifmem stats`: what the model-backed shards cost, read from the log (no daemon needed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ifmem.exits import fail
from ifmem.logcmds import DbOption, JsonOption
from ifmem.timefmt import since_option


def stats(
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only calls since T: 30s, 5m, 2h, 1d, or an ISO 8601 time."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", envvar="IFMEM_CONFIG", help="Config file whose [prices] price the tokens."
        ),
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show model tokens and cost per shard and in total, and what prompt caching saved."""
    from ifmemd import usage
    from ifmemd.config import ConfigError, load_config
    from ifmemd.errors import IfmemError
    from ifmemd.log.chain import LogChain
    from ifmemd.log.events import decode
    from ifmemd.system import paths

    since_ns = since_option(since)
    try:
        prices = load_config(config).prices
    except ConfigError as e:
        print(f"ifmem: costs not shown: {e}", file=sys.stderr)
        prices = {}
    try:
        with LogChain.open(db or paths.log_path()) as elog:
            sums = usage.tally(
                ((r.kind, r.ts_ns, decode(r.seq, r.kind, r.body)) for r in elog.records()),
                since_ns=since_ns,
            )
    except IfmemError as e:
        fail(str(e))
    result = usage.report(sums, prices)
    if as_json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return
    _print(result)


def _money(value: float | None) -> str:
    return "?" if value is None else f"${value:,.4f}"


def _print(result: dict[str, Any]) -> None:
    header = (
        "SHARD",
        "MODEL",
        "CALLS",
        "ROUTED OUT",
        "INPUT",
        "CACHE WRITE",
        "CACHE READ",
        "OUTPUT",
        "COST",
        "UNCACHED",
        "SAVED",
    )
    rows = [header]
    for r in [*result["shards"], {"shard": "TOTAL", "model": "", **result["total"]}]:
        rows.append(
            (
                r["shard"],
                r["model"] or "-",
                str(r["calls"]),
                str(r["routed_out"]),
                f"{r['input_tokens']:,}",
                f"{r['cache_creation_input_tokens']:,}",
                f"{r['cache_read_input_tokens']:,}",
                f"{r['output_tokens']:,}",
                _money(r["cost_usd"]),
                _money(r["uncached_usd"]),
                _money(r["saved_usd"]),
            )
        )
    if len(rows) == 2 and result["total"]["calls"] == 0:
        print("no model calls recorded.")
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print(
            "  ".join(
                c.rjust(w) if i >= 2 else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
    if result["unpriced"]:
        models = ", ".join(result["unpriced"])
        print(f"no [prices] entry for {models}: their cost is not in the totals", file=sys.stderr)
