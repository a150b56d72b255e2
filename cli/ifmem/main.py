"""The `ifmem` command: parses arguments, calls one library function, maps its errors.

Command modules import the daemon library inside their functions, so a light
command never pays for heavy imports it does not use; the hottest commands
(`ask`, `remember`, `forget`, `status`) skip typer entirely (see `fast.py`,
`entry.py`).
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from ifmem import audit, clientcmds, logcmds, setupcmds, statscmd
from ifmem.closedpipe import quiet_on_closed_stdout


class QuietGroup(TyperGroup):
    """The root group: a closed stdout ends any command with 141, not click's status 1.

    click catches EPIPE itself inside `main` and exits 1, so the guard goes
    around what `main` calls: parsing (which prints --help) and the command.
    """

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with quiet_on_closed_stdout():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with quiet_on_closed_stdout():
            return super().invoke(ctx)


app = typer.Typer(
    cls=QuietGroup,
    name="ifmem",
    help="A memory for LLM agents larger than one context window, with a signed event log.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
app.command("init")(setupcmds.init)
app.command("daemon")(clientcmds.daemon)
app.command("ask")(clientcmds.ask)
app.command("remember")(clientcmds.remember)
app.command("forget")(clientcmds.forget)
app.command("status")(clientcmds.status)
app.command("reload")(clientcmds.reload)
app.command("stop")(clientcmds.stop)
app.add_typer(logcmds.log_app, name="log")
app.command("replay")(logcmds.replay)
app.command("stats")(statscmd.stats)
app.command("doctor")(setupcmds.doctor)
app.command("mcp")(clientcmds.mcp)
app.command("proxy")(clientcmds.proxy)
app.add_typer(audit.app, name="audit")


def _version(value: bool) -> None:
    if value:
        from ifmemd import __version__

        print(f"ifmem {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """ifmem: ask, remember and audit an agent's long-term memory."""


def main() -> None:
    """Run the typer app (the console script goes through `ifmem.entry` first)."""
    app()
