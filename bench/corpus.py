"""The benchmark corpus for bench/ask.py: real text from this machine, chosen reproducibly.

Four domains, one shard each:

    docs      /usr/share/doc: *.md, *.txt, *.rst, README* (no copyright/licence files)
    stdlib    the base interpreter's standard library sources (*.py, no tests)
    packages  the venv's site-packages sources and docs (*.py, *.pyi, *.md, *.rst)
    headers   C headers under /usr/include (*.h; not Node's per-architecture copies)

Selection is deterministic for a given machine: each domain's candidate files
are listed in sorted order, then taken in the order of a keyed BLAKE2b hash of
their relative path (a fixed shuffle that mixes packages instead of taking the
alphabetically first ones), skipping hidden names, files that are not clean
UTF-8 text, and files larger than a per-file cap, until the domain's byte budget
is filled. The chosen files are copied into a fixed tree (`DEST/<domain>/<rel>`),
which both the shards and the `rg` baseline read.

The scale corpus mixes all four domains the same way up to a larger budget; if
the machine has less distinct text than asked for, the pool is repeated under
`copy2/`, `copy3/`, … and `repeated` says so.

Questions are generated from the chosen files with a seeded RNG: identifiers
(Python functions and classes, C macros, structs and functions) and document
headings, plus a fixed list of natural-language questions. Each question
carries the terms an agent would grep for, and, for identifier questions, the
file it came from.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

SEED = 20240611
MAX_FILE_BYTES = 128 * 1024
MIN_FILE_BYTES = 200
SNIFF = 8192

BORING = re.compile(r"^(copyright|copying|licen[cs]e|authors|changelog)([._-].*)?$", re.I)


@dataclass(frozen=True)
class Domain:
    """Where one shard's text comes from and which files count."""

    name: str
    description: str
    root: Path
    wanted: Callable[[str], bool]


def _doc_file(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    if BORING.match(name) or name.endswith((".gz", ".html", ".htm", ".json")):
        return False
    return name.endswith((".md", ".txt", ".rst", ".markdown")) or name.startswith("README")


def _stdlib_file(rel: str) -> bool:
    parts = rel.split("/")
    if parts[0] in ("site-packages", "test", "idlelib", "lib2to3") or "tests" in parts:
        return False
    return rel.endswith(".py")


def _package_file(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    if ".dist-info/" in rel or BORING.match(name) or rel.startswith("_editable"):
        return False
    return name.endswith((".py", ".pyi", ".md", ".rst"))


def _header_file(rel: str) -> bool:
    # Node ships one copy of the OpenSSL headers per architecture; one is enough.
    return rel.endswith(".h") and "/archs/" not in rel


def domains() -> list[Domain]:
    """The four domains, in shard order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    purelib = Path(sysconfig.get_paths()["purelib"])
    return [
        Domain("docs", "Debian package documentation", Path("/usr/share/doc"), _doc_file),
        Domain("stdlib", "Python standard library sources", stdlib, _stdlib_file),
        Domain("packages", "Installed Python packages (site-packages)", purelib, _package_file),
        Domain("headers", "C headers (/usr/include)", Path("/usr/include"), _header_file),
    ]


@dataclass(frozen=True)
class Candidate:
    domain: str
    root: Path
    rel: str
    size: int

    @property
    def source(self) -> Path:
        return self.root / self.rel


def candidates(domain: Domain) -> list[Candidate]:
    """Every file of `domain` that may be chosen, in sorted order (not yet checked as text)."""
    key = (domain.name, str(domain.root))
    if key not in _CANDIDATES:
        _CANDIDATES[key] = _list(domain)
    return _CANDIDATES[key]


_CANDIDATES: dict[tuple[str, str], list[Candidate]] = {}


def _list(domain: Domain) -> list[Candidate]:
    out: list[Candidate] = []
    if not domain.root.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(domain.root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
        base = Path(dirpath)
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = base / name
            rel = path.relative_to(domain.root).as_posix()
            if not domain.wanted(rel):
                continue
            try:
                if path.is_symlink() or not path.is_file():
                    continue
                size = path.stat().st_size
            except OSError:
                continue
            if MIN_FILE_BYTES <= size <= MAX_FILE_BYTES:
                out.append(Candidate(domain.name, domain.root, rel, size))
    return out


def _key(salt: str, c: Candidate) -> bytes:
    return hashlib.blake2b(f"{salt}:{c.domain}/{c.rel}".encode(), digest_size=16).digest()


def is_text(path: Path) -> bool:
    """Clean UTF-8 without NUL bytes: what a shard loads rather than skips."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    if b"\x00" in data[:SNIFF]:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _fill(pool: list[Candidate], budget: int, salt: str) -> Iterator[Candidate]:
    """Candidates in hash order that are text and fit the remaining budget."""
    remaining = budget
    for c in sorted(pool, key=lambda c: _key(salt, c)):
        if remaining < MIN_FILE_BYTES:
            return
        if c.size <= remaining and is_text(c.source):
            remaining -= c.size
            yield c


@dataclass
class ShardTree:
    """One shard's copied files."""

    name: str
    description: str
    path: Path
    files: list[str] = field(default_factory=list)  # paths relative to `path`
    bytes: int = 0
    repeated: int = 1  # how many times the pool was used (scale corpus only)
    distinct_bytes: int = 0

    def summary(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        d["files"] = len(self.files)
        return d


def _copy(c: Candidate, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(c.source, dest)


def build_shards(dest: Path, shard_bytes: int, salt: str = str(SEED)) -> list[ShardTree]:
    """Copy about `shard_bytes` of each domain's text to `dest/<domain>/`."""
    trees = []
    for domain in domains():
        tree = ShardTree(domain.name, domain.description, dest / domain.name)
        for c in _fill(candidates(domain), shard_bytes, salt):
            _copy(c, tree.path / c.rel)
            tree.files.append(c.rel)
            tree.bytes += c.size
        tree.distinct_bytes = tree.bytes
        trees.append(tree)
    return trees


def build_scale(dest: Path, total_bytes: int, salt: str = str(SEED)) -> ShardTree:
    """Copy about `total_bytes` of text from all domains, mixed, to `dest/` (repeating if short)."""
    pool = [c for d in domains() for c in candidates(d)]
    tree = ShardTree("big", "All domains mixed (scale test)", dest)
    chosen = list(_fill(pool, total_bytes, salt))
    distinct = sum(c.size for c in chosen)
    tree.distinct_bytes = distinct
    copy = 1
    while True:
        prefix = "" if copy == 1 else f"copy{copy}/"
        for c in chosen:
            if tree.bytes + c.size > total_bytes:
                break
            rel = f"{prefix}{c.domain}/{c.rel}"
            _copy(c, dest / rel)
            tree.files.append(rel)
            tree.bytes += c.size
        else:
            if distinct and total_bytes - tree.bytes >= MIN_FILE_BYTES and copy < 64:
                copy += 1
                continue
        break
    tree.repeated = copy
    return tree


# -- questions -------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    """One benchmark question, the terms an agent would grep for, and where it came from."""

    text: str
    terms: tuple[str, ...]
    kind: str  # "identifier", "heading" or "natural"
    shard: str = ""
    source: str = ""  # relative path of the file the identifier was taken from


NATURAL: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("How do I set a timeout on a socket connection?", ("settimeout", "socket timeout")),
    ("How are child processes killed when the parent process exits?", ("PDEATHSIG", "killpg")),
    ("How do I read a text file line by line with a given encoding?", ("readline", "encoding=")),
    ("What is the maximum length of a file name or a path?", ("PATH_MAX", "NAME_MAX")),
    ("How do I compress and decompress data with zlib?", ("zlib", "decompress")),
    ("How are log levels and handlers configured in logging?", ("setLevel", "addHandler")),
    ("How do I run a coroutine with a timeout and cancel it?", ("wait_for", "cancel(")),
    ("How are environment variables read and overridden?", ("environ", "getenv")),
    ("How is a TLS certificate and its hostname verified?", ("check_hostname", "verify_mode")),
    ("How do I retry a failed HTTP request with exponential backoff?", ("retry", "backoff")),
    ("How do I format a date and time in ISO 8601?", ("isoformat", "strftime")),
    ("Which signal is sent when a terminal window is resized?", ("SIGWINCH",)),
)

_PY_DEF = re.compile(r"^\s*def ([a-z][a-z0-9_]{5,40})\(", re.M)
_PY_CLASS = re.compile(r"^class ([A-Z][A-Za-z0-9]{4,40})\b", re.M)
_C_DEFINE = re.compile(r"^#\s*define\s+([A-Z][A-Z0-9_]{5,40})\s+\S", re.M)
_C_STRUCT = re.compile(r"^struct ([a-z][a-z0-9_]{4,40})\s*\{", re.M)
_C_FUNC = re.compile(r"^(?:extern\s+)?[a-z_][\w \*]*?\b([a-z][a-z0-9_]{5,40})\s*\(", re.M)
_MD_HEADING = re.compile(r"^#{1,3}\s+([A-Za-z][A-Za-z0-9 ,'/-]{6,60}?)\s*#*\s*$", re.M)
_UNDERLINED = re.compile(r"^([A-Z][A-Za-z0-9 ,'/-]{6,60})\n[=-]{4,}\s*$", re.M)
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_]{2,}")
_STOP = frozenset(
    {
        "the", "and", "for", "with", "how", "what", "does", "this", "that", "from", "are",
        "you", "your", "can", "use", "using", "into", "about", "which", "when", "where", "why",
        "who", "will", "not", "all", "any", "its", "our",
    }
)  # fmt: skip


def _templates(kind: str) -> list[str]:
    return {
        "py_def": ["Where is {} defined and what does it do?", "How is {} called?"],
        "py_class": ["What is the {} class for?", "Which methods does {} have?"],
        "c_define": ["What value is {} defined to?", "What does the {} macro mean?"],
        "c_struct": ["What fields does struct {} have?"],
        "c_func": ["What arguments does {} take?", "Which header declares {}?"],
        "heading": ["What does the documentation say about {}?", "{}?"],
    }[kind]


def _identifiers(tree: ShardTree) -> list[tuple[str, str, str]]:
    """(kind, identifier or heading, file) found in a shard's files, sorted, unique."""
    found: dict[tuple[str, str], str] = {}
    for rel in sorted(tree.files):
        text = (tree.path / rel).read_text("utf-8", "replace")
        if rel.endswith((".py", ".pyi")):
            pats = [("py_def", _PY_DEF), ("py_class", _PY_CLASS)]
        elif rel.endswith(".h"):
            pats = [("c_define", _C_DEFINE), ("c_struct", _C_STRUCT), ("c_func", _C_FUNC)]
        else:
            pats = [("heading", _MD_HEADING), ("heading", _UNDERLINED)]
        for kind, pat in pats:
            for m in pat.finditer(text):
                name = m.group(1).strip()
                if name.startswith(("test", "_")) or (kind == "heading" and len(name.split()) < 2):
                    continue
                found.setdefault((kind, name), rel)
    return sorted((k, n, rel) for (k, n), rel in found.items())


def _heading_terms(heading: str) -> tuple[str, ...]:
    words = [w for w in _WORD.findall(heading) if w.lower() not in _STOP]
    words.sort(key=len, reverse=True)
    return tuple(words[:3]) or (heading,)


def make_questions(trees: list[ShardTree], n: int = 50, seed: int = SEED) -> list[Question]:
    """`n` questions: the natural-language ones, the rest spread over the shards."""
    rng = random.Random(seed)
    natural = [Question(t, terms, "natural") for t, terms in NATURAL][: max(0, n // 4)]
    out: list[Question] = []
    per = [(n - len(natural)) // len(trees)] * len(trees)
    for i in range((n - len(natural)) % len(trees)):
        per[i] += 1
    for tree, want in zip(trees, per, strict=True):
        pool = _identifiers(tree)
        for kind, name, rel in rng.sample(pool, min(want, len(pool))):
            template = rng.choice(_templates(kind))
            if kind == "heading":
                q = Question(template.format(name), _heading_terms(name), "heading", tree.name, rel)
            else:
                q = Question(template.format(name), (name,), "identifier", tree.name, rel)
            out.append(q)
    out += natural
    rng.shuffle(out)
    return out


def save_questions(path: Path, questions: list[Question]) -> None:
    path.write_text(json.dumps([asdict(q) for q in questions], indent=1) + "\n")


def load_questions(path: Path) -> list[Question]:
    return [
        Question(d["text"], tuple(d["terms"]), d["kind"], d["shard"], d["source"])
        for d in json.loads(path.read_text())
    ]
