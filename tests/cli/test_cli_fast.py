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


@pytest.mark.parametrize(
    ("argv", "values", "shards", "flags", "argument"),
    [
        (["q"], {}, None, set(), "q"),
        (["--json", "q"], {}, None, {"as_json"}, "q"),
        (["q", "-k", "3"], {"k": "3"}, None, set(), "q"),
        (["-k3", "q"], {"k": "3"}, None, set(), "q"),
        (["--timeout=2.5", "q"], {"timeout": "2.5"}, None, set(), "q"),
        (["--socket", "/s", "--socket", "/t", "q"], {"socket": "/t"}, None, set(), "q"),
        (["-s", "docs", "--shard=code", "-sweb", "q"], {}, ["docs", "code", "web"], set(), "q"),
        (["--", "-k is a flag"], {}, None, set(), "-k is a flag"),
        (["-"], {}, None, set(), "-"),
    ],
)
def test_fast_parser_reads_the_plain_forms(
    argv: list[str],
    values: dict[str, str],
    shards: list[str] | None,
    flags: set[str],
    argument: str,
) -> None:
    parsed = fast.parse("ask", argv)
    assert parsed.values == values
    assert parsed.repeated.get("shard") == shards
    assert parsed.flags == flags
    assert parsed.argument == argument


@pytest.mark.parametrize(
    "argv",
    [
        ["ask", "q", "extra"],  # one question only
        ["ask", "-k", "three", "q"],  # not a number: typer's message
        ["ask", "q", "-k"],  # no value
        ["ask", "--socket=", "q"],
        ["ask", "-k", "-1", "q"],
        ["ask", "--sock", "/s", "q"],  # argparse would take a prefix; typer does not
        ["ask", "-h", "q"],
        ["ask", "--json=yes", "q"],
        ["ask", "--timeout", "0", "q"],
        ["ask", "--timeout", "nan", "q"],
        ["ask", "--timeout", "inf", "q"],
        ["status", "extra"],
        ["status", "-k", "3"],  # not an option of status
        ["proxy", "--json"],
    ],
)
def test_fast_parser_falls_back_on_anything_else(argv: list[str]) -> None:
    assert fast.run(argv) is False
