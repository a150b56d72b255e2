"""The real-text benchmark: its labelled questions hold together, its scoring is
right, and a run over this machine's corpus prints recall beside rg's.

No score is asserted for ifmem: the run is a report, not a gate.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import gold  # noqa: E402


def test_the_question_set_is_large_and_a_third_paraphrased() -> None:
    questions = gold.load()
    assert len(questions) >= 60
    assert sum(q.paraphrase for q in questions) * 3 >= len(questions)
    assert {q.shard for q in questions} == {"commands", "system", "stdlib", "docs"}
    for q in questions:
        assert q.gold and all(1 <= g.start <= g.end for g in q.gold), q.text


def test_a_citation_answers_when_it_overlaps_gold_in_the_right_shard() -> None:
    q = gold.Labelled("q?", "stdlib", (gold.Span.parse("tempfile.py:344-382"),), False)
    right = gold.Cited("/c/stdlib/tempfile.py", 380, 400)
    elsewhere = gold.Cited("/c/stdlib/test/test_tempfile.py", 344, 382)
    after = gold.Cited("/c/stdlib/tempfile.py", 383, 390)
    other_shard = gold.Cited("/c/docs/tempfile.py", 344, 382)
    assert gold.rank_of_answer(q, [elsewhere, after, right], 5) == 3
    assert gold.rank_of_answer(q, [elsewhere, after, other_shard], 5) == 0
    assert gold.rank_of_answer(q, [after, after, right], 2) == 0
    scores = gold.score([q, q], [3, 0])
    assert scores["all"].recall == 0.5
    assert scores["all"].mrr == pytest.approx(1 / 6)
    assert scores["literal"].n == 2 and scores["paraphrased"].n == 0


def test_rg_words_drop_stopwords_and_repeats() -> None:
    q = gold.Labelled("How do I find THE files, the Files?", "commands", (), False)
    assert q.words() == ["find", "files"]


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.skipif(
    not (shutil.which("mandoc") and shutil.which("man") and shutil.which("rg")),
    reason="needs mandoc, man and rg: `make deps-apt`",
)
def test_in_process_run_prints_recall_beside_rg(tmp_path: Path) -> None:
    out = tmp_path / "real.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "realtext.py"), "--in-process", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "recall@5" in proc.stdout and "paraphrased" in proc.stdout, proc.stdout
    doc = json.loads(out.read_text())
    assert sum(t["bytes"] for t in doc["corpus"]) >= 1_500_000
    assert len(doc["corpus"]) >= 4
    assert doc["quality"]["ifmem"]["all"]["n"] + doc["skipped_questions"] >= 60
    assert "rg" in doc["quality"]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_over_the_stdlib_tree_mkdtemp_is_found_at_its_def() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH / "realtext.py"), "--definitions"],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if "where is mkdtemp implemented" in x)
    ours, alone, first = line.split()[-3:]
    assert ours == "1" and first.startswith("tempfile.py:"), proc.stdout
    assert alone != "1"  # bm25 alone ranks the tests first
