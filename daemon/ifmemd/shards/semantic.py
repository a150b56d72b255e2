"""Ranking by meaning: a shard's passages as vectors, for questions in other words than the text.

A question in other words than its answer ("a throwaway folder that deletes
itself" for `TemporaryDirectory`) shares few words with it, and bm25 cannot
find what it does not match. With `semantic = true` in its `[[shard]]`, a
shard also keeps a vector of each passage (the mean of its tokens' static
embeddings, of unit length), written beside the passage by the index writer
(`ifmemd.shards.store`); a search then ranks every passage by the cosine of
its vector with the question's (one matrix product, `Vectors.rank`) and fuses
that ranking with bm25's by reciprocal rank fusion (`fuse`). The question's
tokens are weighed by the idf of their words in the shard's own index (the
index passes `weigh`), so that its telling words steer its vector.

The embeddings are WordLlama's `l2_supercat` 256-dimension token embeddings
and their tokenizer, both shipped inside the `wordllama` wheel (MIT): the
optional extra `ifmem[semantic]` installs it, with numpy, safetensors and
tokenizers. They are read from the installed package's files, never through
wordllama's loader, which would download a missing file (and configures the
root logger when imported): nothing is fetched at run time, and a shard
without the extra says so at config time (`missing`).

numpy is imported only by the functions that need it: a shard without
`semantic` never loads it.
"""

from __future__ import annotations

import bisect
import functools
import importlib.util
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from ifmemd.errors import IfmemError

if TYPE_CHECKING:
    import numpy as np

# Names the vectors an index holds: an index whose vectors were made by
# another model (or none) is rebuilt (`ifmemd.shards.store`).
MODEL = "wordllama-l2_supercat-256"
DIM = 256
EXTRA = "semantic"
_PACKAGE = "wordllama"
_WEIGHTS = ("weights", "l2_supercat_256.safetensors")
_TOKENIZER = ("tokenizers", "l2_supercat_tokenizer_config.json")
_TENSOR = "embedding.weight"
_MODULES = ("numpy", "safetensors", "tokenizers")
# How many passages the dense ranking offers to the fusion, as bm25 offers
# `rerank.CANDIDATES`.
CANDIDATES = 32
# Reciprocal rank fusion: a passage scores 1 / (FUSION_K + its bm25 rank) +
# DENSE_WEIGHT / (FUSION_K + its dense rank). The dense ranking alone is worse
# than bm25's on the real-text questions (bench/README.md), so it counts half:
# it lifts bm25's candidates that also mean what the question means, and a
# passage found by meaning alone joins those bm25 ranked below its fifth.
FUSION_K = 5
DENSE_WEIGHT = 0.5
_WORD = re.compile(r"\w+")
# The bytes of one stored vector: little-endian half floats (the embeddings'
# own precision).
_DTYPE = "<f2"


class SemanticUnavailableError(IfmemError):
    """Raised when a shard is to rank by meaning and the `semantic` extra is not installed."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(
            f"semantic ranking: {reason}; install it with `pip install 'ifmem[{EXTRA}]'` "
            "or set semantic = false"
        )


def missing() -> str:
    """Why semantic ranking cannot run here ("" when it can), without importing anything."""
    for module in (*_MODULES, _PACKAGE):
        if importlib.util.find_spec(module) is None:
            return f"the Python package {module!r} is not installed"
    root = _package_root()
    for parts in (_WEIGHTS, _TOKENIZER):
        if not root.joinpath(*parts).is_file():
            return f"{root.joinpath(*parts)} is missing from the {_PACKAGE} package"
    return ""


def _package_root() -> Path:
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SemanticUnavailableError(f"the Python package {_PACKAGE!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


class Embedder:
    """Turns texts into unit vectors: the mean of their tokens' embeddings."""

    def __init__(self) -> None:
        reason = missing()
        if reason:
            raise SemanticUnavailableError(reason)
        _numpy()  # first: it sets how numpy is loaded
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        root = _package_root()
        # Half floats as shipped (16 MB); the rows a text uses are widened.
        self._table = load_file(str(root.joinpath(*_WEIGHTS)))[_TENSOR]
        self._tokenizer = Tokenizer.from_file(str(root.joinpath(*_TOKENIZER)))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text, of unit length (all zeros for a text without tokens)."""
        np = _numpy()

        out = np.zeros((len(texts), DIM), dtype=np.float32)
        encoded = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        for i, enc in enumerate(encoded):
            if enc.ids:
                out[i] = self._table[enc.ids].astype(np.float32).mean(axis=0)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out

    def embed_one(self, text: str, weigh: Callable[[str], float] | None = None) -> np.ndarray:
        """`embed` of one text (a question), without the batch's overhead.

        `weigh`: each token counts as much as the word it is part of weighs
        (a token outside words, punctuation, not at all) instead of evenly.
        """
        np = _numpy()
        encoded = self._tokenizer.encode(text, add_special_tokens=False)
        ids = encoded.ids
        if not ids:
            return np.zeros(DIM, dtype=np.float32)
        rows = self._table[ids].astype(np.float32)
        if weigh is None:
            vector = rows.mean(axis=0)
        else:
            weights = np.asarray(_token_weights(text, encoded.offsets, weigh), dtype=np.float32)
            total = float(weights.sum())
            vector = weights @ rows / total if total > 0 else rows.mean(axis=0)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector

    def blobs(self, texts: Sequence[str]) -> list[bytes]:
        """The vectors of `texts` as the index stores them."""
        return [row.astype(_DTYPE).tobytes() for row in self.embed(texts)]


def _token_weights(
    text: str, offsets: Sequence[tuple[int, int]], weigh: Callable[[str], float]
) -> list[float]:
    """The weight of each token (by its character span in `text`): its word's."""
    words = [(m.start(), m.end(), m.group()) for m in _WORD.finditer(text)]
    starts = [start for start, _, _ in words]
    weighed: dict[str, float] = {}
    out = []
    for begin, end in offsets:
        # The word holding the token's last character (a token may begin with a space).
        i = bisect.bisect_right(starts, max(begin, end - 1)) - 1
        if i < 0 or end - 1 >= words[i][1]:
            out.append(0.0)
            continue
        word = words[i][2]
        if word not in weighed:
            weighed[word] = weigh(word)
        out.append(weighed[word])
    return out


def _numpy() -> ModuleType:
    """numpy, with one BLAS thread: a shard answers one question at a time, and
    OpenBLAS's threads spin between calls on the cores other shards need (a
    search cost twice the CPU with them). Only numpy's first import reads it."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import numpy

    return numpy


@functools.cache
def embedder() -> Embedder:
    """The process's one embedder (its table is 16 MB: loaded once, on first use)."""
    return Embedder()


class Vectors:
    """A shard's passage vectors in memory, for one matrix product a question.

    Read from the index's `vector` table; `extend` adds the rows of passages
    stored since (chunk ids only grow). Those of passages removed since stay
    until the index reads them all anew (`Index._passage_vectors`): a search
    only cites passages it can still read.
    """

    def __init__(self) -> None:
        np = _numpy()

        self.rowids = np.zeros(0, dtype=np.int64)
        self.matrix = np.zeros((0, DIM), dtype=np.float32)

    def __len__(self) -> int:
        return len(self.rowids)

    @property
    def last(self) -> int:
        """The highest chunk id held (0 when empty)."""
        return int(self.rowids[-1]) if len(self.rowids) else 0

    def extend(self, rows: Iterable[tuple[int, bytes]]) -> None:
        """Add (chunk id, stored vector) rows, in increasing chunk id after `last`."""
        np = _numpy()

        rows = list(rows)
        if not rows:
            return
        ids = np.fromiter((r for r, _ in rows), dtype=np.int64, count=len(rows))
        data = np.frombuffer(b"".join(v for _, v in rows), dtype=_DTYPE).reshape(-1, DIM)
        self.rowids = np.concatenate([self.rowids, ids])
        self.matrix = np.concatenate([self.matrix, data.astype(np.float32)])

    def rank(self, query: np.ndarray, n: int) -> Ranking:
        """Every passage held, by similarity to `query` (a unit vector): the `n` best."""
        np = _numpy()

        sims = self.matrix @ query
        n = min(n, len(sims))
        if not n:
            return Ranking([], self.rowids, sims)
        best = np.argpartition(-sims, n - 1)[:n]
        # Best first; ties by chunk id, so that every run ranks alike.
        best = best[np.lexsort((self.rowids[best], -sims[best]))]
        return Ranking(self.rowids[best].tolist(), self.rowids, sims)


@dataclass(frozen=True, slots=True)
class Ranking:
    """A question's dense ranking: its best passages, and every held passage's similarity."""

    best: list[int]  # rowids, best first
    rowids: np.ndarray  # sorted
    sims: np.ndarray  # cosine of each of `rowids` with the question

    def similarity(self, rowid: int) -> float | None:
        """The cosine of `rowid`'s vector with the question's (None: no vector held)."""
        np = _numpy()

        i = int(np.searchsorted(self.rowids, rowid))
        if i < len(self.rowids) and self.rowids[i] == rowid:
            return float(self.sims[i])
        return None


def fuse(lexical: Sequence[int], dense: Sequence[int]) -> dict[int, float]:
    """Reciprocal rank fusion of two rankings (rowids, best first) → rowid → score."""
    scores: dict[int, float] = {}
    for rank, rowid in enumerate(lexical, 1):
        scores[rowid] = 1 / (FUSION_K + rank)
    for rank, rowid in enumerate(dense, 1):
        scores[rowid] = scores.get(rowid, 0.0) + DENSE_WEIGHT / (FUSION_K + rank)
    return scores
