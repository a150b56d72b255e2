"""The real-text benchmark corpus: a fixed list of files any Debian + Python machine has.

Four shards, each built from a fixed, sorted list (no sampling), so that the
hand-written gold citations in `bench/questions/` stay valid:

    commands  man pages of commands (sections 1 and 8), rendered
    system    man pages of system calls, the C library, file formats and
              overviews (sections 2, 3, 5 and 7), rendered
    stdlib    standard-library modules of the running Python, and a few of its tests
    docs      Markdown and text documentation under /usr/share/doc (gzipped
              ones decompressed) and beside the standard library

Man pages are rendered by `mandoc -T utf8 -O width=80` with the overstrike
(bold `X\\bX`, underline `_\\bX`) removed: plain UTF-8 text with the
typographic hyphens and quotes an agent reads in a terminal. `man -w` finds
each page's source, so the same page renders the same way wherever the same
package version is installed (`make bench-setup` installs mandoc, man-db,
manpages and ripgrep). A file missing from this machine is left out and
reported; questions citing it are then skipped, not counted as misses.
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

from corpus import ShardTree

# (name, section) of each man page, per shard.
COMMANDS = (
    ("apt-get", "8"), ("bash", "1"), ("chmod", "1"), ("cp", "1"), ("curl", "1"),
    ("date", "1"), ("diff", "1"), ("dpkg", "1"), ("du", "1"), ("find", "1"),
    ("grep", "1"), ("gzip", "1"), ("ls", "1"), ("man", "1"), ("sed", "1"),
    ("sort", "1"), ("ssh", "1"), ("tar", "1"), ("xargs", "1"),
)  # fmt: skip
SYSTEM = (
    ("capabilities", "7"), ("credentials", "7"), ("environ", "7"), ("epoll", "7"),
    ("fork", "2"), ("fstab", "5"), ("glob", "7"), ("hier", "7"), ("inotify", "7"),
    ("ip", "7"), ("mmap", "2"), ("open", "2"), ("passwd", "5"), ("pipe", "7"),
    ("printf", "3"), ("regex", "7"), ("signal", "7"), ("socket", "7"),
    ("strftime", "3"), ("tcp", "7"), ("termios", "3"), ("unix", "7"),
)  # fmt: skip
# Paths relative to the standard library.
STDLIB = (
    "argparse.py", "base64.py", "bisect.py", "contextlib.py", "csv.py", "fnmatch.py",
    "functools.py", "glob.py", "gzip.py", "heapq.py", "http/client.py", "json/__init__.py",
    "json/decoder.py", "json/encoder.py", "logging/__init__.py", "logging/handlers.py",
    "os.py", "pathlib.py", "queue.py", "secrets.py", "selectors.py", "shlex.py",
    "shutil.py", "socket.py", "string.py", "subprocess.py", "tempfile.py",
    "test/test_shlex.py", "test/test_tempfile.py", "textwrap.py", "threading.py",
    "urllib/parse.py", "uuid.py", "zipfile.py",
)  # fmt: skip
# (relative path in the shard, source); a `.gz` source is decompressed.
DOCS = (
    ("apt/README.md", "/usr/share/doc/apt/README.md.gz"),
    ("base-files/README", "/usr/share/doc/base-files/README"),
    ("dpkg/spec/rootless-builds.txt", "/usr/share/doc/dpkg/spec/rootless-builds.txt"),
    ("dpkg/spec/triggers.txt", "/usr/share/doc/dpkg/spec/triggers.txt"),
    ("gcc-12-base/README.Bugs", "/usr/share/doc/gcc-12-base/README.Bugs"),
    ("libffi8/README.md", "/usr/share/doc/libffi8/README.md.gz"),
    ("man-db/NEWS.md", "/usr/share/doc/man-db/NEWS.md.gz"),
    ("man-db/README.md", "/usr/share/doc/man-db/README.md.gz"),
    ("python/email/architecture.rst", "{stdlib}/email/architecture.rst"),
    ("python/idlelib/README.txt", "{stdlib}/idlelib/README.txt"),
)
MAN_WIDTH = 80
_OVERSTRIKE = re.compile(".\b")


@dataclass
class Built:
    """The shards built, and what this machine lacked."""

    trees: list[ShardTree]
    missing: list[str] = field(default_factory=list)


def render_man(name: str, section: str) -> str | None:
    """A man page as plain UTF-8 text, or None when it is not installed."""
    found = subprocess.run(["man", "-w", section, name], capture_output=True, text=True)
    source = found.stdout.strip()
    if found.returncode != 0 or not source:
        return None
    out = subprocess.run(
        ["mandoc", "-T", "utf8", "-O", f"width={MAN_WIDTH}", source],
        capture_output=True,
        check=True,
    )
    return _OVERSTRIKE.sub("", out.stdout.decode("utf-8"))


def _man_shard(
    dest: Path, name: str, description: str, pages: tuple, missing: list[str]
) -> ShardTree:
    tree = ShardTree(name, description, dest / name)
    tree.path.mkdir(parents=True, exist_ok=True)
    for page, section in pages:
        text = render_man(page, section)
        rel = f"{page}.{section}.txt"
        if text is None:
            missing.append(f"{name}/{rel}")
            continue
        data = text.encode("utf-8")
        (tree.path / rel).write_bytes(data)
        tree.files.append(rel)
        tree.bytes += len(data)
    return tree


def _copy_shard(
    dest: Path, name: str, description: str, files: list[tuple[str, Path]], missing: list[str]
) -> ShardTree:
    tree = ShardTree(name, description, dest / name)
    for rel, source in files:
        if not source.is_file():
            missing.append(f"{name}/{rel}")
            continue
        data = (
            gzip.decompress(source.read_bytes()) if source.suffix == ".gz" else source.read_bytes()
        )
        target = tree.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        tree.files.append(rel)
        tree.bytes += len(data)
    return tree


def build(dest: Path) -> Built:
    """Render and copy the four shards into `dest/<shard>/`."""
    if shutil.which("mandoc") is None or shutil.which("man") is None:
        raise RuntimeError("the real-text corpus needs mandoc and man: run `make bench-setup`")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    missing: list[str] = []
    trees = [
        _man_shard(dest, "commands", "Manual pages of commands", COMMANDS, missing),
        _man_shard(dest, "system", "Manual pages of system calls, libc, formats", SYSTEM, missing),
        _copy_shard(
            dest,
            "stdlib",
            "Python standard library sources",
            [(rel, stdlib / rel) for rel in STDLIB],
            missing,
        ),
        _copy_shard(
            dest,
            "docs",
            "Debian and Python documentation",
            [(rel, Path(src.format(stdlib=stdlib))) for rel, src in DOCS],
            missing,
        ),
    ]
    for tree in trees:
        tree.distinct_bytes = tree.bytes
    return Built(trees, missing)
