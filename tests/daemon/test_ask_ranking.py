"""What a real daemon answers over real-looking text: narrow citations,
definitions before their uses and tests, and questions in other words.

One daemon over a small tree of a man page, a module and its tests; each test
asks it through the socket, as `ifmem ask` does.
"""

from __future__ import annotations

from collections.abc import Iterator

import daemonproc as dp
import pytest

MAN_PAGE = (
    "CURL(1)                    curl Manual                    CURL(1)\n"
    "\n"
    "NAME\n"
    "       curl \u2010 transfer a URL\n"
    "\n"
    "OPTIONS\n"
    "       \u2010\u2010retry <num>\n"
    "              If a transient error is returned when curl tries to perform a\n"
    "              transfer, it will retry this number of times before giving up.\n"
    "              Setting the number to 0 makes curl do no retries (which is the\n"
    "              default).\n"
    "\n"
    "              When curl is about to retry a transfer, it will first wait one\n"
    "              second and then for all forthcoming retries it will double the\n"
    "              waiting time until it reaches 10 minutes.\n"
    "\n"
    "       \u2010\u2010silent\n"
    "              Silent or quiet mode. Do not show progress meter or error messages.\n"
)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dp.DaemonProc]:
    root = tmp_path_factory.mktemp("ranking")
    (root / "man").mkdir()
    (root / "man" / "curl.1.txt").write_text(MAN_PAGE)
    with dp.factory(root) as made:
        yield made(dp.config_text({"man": [str(root / "man" / "*.txt")]}))


def test_an_answer_cites_the_lines_holding_the_words_and_names_the_passage(
    daemon: dp.DaemonProc,
) -> None:
    with daemon.client() as client:
        reply = client.request("ask", question="double the waiting time", k=1)
    [top] = reply["passages"]
    assert top["path"].endswith("curl.1.txt")
    # The passage is the options section; the citation, the two lines holding the words.
    assert (top["passage_start_line"], top["passage_end_line"]) == (6, 18)
    assert (top["start_line"], top["end_line"]) == (14, 15)
    assert top["citation"] == f"{top['path']}:14-15"
