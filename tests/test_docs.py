"""The man pages are tested against the code (STYLE.md, habit 13).

Every command and option of the typer app has help text and its own section
in ifmem(1); every ifmemd option is in ifmemd(8); every config key the parser
knows has an entry in ifmem.toml(5); every registered event kind, with its
version and required fields, is in ifmem-log(5), whose schema and worked
example are recomputed here with the library. All four pages must lint clean.

`python tests/test_docs.py` prints the worked example's values afresh.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
import typer
from ifmem.main import app
from ifmemd import config
from ifmemd.log import checkpoint as cp
from ifmemd.log import events
from ifmemd.log.keys import Signer
from ifmemd.log.logformat import (
    APPLICATION_ID,
    CHECKPOINT_DOMAIN,
    DOMAIN,
    SCHEMA,
    ZERO_HASH,
    canonical_json,
    checkpoint_message,
    event_hash,
)
from ifmemd.log.verify import verify_log
from ifmemd.main import parser as ifmemd_parser
from ifmemd.system import units
from typer.testing import CliRunner

MAN = Path(__file__).resolve().parent.parent / "man"
PAGES = ("ifmem.1", "ifmemd.8", "ifmem.toml.5", "ifmem-log.5")

# --- reading roff ---------------------------------------------------------------

# The escapes the pages use, as the text they stand for.
_ESCAPES = {
    r"\-": "-",
    r"\e": "\\",
    r"\&": "",
    r"\~": " ",
    r"\(aq": "'",
    r"\(dq": '"',
    r"\(lq": '"',
    r"\(rq": '"',
    r"\(ga": "`",
    r"\(bu": "*",
    r"\(mu": "x",
    r"\['e]": "é",
}
_ESCAPE_RE = re.compile(r"\\f(?:\[[^\]]*\]|\(..|.)|" + "|".join(re.escape(e) for e in _ESCAPES))


def plain(roff: str) -> str:
    """Roff text with font changes dropped and character escapes replaced."""
    return _ESCAPE_RE.sub(lambda m: _ESCAPES.get(m[0], ""), roff)


def _args(line: str) -> str:
    """The arguments of a macro line, unquoted and unescaped: `.SS "a b"` -> `a b`."""
    rest = line.split(None, 1)[1] if " " in line else ""
    return plain(rest.replace('"', "")).strip()


def read_page(name: str) -> str:
    return (MAN / name).read_text(encoding="utf-8")


@dataclasses.dataclass
class Section:
    macro: str  # SH or SS
    title: str
    lines: list[str]

    @property
    def text(self) -> str:
        return plain("\n".join(self.lines))

    def entries(self) -> dict[str, str]:
        """`.TP` entries: the first word of each tag line -> the tag and body, as text."""
        found: dict[str, str] = {}
        i = 0
        while i < len(self.lines):
            if self.lines[i].startswith(".TP") and i + 1 < len(self.lines):
                tag = (
                    _args(self.lines[i + 1])
                    if self.lines[i + 1].startswith(".")
                    else plain(self.lines[i + 1])
                )
                body = []
                j = i + 2
                while j < len(self.lines) and not self.lines[j].startswith((".TP", ".SS", ".SH")):
                    body.append(self.lines[j])
                    j += 1
                if tag.split():
                    found[tag.split()[0]] = tag + "\n" + plain("\n".join(body))
                i = j
            else:
                i += 1
        return found


def sections(page: str, macro: str = "SS") -> list[Section]:
    """Split a page at `.SH` (and, for macro SS, also `.SS`) headings."""
    out: list[Section] = []
    current: Section | None = None
    heads = (".SH", ".SS") if macro == "SS" else (".SH",)
    for line in page.splitlines():
        if line.startswith(heads):
            current = Section(line[1:3], _args(line), [])
            out.append(current)
        elif current is not None:
            current.lines.append(line)
    return out


def section(page: str, title: str, macro: str = "SS") -> Section:
    for s in sections(page, macro):
        if s.title == title:
            return s
    raise AssertionError(f"no section {title!r}")


def mentions(text: str, word: str) -> bool:
    """`word` occurs in `text` as a whole option or identifier, not inside a longer one."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


# --- ifmem(1): the typer app ------------------------------------------------------


def _walk(cmd: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, cmd
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        if not getattr(sub, "hidden", False):
            yield from _walk(sub, (*path, name))


ROOT = typer.main.get_command(app)
COMMANDS = list(_walk(ROOT, ()))
# Commands that run: those without subcommands, and groups that also run on their
# own (`ifmem log` prints the log; `ifmem log seal` is its subcommand).
LEAVES = [
    (p, c)
    for p, c in COMMANDS
    if p and (not hasattr(c, "commands") or getattr(c, "invoke_without_command", False))
]


def _options(cmd: Any) -> list[Any]:
    return [p for p in cmd.params if p.param_type_name == "option" and not p.hidden]


def _id(path: tuple[str, ...]) -> str:
    return " ".join(path) or "ifmem"


@pytest.mark.parametrize(("path", "cmd"), COMMANDS, ids=[_id(p) for p, _ in COMMANDS])
def test_every_command_option_and_argument_has_help(path: tuple[str, ...], cmd: Any) -> None:
    assert (cmd.help or "").strip(), f"`ifmem {' '.join(path)}` has no help text"
    for param in cmd.params:
        if param.param_type_name in ("option", "argument") and not getattr(param, "hidden", False):
            assert (getattr(param, "help", None) or "").strip(), (
                f"`ifmem {' '.join(path)}`: {param.param_type_name} {param.name!r} has no help"
            )


@pytest.mark.parametrize(("path", "cmd"), LEAVES, ids=[_id(p) for p, _ in LEAVES])
def test_every_command_and_option_is_in_ifmem_1(path: tuple[str, ...], cmd: Any) -> None:
    title = "ifmem " + " ".join(path)
    doc = section(read_page("ifmem.1"), title)
    for param in _options(cmd):
        for opt in (*param.opts, *param.secondary_opts):
            assert mentions(doc.text, opt), f"ifmem.1, section {title!r}: {opt} is missing"


def test_global_options_are_in_ifmem_1() -> None:
    doc = section(read_page("ifmem.1"), "OPTIONS", "SH")
    for param in _options(ROOT):
        for opt in (*param.opts, *param.secondary_opts):
            assert mentions(doc.text, opt), f"ifmem.1, OPTIONS: {opt} is missing"


def test_ifmem_1_documents_no_command_that_does_not_exist() -> None:
    real = {"ifmem " + " ".join(p) for p, _ in LEAVES}
    documented = {s.title for s in sections(read_page("ifmem.1")) if s.macro == "SS"}
    assert documented <= real, f"ifmem.1 documents unknown commands: {documented - real}"


def test_ifmemd_options_are_in_ifmemd_8() -> None:
    doc = section(read_page("ifmemd.8"), "OPTIONS", "SH")
    for action in ifmemd_parser()._actions:
        for opt in action.option_strings:
            assert mentions(doc.text, opt), f"ifmemd.8, OPTIONS: {opt} is missing"


def test_unit_settings_quoted_in_ifmemd_8_are_the_units_we_install() -> None:
    text = plain(read_page("ifmemd.8"))
    rendered = units.render_service(["/usr/bin/ifmemd"]) + units.render_socket()
    for line in rendered.splitlines():
        key, eq, value = line.partition("=")
        if eq and not line.startswith("#") and f"{key}=" in text:
            assert f"{key}={value}" in text, f"ifmemd.8 should say {line!r}"


# --- ifmem.toml(5): every key the parser knows ------------------------------------


def config_keys() -> dict[str, set[str]]:
    """Each table's keys: the parser's known keys and the fields of its dataclass."""
    keys = {name: set(known) for name, known in config.CONFIG_KEYS.items()}
    hints = typing.get_type_hints(config.Config, vars(config))
    for f in dataclasses.fields(config.Config):
        hint = hints[f.name]
        if typing.get_origin(hint) is tuple:  # shards: tuple[ShardConfig, ...] is [[shard]]
            hint, name = typing.get_args(hint)[0], f.name.removesuffix("s")
        else:
            name = f.name
        if dataclasses.is_dataclass(hint):
            assert name in keys, f"config section {name!r} is not known to the parser"
            keys[name] |= {g.name for g in dataclasses.fields(hint)}
    return keys


@pytest.mark.parametrize("table", sorted(config.CONFIG_KEYS))
def test_every_config_key_is_in_ifmem_toml_5(table: str) -> None:
    heading = f"[[{table}]]" if table == "shard" else f"[{table}]"
    doc = section(read_page("ifmem.toml.5"), heading)
    entries = doc.entries()
    known = config_keys()[table]
    missing = known - entries.keys()
    assert not missing, f"ifmem.toml.5, {heading}: no entry for {sorted(missing)}"
    stale = entries.keys() - known
    assert not stale, f"ifmem.toml.5, {heading}: documents unknown keys {sorted(stale)}"
    for key, text in entries.items():
        assert re.search(r"Default|Required|No default", text), (
            f"ifmem.toml.5, {heading}: {key} does not say its default"
        )


# --- ifmem-log(5): event kinds, schema, worked example ------------------------------


@pytest.mark.parametrize("kind", sorted(events.REGISTRY))
def test_every_event_kind_is_in_ifmem_log_5(kind: str) -> None:
    entries = section(read_page("ifmem-log.5"), "EVENT KINDS", "SH").entries()
    assert kind in entries, f"ifmem-log.5, EVENT KINDS: {kind} is missing"
    etype = events.REGISTRY[kind]
    tag, _, body = entries[kind].partition("\n")
    assert f"(v{etype.version})" in tag, f"ifmem-log.5: {kind} should say (v{etype.version})"
    for name in sorted(etype.required):
        assert mentions(body, name), f"ifmem-log.5, {kind}: required field {name} is missing"


def test_ifmem_log_5_documents_no_unknown_kind() -> None:
    entries = section(read_page("ifmem-log.5"), "EVENT KINDS", "SH").entries()
    assert entries.keys() <= events.REGISTRY.keys()


def _between(page: str, begin: str, end: str) -> str:
    lines = page.splitlines()
    start, stop = lines.index(f'.\\" BEGIN {begin}'), lines.index(f'.\\" END {end}')
    return "\n".join(plain(x) for x in lines[start + 1 : stop] if not x.startswith("."))


def test_schema_in_ifmem_log_5_is_the_schema_we_create() -> None:
    page = _between(read_page("ifmem-log.5"), "schema", "schema")
    assert page.split() == SCHEMA.split()


def test_ifmem_log_5_states_the_format_constants() -> None:
    text = plain(read_page("ifmem-log.5"))
    for shown in (
        f"PRAGMA application_id = {APPLICATION_ID}",
        f"0x{APPLICATION_ID:08X}",
        DOMAIN.hex(),
        CHECKPOINT_DOMAIN.hex(),
    ):
        assert shown in text, f"ifmem-log.5 should state {shown!r}"


SEED = bytes(range(1, 33))
LOG_ID = bytes.fromhex("00112233445566778899aabbccddeeff")
EXAMPLE_ROWS = (
    (
        1,
        1767225600000000000,
        "daemon.started",
        {"abandoned": 0, "pid": 4242, "shards": ["working"], "v": 1, "version": "0.1.0"},
    ),
    (
        2,
        1767225600250000000,
        "memory.remembered",
        {"memory_id": "5e1f0c2a9b7d", "rid": "r-1", "text": "Café opens at 9", "v": 1},
    ),
)


def worked_example() -> dict[str, Any]:
    """Every value of the worked example in ifmem-log(5), computed with the library."""
    signer = Signer.from_seed(SEED)
    values: dict[str, Any] = {
        "seed": SEED.hex(),
        "public_key": signer.public_key.hex(),
        "public_key_hash": hashlib.blake2b(signer.public_key, digest_size=32).hexdigest(),
        "key_id": signer.key_id,
        "log_id": LOG_ID.hex(),
    }
    prev = ZERO_HASH
    bodies = []
    for seq, ts_ns, kind, fields in EXAMPLE_ROWS:
        body = canonical_json(fields)
        bodies.append(body)
        values[f"hash_input_{seq}"] = b"".join(
            (
                DOMAIN,
                LOG_ID,
                seq.to_bytes(8, "big"),
                ts_ns.to_bytes(8, "big", signed=True),
                kind.encode(),
                b"\0",
                body,
                prev,
            )
        ).hex()
        digest = event_hash(LOG_ID, seq, ts_ns, kind.encode(), body, prev)
        # The spelled-out input and the library's function must agree.
        assert (
            hashlib.blake2b(bytes.fromhex(values[f"hash_input_{seq}"]), digest_size=32).digest()
            == digest
        )
        values[f"hash_{seq}"] = digest.hex()
        values[f"sig_{seq}"] = signer.sign(digest).hex()
        prev = digest
    values["checkpoint_message"] = checkpoint_message(LOG_ID, 2, prev).hex()
    values["checkpoint_line"] = cp.Checkpoint.make(signer, LOG_ID, 2, prev).line()
    values["bodies"] = bodies
    return values


def example_blocks(page: str) -> dict[str, str]:
    """The hex of each `.\\" example: NAME` block: the first hex token of each line."""
    blocks: dict[str, str] = {}
    name = None
    for line in page.splitlines():
        if m := re.match(r'\.\\" example: (\S+)$', line):
            name = m[1]
            blocks[name] = ""
        elif line.startswith("."):
            name = None
        elif name is not None:
            text = plain(line)
            if name == "checkpoint_line":
                blocks[name] = text
                continue
            token = next((t for t in text.split() if re.fullmatch(r"(?:[0-9a-f]{2})+", t)), "")
            blocks[name] += token
    return blocks


def test_worked_example_values_match_the_library() -> None:
    expected = worked_example()
    page = example_blocks(read_page("ifmem-log.5"))
    names = set(expected) - {"bodies"}
    assert names <= page.keys(), f"ifmem-log.5 lacks example blocks {sorted(names - page.keys())}"
    for name in sorted(names):
        assert page[name] == expected[name], f"ifmem-log.5, worked example: {name} differs"


def test_worked_example_rows_are_shown_as_the_library_writes_them() -> None:
    text = plain(read_page("ifmem-log.5"))
    for (seq, ts_ns, kind, _), body in zip(EXAMPLE_ROWS, worked_example()["bodies"], strict=True):
        shown = f"seq     {seq}\nts_ns   {ts_ns} "
        assert shown in text, f"ifmem-log.5, worked example: row {seq} should show {shown!r}"
        shown = f"kind    {kind}\nbody    {body.decode()}\n"
        assert shown in text, f"ifmem-log.5, worked example: row {seq} should show {shown!r}"


def test_worked_example_database_verifies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = read_page("ifmem-log.5")
    db = tmp_path / "example.db"
    conn = apsw.Connection(str(db))
    for sql in (_between(page, "schema", "schema"), _between(page, "example.sql", "example.sql")):
        for _ in conn.execute(sql):
            pass
    conn.close()
    line = example_blocks(page)["checkpoint_line"]
    report = verify_log(db, checkpoints=[cp.parse_line(line, "ifmem-log.5")])
    assert report.ok, report.failure
    assert (report.rows, report.checkpoints) == (2, 1)

    # The page shows the command and what it prints: run it.
    (tmp_path / "example.cp").write_text(line + "\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        app, ["audit", "verify", "--db", "example.db", "--checkpoint", "example.cp"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() in plain(page).splitlines()


# --- lint ------------------------------------------------------------------------


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    return (done.stdout + done.stderr).strip() or (
        "" if done.returncode == 0 else f"exit {done.returncode}"
    )


@pytest.mark.parametrize("page", PAGES)
def test_page_lints_clean(page: str) -> None:
    path = str(MAN / page)
    mandoc, groff = shutil.which("mandoc"), shutil.which("groff")
    if mandoc is None and os.environ.get("CI") == "true":
        pytest.fail("mandoc is required under CI (make deps-apt installs it)")
    if mandoc is None and groff is None:
        pytest.skip("neither mandoc nor groff is installed")
    if mandoc is not None:
        assert _run([mandoc, "-T", "lint", path]) == ""
    if groff is not None:
        assert _run([groff, "-ww", "-z", "-man", path]) == ""


if __name__ == "__main__":
    for key, value in worked_example().items():
        print(f"{key}: {value}")
