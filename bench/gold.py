"""The labelled questions of bench/questions/ and how answers to them are scored.

A question's gold is one or more spans `path:start-end` (path relative to its
shard's root). A cited passage answers the question when it is in the right
shard's file and its lines overlap a gold span. Per question, over the first
`k` citations: recall@k is 1 if any of them answers, and the reciprocal rank
is 1/rank of the first that does (0 if none); MRR is its mean.

The `rg` baseline is what an agent does without a memory: `rg -i -n -F` with
each of the question's words (stopwords dropped) over the same trees. Its
lines are ranked by how many distinct question words each holds (then in
rg's output order), and its first `k` lines are its citations.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ifmemd.shards.index import STOPWORDS

QUESTIONS = Path(__file__).resolve().parent / "questions" / "realtext.toml"
_WORD = re.compile(r"[A-Za-z0-9_]+")


@dataclass(frozen=True)
class Span:
    path: str  # relative to the shard's root
    start: int
    end: int

    @classmethod
    def parse(cls, text: str) -> Span:
        path, _, lines = text.rpartition(":")
        start, _, end = lines.partition("-")
        return cls(path, int(start), int(end))


@dataclass(frozen=True)
class Labelled:
    """One question, the shard holding its answer, and where the answer is."""

    text: str
    shard: str
    gold: tuple[Span, ...]
    paraphrase: bool

    def words(self) -> list[str]:
        """The question's words as an agent would grep them: no stopwords, no duplicates."""
        out: list[str] = []
        for w in _WORD.findall(self.text):
            if w.lower() not in STOPWORDS and len(w) > 1 and w.lower() not in map(str.lower, out):
                out.append(w)
        return out


@dataclass(frozen=True)
class Cited:
    """A citation as the scorer sees it: an absolute path and a line range."""

    path: str
    start: int
    end: int


def load(path: Path = QUESTIONS) -> list[Labelled]:
    with path.open("rb") as f:
        doc = tomllib.load(f)
    return [
        Labelled(
            q["text"],
            q["shard"],
            tuple(Span.parse(g) for g in q["gold"]),
            bool(q.get("paraphrase", False)),
        )
        for q in doc["question"]
    ]


def rank_of_answer(q: Labelled, cited: Sequence[Cited], k: int) -> int:
    """1-based rank of the first of the first `k` citations that answers `q`; 0 if none."""
    for rank, c in enumerate(cited[:k], 1):
        for g in q.gold:
            if c.path.endswith(f"/{q.shard}/{g.path}") and c.start <= g.end and g.start <= c.end:
                return rank
    return 0


@dataclass
class Scores:
    """recall@k and MRR of one group of questions."""

    n: int = 0
    found: int = 0
    rr: float = 0.0

    def add(self, rank: int) -> None:
        self.n += 1
        if rank:
            self.found += 1
            self.rr += 1 / rank

    @property
    def recall(self) -> float:
        return self.found / self.n if self.n else float("nan")

    @property
    def mrr(self) -> float:
        return self.rr / self.n if self.n else float("nan")


def score(questions: Sequence[Labelled], ranks: Sequence[int]) -> dict[str, Scores]:
    """Scores overall, per shard, and for the paraphrased and literal questions."""
    groups: dict[str, Scores] = {name: Scores() for name in ("all", "literal", "paraphrased")}
    for q, rank in zip(questions, ranks, strict=True):
        for name in ("all", f"shard {q.shard}", "paraphrased" if q.paraphrase else "literal"):
            groups.setdefault(name, Scores()).add(rank)
    return groups


def rg_command(rg: str, q: Labelled, dirs: Iterable[Path]) -> list[str]:
    cmd = [rg, "-i", "-n", "-F", "--no-heading", "--with-filename", "--sort=path"]
    for w in q.words():
        cmd += ["-e", w]
    return cmd + [str(d) for d in dirs]


def rg_cited(rg: str, q: Labelled, dirs: Sequence[Path]) -> list[Cited]:
    """rg's lines for `q`, best first (most distinct question words, then output order)."""
    out = subprocess.run(rg_command(rg, q, dirs), capture_output=True, check=False)
    words = [w.lower() for w in q.words()]
    scored: list[tuple[int, int, Cited]] = []
    for i, line in enumerate(out.stdout.decode("utf-8", "replace").splitlines()):
        path, _, rest = line.partition(":")
        number, _, text = rest.partition(":")
        if not number.isdigit():
            continue
        low = text.lower()
        held = sum(w in low for w in words)
        scored.append((-held, i, Cited(path, int(number), int(number))))
    scored.sort(key=lambda t: (t[0], t[1]))
    return [c for _, _, c in scored]
