"""SIGKILL the real daemon under load, restart it on the same log, and hold it to its word.

What a client was told must be in the log; what was asked and never answered
must be marked abandoned on restart; a client retrying with the same request
id gets exactly one answer; working memory is rebuilt from the log.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import daemonproc as dp
import pytest
from ifmem.main import app
from ifmemd.errors import IfmemError
from ifmemd.log.verify import verify_log
from ifmemd.wire.protocol import Client
from typer.testing import CliRunner

CLIENTS = 20
QUESTIONS = ["lighthouse beacon", "valve opened", "pump water", "glacier ice", "quick fox"]


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[dp.DaemonFactory]:
    with dp.factory(tmp_path) as made:
        yield made


class Asker(threading.Thread):
    """One client asking in a loop with its own request ids until the daemon dies."""

    def __init__(self, socket: Path, n: int, shards: list[str] | None) -> None:
        super().__init__(name=f"asker-{n}")
        self.socket = socket
        self.n = n
        self.shards = shards
        self.questions: dict[str, str] = {}  # every id sent -> its question
        self.answers: dict[str, dict] = {}  # every answer received, by id
        self.ended_by: BaseException | None = None

    def run(self) -> None:
        i = 0
        try:
            with Client(self.socket, timeout=20.0) as client:
                while True:
                    rid = f"c{self.n}-q{i}"
                    question = QUESTIONS[(self.n + i) % len(QUESTIONS)]
                    self.questions[rid] = question
                    args = {"shards": self.shards} if self.shards else {}
                    self.answers[rid] = client.request(
                        "ask", request_id=rid, question=question, **args
                    )
                    i += 1
        except IfmemError as e:  # the daemon was killed under us
            self.ended_by = e


def by_qid(events: list[tuple[int, str, dict]], kind: str) -> dict[str, list[tuple[int, dict]]]:
    out: dict[str, list[tuple[int, dict]]] = {}
    for seq, k, body in events:
        if k == kind:
            out.setdefault(body["qid"], []).append((seq, body))
    return out


def test_sigkill_under_load_loses_no_answer_and_retries_get_exactly_one(
    daemons: dp.DaemonFactory,
) -> None:
    d = daemons()
    # Half the clients ask every shard, half only `code`: when `docs` is stopped
    # below, the first half hang with their questions received but unanswered,
    # while the second half keep committing answers until the very moment of the kill.
    askers = [Asker(d.socket_path, n, None if n % 2 == 0 else ["code"]) for n in range(CLIENTS)]
    for a in askers:
        a.start()
    dp.wait_for(
        lambda: sum(len(a.answers) for a in askers) >= 200, 20.0, "200 answers", d.diagnostics
    )
    os.kill(d.shard_pids()["docs"], signal.SIGSTOP)
    time.sleep(0.3)
    d.kill9()
    for a in askers:
        a.join(10)
        assert not a.is_alive()
        assert a.ended_by is not None, "a client saw no error from a killed daemon"

    # Restart on the same log: recovery runs before the socket answers.
    d.start()
    report = verify_log(d.db_path)
    assert report.ok, report.failure
    events = d.events()
    second_start = [seq for seq, k, _ in events if k == "daemon.started"][1]
    before = [e for e in events if e[0] < second_start]
    received = by_qid(before, "query.received")
    answered = by_qid(before, "query.answered")
    abandoned = by_qid(events, "query.abandoned")

    # Every answer a client received is in the log, exactly as it was given.
    told = {rid: ans for a in askers for rid, ans in a.answers.items()}
    assert len(told) >= 200
    for rid, answer in told.items():
        assert len(answered[rid]) == 1, rid
        seq, body = answered[rid][0]
        assert answer["seq"] == seq
        assert answer["replayed"] is False
        assert body["passages"] == answer["passages"]
        assert body["question"] == answer["question"]
        assert body["missing"] == answer["missing"]

    # Every question received and not answered before the crash is now abandoned,
    # by the restarted daemon before it said it had started.
    unanswered = set(received) - set(answered)
    assert len(unanswered) >= CLIENTS // 2 - 2, "docs was stopped: most all-shard askers hang"
    assert set(abandoned) == unanswered
    for qid in unanswered:
        [(seq, _)] = abandoned[qid]
        assert seq < second_start
    after_recovery = d.request("status")["log"]["seq"]

    # Clients resend every id they sent but got no answer for: one answer each.
    lost = {rid: q for a in askers for rid, q in a.questions.items() if rid not in a.answers}
    assert len(lost) == CLIENTS
    assert unanswered <= set(lost), "an unanswered question was never sent?"
    retried: dict[str, dict] = {}
    with d.client() as client:
        for rid, question in lost.items():
            shards = None if int(rid.split("-")[0][1:]) % 2 == 0 else ["code"]
            args = {"shards": shards} if shards else {}
            retried[rid] = client.request("ask", request_id=rid, question=question, **args)
            # And a second retry (its answer was lost too, say) gets the same one back.
            again = client.request("ask", request_id=rid, question=question, **args)
            assert again["replayed"] is True
            assert again["seq"] == retried[rid]["seq"]
            assert again["passages"] == retried[rid]["passages"]
    events = d.events()
    answers_per_qid = Counter(body["qid"] for _, k, body in events if k == "query.answered")
    for rid, answer in retried.items():
        assert answers_per_qid[rid] == 1, rid
        assert answer["missing"] == [], rid
        # Every question matches something in docs or code.
        assert answer["passages"] or answer["shards"] == ["code"], rid
        # Answered afresh unless the answer had been committed before the crash.
        assert answer["replayed"] is (rid in answered)
        if rid in unanswered:
            assert answer["seq"] > after_recovery

    # Resending ids that were answered returns the recorded answers and appends none.
    count = len(events)
    sample = list(told.items())[:: max(1, len(told) // 25)]
    with d.client() as client:
        for rid, answer in sample:
            again = client.request(
                "ask",
                request_id=rid,
                question=answer["question"],
                **({"shards": answer["shards"]} if answer["shards"] == ["code"] else {}),
            )
            assert again["replayed"] is True
            assert again["seq"] == answer["seq"]
            assert again["passages"] == answer["passages"]
    after = d.events()
    assert Counter(k for _, k, _ in after[count:])["query.answered"] == 0
    assert Counter(k for _, k, _ in after[count:])["query.received"] == 0
    d.stop()
    assert verify_log(d.db_path).ok


def memory_hits(d: dp.DaemonProc, question: str) -> list[str]:
    answer = d.request("ask", question=question, shards=["working"])
    assert answer["missing"] == []
    return [p["path"] for p in answer["passages"]]


def test_working_memory_survives_sigkill(daemons: dp.DaemonFactory) -> None:
    d = daemons()
    texts = {
        "zebra": "the wifi password is written under the zebra poster",
        "orange": "parking spot is on level three near the orange pillar",
        "kiwi": "dentist appointment moved to tuesday after the kiwi tasting",
    }
    ids = {word: d.request("remember", text=text)["memory_id"] for word, text in texts.items()}
    assert len(set(ids.values())) == 3
    d.request("forget", memory_id=ids["kiwi"])
    assert memory_hits(d, "kiwi tasting") == []

    d.kill9()
    d.start()

    assert d.status()["memories"] == 2
    assert memory_hits(d, "zebra poster") == [f"memory:{ids['zebra']}"]
    assert memory_hits(d, "orange pillar parking") == [f"memory:{ids['orange']}"]
    assert memory_hits(d, "kiwi tasting dentist") == []

    # The auditor's replay of the log agrees, with the daemon stopped.
    d.stop()
    result = CliRunner().invoke(app, ["replay", "--db", str(d.db_path), "--json"])
    assert result.exit_code == 0, result.output
    memories = {m["memory_id"]: m["text"] for m in json.loads(result.stdout)["memories"]}
    assert memories == {ids["zebra"]: texts["zebra"], ids["orange"]: texts["orange"]}
