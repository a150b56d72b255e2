"""ifmem.toml for model-backed shards: backend defaults, cache and retry keys, [prices]."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from ifmemd.config import ConfigError, ModelPrice, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ifmem.toml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def assert_refused(path: Path, needle: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    lines = path.read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if needle in text)
    assert (info.value.line, info.value.reason) == (line, reason)
    assert str(info.value) == f"{path}:{line}: {reason}"


def test_a_claude_shard_takes_its_defaults_from_anthropic(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [anthropic]
        model = "claude-default"
        base_url = "http://127.0.0.1:9999"
        api_key_file = "keys/claude"
        timeout = 20
        max_retries = 5

        [[shard]]
        name = "docs"
        paths = ["/x"]
        backend = "anthropic"
        cache_ttl = "1h"
        keep_warm = true

        [[shard]]
        name = "code"
        paths = ["/y"]
        backend = "anthropic"
        model = "claude-other"
        timeout = 7.5
        max_retries = 0
        """,
    )
    config = load_config(path)
    docs, code = config.shard("docs"), config.shard("code")
    assert docs is not None and code is not None
    assert (docs.model, docs.base_url, docs.api_key_file) == (
        "claude-default",
        "http://127.0.0.1:9999",
        str(tmp_path / "keys/claude"),
    )
    assert (docs.timeout, docs.max_retries, docs.cache_ttl, docs.keep_warm) == (20.0, 5, "1h", True)
    assert (code.model, code.timeout, code.max_retries) == ("claude-other", 7.5, 0)
    assert (code.cache_ttl, code.keep_warm) == ("5m", False)
    assert docs.uses_model and docs.model_settings()["model"] == "claude-default"
    assert "api_key" not in docs.model_settings()  # a file name, never a key


def test_an_openai_shard_takes_its_defaults_from_openai(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [openai]
        base_url = "http://127.0.0.1:11434/v1"
        model = "llama3"

        [[shard]]
        name = "docs"
        paths = ["/x"]
        backend = "openai"
        """,
    )
    docs = load_config(path).shard("docs")
    assert docs is not None
    assert (docs.base_url, docs.model, docs.api_key_file) == (
        "http://127.0.0.1:11434/v1",
        "llama3",
        None,
    )


def test_a_model_shard_needs_a_model(tmp_path: Path) -> None:
    path = write(tmp_path, '[[shard]]\nname = "docs"\npaths = ["/x"]\nbackend = "anthropic"\n')
    assert_refused(
        path,
        "backend",
        "shard 'docs': backend = \"anthropic\" needs a model: "
        'set model = "…" in this shard or in [anthropic]',
    )


def test_an_openai_shard_needs_a_base_url(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[shard]]\nname = "docs"\npaths = ["/x"]\nbackend = "openai"\nmodel = "m"\n',
    )
    with pytest.raises(
        ConfigError, match=r"needs base_url .* set it in this shard or in \[openai\]"
    ):
        load_config(path)


@pytest.mark.parametrize(
    ("line", "needle", "reason"),
    [
        ('cache_ttl = "10m"', "cache_ttl", 'cache_ttl must be "5m" or "1h", got \'10m\''),
        ("keep_warm = 1", "keep_warm", "keep_warm must be true or false, not an integer"),
        ("timeout = 0", "timeout", "timeout must be a positive number of seconds, got 0"),
        ("max_retries = -1", "max_retries", "max_retries must be at least 0, got -1"),
    ],
)
def test_model_shard_values(tmp_path: Path, line: str, needle: str, reason: str) -> None:
    path = write(
        tmp_path,
        f'[[shard]]\nname = "docs"\npaths = ["/x"]\nbackend = "anthropic"\nmodel = "m"\n{line}\n',
    )
    assert_refused(path, needle, reason)


@pytest.mark.parametrize(
    ("backend", "line", "reason"),
    [
        ("local", "timeout = 3", "shard 'docs': timeout is only used by the anthropic and "
         'openai backends, not by backend = "local"'),
        ("local", "max_retries = 3", "shard 'docs': max_retries is only used by the anthropic "
         'and openai backends, not by backend = "local"'),
        ("local", 'cache_ttl = "1h"', "shard 'docs': cache_ttl is only used by backend = "
         '"anthropic"'),
        ("openai", "keep_warm = true", "shard 'docs': keep_warm is only used by backend = "
         '"anthropic"'),
    ],
)  # fmt: skip
def test_keys_of_other_backends_are_refused(
    tmp_path: Path, backend: str, line: str, reason: str
) -> None:
    path = write(
        tmp_path,
        f'[[shard]]\nname = "docs"\npaths = ["/x"]\nbackend = "{backend}"\nmodel = "m"\n'
        f'base_url = "http://h/v1"\n{line}\n',
    )
    assert_refused(path, line.split(" =")[0], reason)


def test_backend_tables_validate_their_new_keys(tmp_path: Path) -> None:
    assert_refused(
        write(tmp_path, "[anthropic]\ntimeout = -2\n"),
        "timeout",
        "timeout must be a positive number of seconds, got -2",
    )
    assert_refused(
        write(tmp_path, '[openai]\nmax_retries = "3"\n'),
        "max_retries",
        "max_retries must be an integer, not a string",
    )
    assert_refused(
        write(tmp_path, '[anthropic]\nbase_url = "api.anthropic.com"\n'),
        "base_url",
        "base_url must be an http:// or https:// URL, got 'api.anthropic.com'",
    )


def test_prices(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [prices."claude-a"]
        input = 3
        output = 15
        cache_write = 3.75
        cache_read = 0.3

        [prices.llama]
        input = 0
        output = 0

        [prices."claude-b"]
        input = 1.0
        output = 5.0
        """,
    )
    prices = load_config(path).prices
    assert prices == {
        "claude-a": ModelPrice(3.0, 15.0, 3.75, 0.3),
        "llama": ModelPrice(0.0, 0.0, 0.0, 0.0),
        "claude-b": ModelPrice(1.0, 5.0, 1.25, 0.1),
    }


@pytest.mark.parametrize(
    ("text", "needle", "reason"),
    [
        (
            '[prices."m"]\noutput = 15\n',
            '[prices."m"]',
            '[prices."m"]: input is required (US dollars per million tokens)',
        ),
        (
            '[prices."m"]\ninput = -1\noutput = 1\n',
            "input",
            "input must be a number at least 0, got -1",
        ),
        (
            '[prices."m"]\ninput = 1\noutput = "cheap"\n',
            "output",
            "output must be a number (US dollars per million tokens), not a string",
        ),
        (
            '[prices."m"]\ninput = 1\noutput = 1\ncache_wrote = 2\n',
            "cache_wrote",
            "unknown key 'cache_wrote' in [prices.\"m\"] (did you mean 'cache_write'?)",
        ),
        (
            "[prices]\nm = 3\n",
            "m = 3",
            "[prices] entry 'm' must be a table: write [prices.\"m\"] with input, output, "
            "cache_write and cache_read",
        ),
    ],
)
def test_price_values(tmp_path: Path, text: str, needle: str, reason: str) -> None:
    assert_refused(write(tmp_path, text), needle, reason)
