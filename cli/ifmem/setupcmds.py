"""`ifmem init` and `ifmem doctor`: set up an installation, and check one."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer

from ifmem.exits import FAILURE, fail


def init(
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite an existing config and unit files.")
    ] = False,
) -> None:
    """Write a default config, create the signing key, install the systemd user units."""
    from ifmemd.errors import IfmemError
    from ifmemd.system.install import init as do_init

    try:
        report = do_init(force=force)
    except (IfmemError, OSError) as e:
        fail(f"init: {e}")
    for path, what in report.actions:
        print(f"{what:<36} {path}")
    print(f"signing key id: {report.key_id}")
    print(report.systemctl)
    print(
        "\nnext:\n"
        "  systemctl --user enable --now ifmem.socket   # the first ask starts the daemon\n"
        '  ifmem ask "…"                               # or run `ifmem daemon` in a terminal\n'
        "  ifmem doctor                                 # check everything"
    )


def doctor(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Check config, key, units, socket, daemon version, log and credentials; suggest fixes."""
    from ifmemd.system.doctor import FAIL, run_checks

    checks = run_checks()
    if as_json:
        print(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        for c in checks:
            print(f"{c.verdict:<4}  {c.name:<9} {c.detail}")
            if c.fix and c.verdict != "ok":
                print(f"{'':<4}  {'':<9} fix: {c.fix}")
    if any(c.verdict == FAIL for c in checks):
        raise SystemExit(FAILURE)
