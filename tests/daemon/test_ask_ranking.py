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


MODULE = (
    '"""Generate temporary files and directories."""\n'
    "\n"
    "import os\n"
    "\n"
    "\n"
    "def mkdtemp(suffix=None, prefix=None, dir=None):\n"
    '    """Create and return a unique temporary directory."""\n'
    + "".join(f"    name{i} = _candidate(prefix, suffix, {i})\n" for i in range(25))
    + "    return name0\n"
)
TESTS = "".join(
    f"def test_mkdtemp_{i}():\n    assert mkdtemp()\n    assert mkdtemp(suffix='x')\n\n\n"
    for i in range(12)
)


# Notes that say "throwaway scratch folder" and name it "tempdir", an answer
# that says "tempdir" only, and filler.
NOTES = {
    "a.md": "A throwaway scratch folder for the build: use a tempdir.\n",
    "b.md": "The scratch folder is a tempdir that goes away.\n",
    "c.md": "Put throwaway output in a tempdir, never in the repo.\n",
    "answer.md": "TemporaryDirectory makes a tempdir and removes it on exit.\n",
    **{f"release{i}.md": f"Release notes for version {i} of the tool.\n" for i in range(40)},
}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dp.DaemonProc]:
    root = tmp_path_factory.mktemp("ranking")
    (root / "man").mkdir()
    (root / "man" / "curl.1.txt").write_text(MAN_PAGE)
    (root / "lib" / "test").mkdir(parents=True)
    (root / "lib" / "tempfile.py").write_text(MODULE)
    (root / "lib" / "test" / "test_tempfile.py").write_text(TESTS)
    (root / "notes").mkdir()
    for name, text in NOTES.items():
        (root / "notes" / name).write_text(text)
    shards = {
        "man": [str(root / "man" / "*.txt")],
        "lib": [str(root / "lib")],
        "notes": [str(root / "notes")],
    }
    with dp.factory(root) as made:
        yield made(dp.config_text(shards))


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


def test_a_definition_is_cited_before_its_tests(daemon: dp.DaemonProc) -> None:
    with daemon.client() as client:
        reply = client.request("ask", question="Where is mkdtemp implemented?", k=3)
    top, *rest = reply["passages"]
    assert top["path"].endswith("/lib/tempfile.py")
    assert top["citation"] == f"{top['path']}:6-6"  # the def line
    assert all(p["path"].endswith("/test/test_tempfile.py") for p in rest)


def test_a_question_in_other_words_finds_the_answer_through_its_neighbours(
    daemon: dp.DaemonProc,
) -> None:
    with daemon.client() as client:
        reply = client.request(
            "ask",
            question="where do I get a throwaway scratch folder that deletes itself",
            k=4,
            shards=["notes"],
        )
    assert any(p["path"].endswith("/notes/answer.md") for p in reply["passages"])
