"""The fast client path must accept exactly what the typer commands accept."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer
from ifmem import fast
from ifmem.main import app


def _typer_options(command: str) -> set[str]:
    # typer vendors its own click: look at the command's params by their attributes.
    cmd = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    return {
        opt
        for param in cmd.params
        if param.param_type_name == "option"
        for opt in (*param.opts, *param.secondary_opts)
        if opt != "--help"
    }


@pytest.mark.parametrize("command", sorted(fast.FAST_COMMANDS))
def test_fast_parser_mirrors_typer(command: str) -> None:
    assert fast.options(command) == _typer_options(command)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["log"],
        ["ask"],  # missing question: typer prints the usage error
        ["ask", "--help"],
        ["ask", "-k", "0", "q"],  # out of range: typer's message
        ["ask", "--bogus", "q"],
    ],
)
def test_fast_path_declines_what_it_does_not_fully_understand(argv: list[str]) -> None:
    assert fast.run(argv) is False


def test_ask_never_imports_typer_or_heavy_modules(tmp_path) -> None:
    # A daemon is not needed: the command fails with exit 3 after the imports
    # it makes, and we list what was imported.
    code = (
        "import sys, runpy\n"
        f"sys.argv = ['ifmem', 'ask', '--socket', {str(tmp_path / 'none.sock')!r}, 'q']\n"
        "try:\n"
        "    from ifmem.entry import main; main()\n"
        "except SystemExit as e:\n"
        "    assert e.code == 3, e.code\n"
        "heavy = sorted(m for m in ('typer', 'click', 'pydantic', 'anthropic', 'apsw', 'nacl',"
        " 'anyio', 'mcp') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
