"""Claude shards end to end: a real daemon, real shard processes, the real `anthropic` SDK,
talking to the fake Messages API on 127.0.0.1 (tests/fake_anthropic.py).

One daemon serves the whole module (the SDK takes seconds to import in each
shard process); tests run in file order and each leaves the fake as it found it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import daemonproc as dp
import pytest
from fake_anthropic import FakeAnthropic
from ifmem.main import app
from typer.testing import CliRunner

KEY = "sk-ant-test-" + "Zq7xW3" * 6
MODEL = "claude-fake-1"
START_TIMEOUT_S = 60.0

DOCS = {
    "beacon.md": "# Beacon\n\nA lighthouse beacon guides ships through the fog.\n"
    "Keepers trim the wick every evening.\n",
    "glacier.md": "# Glacier\n\nGlacier ice moves slowly down the valley.\n"
    "Meltwater feeds the river in summer.\n",
}
NOTES = {"harbour.md": "# Harbour\n\nShips wait in the harbour when the fog is thick.\n"}
OPS = {"runbook.md": "# Runbook\n\nRestart the fog horn when ships report silence.\n"}
CODE = {"pump.py": "def pump_water(litres):\n    return litres * 2\n"}


def _write(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def _shard(name: str, glob: Path, **keys: Any) -> str:
    lines = ["", "[[shard]]", f'name = "{name}"', f'paths = ["{glob}"]']
    lines += [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=KEY) as server:
        yield server


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, fake: FakeAnthropic) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("llm")
    dirs = {
        "docs": _write(root / "docs", DOCS),
        "notes": _write(root / "notes", NOTES),
        "ops": _write(root / "ops", OPS),
        "code": _write(root / "code", CODE),
    }
    key_file = root / "anthropic.key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    leaky = root / "leaky.key"
    leaky.write_text(KEY + "\n")
    leaky.chmod(0o644)
    config = (
        "[daemon]\nheartbeat_interval = 0.5\nheartbeat_timeout = 20\nask_timeout = 10\n\n"
        f'[anthropic]\nmodel = "{MODEL}"\nbase_url = "{fake.url}"\n'
        f'api_key_file = "{key_file}"\ntimeout = 5\nmax_retries = 2\n\n'
        "[coordinator]\nroute_top_n = 2\n\n"
        f'[prices."{MODEL}"]\ninput = 3.0\noutput = 15.0\n'
        + _shard("docs", dirs["docs"] / "*.md", backend="anthropic", description="Field notes")
        + _shard("notes", dirs["notes"] / "*.md", backend="anthropic")
        + _shard("ops", dirs["ops"] / "*.md", backend="anthropic")
        + _shard("code", dirs["code"] / "*.py")
        + _shard("leaky", dirs["notes"] / "*.md", backend="anthropic", api_key_file=str(leaky))
        + _shard("huge", dirs["docs"] / "*.md", backend="anthropic", max_tokens=10)
    )
    saved = os.environ.pop("ANTHROPIC_API_KEY", None)  # the key comes from the 0600 file
    made = dp.DaemonFactory(root)
    try:
        daemon = made(config, start=False)
        daemon.start(wait=False)
        dp.wait_for(
            lambda: settled(daemon),
            START_TIMEOUT_S,
            "every shard (and model) ready, or failed",
            daemon.diagnostics,
        )
        yield {"daemon": daemon, "dirs": dirs, "root": root}
    finally:
        made.close()
        if saved is not None:
            os.environ["ANTHROPIC_API_KEY"] = saved


def settled(daemon: dp.DaemonProc) -> bool:
    """Every shard failed, or ready with its model (an over-budget one is ready on its
    index until its model's count fails it)."""
    return all(
        s["status"] == "failed"
        or (s["status"] == "ready" and s.get("model_status", "ready") == "ready")
        for s in (daemon._try_status() or {}).get("shards", [{"status": "starting"}])
    )


def _answered(daemon: dp.DaemonProc, qid: str) -> dict[str, dict[str, Any]]:
    return daemon.shard_results(qid)


def _digest(path: str) -> str:
    return hashlib.blake2b(Path(path).read_bytes(), digest_size=32).hexdigest()


def _logged_digests(daemon: dp.DaemonProc, qid: str) -> list[str]:
    """The digests of the passages `query.answered` records for `qid`."""
    [body] = [b for _, _, b in daemon.events("query.answered") if b["qid"] == qid]
    return [p["digest"] for p in body["passages"]]


def test_model_shards_are_ready_and_count_their_corpus(world: dict) -> None:
    status = world["daemon"].status()
    shards = {s["name"]: s for s in status["shards"]}
    for name in ("docs", "notes", "ops", "code"):
        assert shards[name]["status"] == "ready", shards[name]
    assert shards["docs"]["model"] == MODEL and shards["docs"]["model_status"] == "ready"
    ready = [b for _, _, b in world["daemon"].events("shard.model_ready") if b["shard"] == "docs"]
    assert ready[-1]["token_source"] == "api" and ready[-1]["tokens"] > 0
    assert shards["docs"]["tokens"] == ready[-1]["tokens"]


def test_an_answer_cites_the_exact_lines(world: dict, fake: FakeAnthropic) -> None:
    daemon = world["daemon"]
    result = daemon.request(
        "ask", request_id="q-wick", question="who trims the wick", shards=["docs"]
    )
    [answer] = result["answers"]
    assert answer["verified"] is True
    beacon = str(world["dirs"]["docs"] / "beacon.md")
    assert [c["citation"] for c in answer["citations"]] == [f"{beacon}:4-4"]
    assert "[1]" in answer["text"]
    assert result["passages"][0]["citation"] == f"{beacon}:4-4"
    request = fake.messages()[-1]
    # One document per chunk, titled with its citation, the last one cached.
    assert all(d["citations"] == {"enabled": True} for d in request.documents)
    assert request.documents[-1]["cache_control"]["type"] == "ephemeral"
    assert {d["title"] for d in request.documents} >= {f"{beacon}:1-4"}
    body = _answered(daemon, "q-wick")["docs"]
    assert body["mode"] == "model" and body["model"] == MODEL
    assert body["usage"]["cache_creation_input_tokens"] > 0 and body["verified"] is True
    assert body["citations"][0]["citation"] == f"{beacon}:4-4"
    # Each citation names the version of the file the model was given, in reply and log.
    version = _digest(beacon)
    assert answer["citations"][0]["digest"] == version
    assert result["passages"][0]["digest"] == version
    assert body["citations"][0]["digest"] == version
    assert _logged_digests(daemon, "q-wick") == [version]


def test_the_second_question_reads_the_corpus_from_the_cache(world: dict) -> None:
    daemon = world["daemon"]
    daemon.request("ask", request_id="q-ice", question="how does glacier ice move", shards=["docs"])
    body = _answered(daemon, "q-ice")["docs"]
    assert body["usage"]["cache_read_input_tokens"] > 0
    assert body["usage"]["cache_creation_input_tokens"] == 0


def test_an_edited_corpus_is_cached_afresh_after_reload(world: dict) -> None:
    daemon = world["daemon"]
    readies = len(daemon.events("shard.ready"))
    models = len(daemon.events("shard.model_ready"))
    failed = len(daemon.events("shard.failed"))
    (world["dirs"]["docs"] / "glacier.md").write_text(
        DOCS["glacier.md"] + "Crevasses open where the ice bends.\n"
    )
    daemon.request("reload")
    dp.wait_for(
        lambda: (
            len(daemon.events("shard.ready")) >= readies + 4  # docs notes ops code
            and len(daemon.events("shard.model_ready")) >= models + 3  # and their models
            and len(daemon.events("shard.failed")) >= failed + 2  # leaky, huge: failed again
            and settled(daemon)
        ),
        20,
        "the shards to reload",
        daemon.diagnostics,
    )
    daemon.request(
        "ask", request_id="q-crevasse", question="where do crevasses open", shards=["docs"]
    )
    body = _answered(daemon, "q-crevasse")["docs"]
    assert body["usage"]["cache_creation_input_tokens"] > 0
    assert body["usage"]["cache_read_input_tokens"] == 0
    glacier = str(world["dirs"]["docs"] / "glacier.md")
    assert body["citations"][0]["citation"] == f"{glacier}:5-5"
    assert body["citations"][0]["digest"] == _digest(glacier)  # the edited version
    assert _logged_digests(daemon, "q-crevasse") == [_digest(glacier)]


def test_a_citation_that_maps_to_nothing_is_flagged_unverified(
    world: dict, fake: FakeAnthropic
) -> None:
    fake.citation_mode = "bogus"
    try:
        result = world["daemon"].request(
            "ask", request_id="q-bogus", question="ships in the harbour", shards=["notes"]
        )
    finally:
        fake.citation_mode = "valid"
    [answer] = result["answers"]
    assert answer["verified"] is False
    assert answer["citations"] == []
    assert "not one of the" in answer["unverified"][0]["reason"]
    assert "[?]" in answer["text"]
    assert result["passages"] == []  # nothing is passed off as cited
    assert _answered(world["daemon"], "q-bogus")["notes"]["verified"] is False


def test_routing_calls_the_model_on_route_top_n_shards_only(
    world: dict, fake: FakeAnthropic
) -> None:
    before = len(fake.messages(None))
    # "fog" and "ships" are in docs, notes and ops alike: three candidates, two calls.
    result = world["daemon"].request("ask", request_id="q-route", question="fog ships")
    assert len(fake.messages(None)) - before == 2
    bodies = _answered(world["daemon"], "q-route")
    modes = {name: b.get("mode") for name, b in bodies.items()}
    assert sorted(m for m in modes.values() if m) == ["fts", "model", "model"]
    assert "mode" not in bodies["code"]  # local shards are searched as ever
    assert len(result["answers"]) == 2


def test_a_429_storm_is_retried_then_the_shard_is_named_missing(
    world: dict, fake: FakeAnthropic
) -> None:
    fake.fail_next(429, times=50, retry_after=0)
    before = len(fake.messages(None))
    try:
        result = world["daemon"].request(
            "ask", request_id="q-storm", question="glacier ice", shards=["docs", "code"]
        )
    finally:
        fake.failures.clear()
    assert len(fake.messages(None)) - before == 3  # max_retries = 2
    [missing] = result["missing"]
    assert missing["shard"] == "docs"
    assert "429" in missing["reason"] and "after 3 attempts" in missing["reason"]
    assert result["shards"] == ["code"]
    # And once the API is back, the same shard answers again.
    again = world["daemon"].request("ask", question="glacier ice", shards=["docs"])
    assert again["missing"] == [] and again["answers"][0]["verified"]


def test_a_key_file_others_can_read_fails_its_shard(world: dict) -> None:
    leaky = world["daemon"].shard("leaky")
    assert leaky["status"] == "failed"
    assert "too open" in leaky["failure"] and "chmod 600" in leaky["failure"]
    reasons = [b["reason"] for _, _, b in world["daemon"].events("shard.failed")]
    assert any("leaky.key" in r and "too open" in r for r in reasons)


def test_a_corpus_over_its_budget_is_refused_with_its_size(world: dict) -> None:
    huge = world["daemon"].shard("huge")
    assert huge["status"] == "failed"
    assert "over its budget of 10" in huge["failure"]
    assert "Split it into" in huge["failure"]


def test_stats_totals_match_the_recorded_tokens(world: dict) -> None:
    daemon = world["daemon"]
    results = [r for _, _, b in daemon.events("query.answered") for r in b["results"]]
    recorded = {
        f: sum(r.get("usage", {}).get(f, 0) for r in results)
        for f in (
            "input_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "output_tokens",
        )
    }
    calls = sum(1 for r in results if r.get("mode") == "model")
    result = CliRunner().invoke(
        app,
        ["stats", "--json", "--db", str(daemon.db_path), "--config", str(daemon.config_path)],
    )
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    total = stats["total"]
    assert {f: total[f] for f in recorded} == recorded
    assert total["calls"] == calls and total["routed_out"] >= 1
    assert stats["unpriced"] == []
    assert 0 < total["cost_usd"] < total["uncached_usd"]
    docs = next(r for r in stats["shards"] if r["shard"] == "docs")
    assert docs["saved_usd"] > 0
    text = CliRunner().invoke(
        app, ["stats", "--db", str(daemon.db_path), "--config", str(daemon.config_path)]
    )
    assert text.exit_code == 0 and "TOTAL" in text.stdout and "docs" in text.stdout


def test_the_key_never_appears_in_the_log_stderr_or_status(
    world: dict, fake: FakeAnthropic
) -> None:
    daemon = world["daemon"]
    assert any(c.api_key == KEY for c in fake.messages())  # it was used…
    status = json.dumps(daemon.status())
    assert KEY not in status
    assert KEY not in daemon.stderr()
    for path in daemon.db_path.parent.iterdir():  # events.db, -wal, -shm
        assert KEY.encode() not in path.read_bytes(), path
    log = CliRunner().invoke(app, ["log", "--json", "--db", str(daemon.db_path)])
    assert log.exit_code == 0 and KEY not in log.stdout
