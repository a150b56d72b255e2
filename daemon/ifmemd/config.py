"""The `ifmem.toml` config: where it lives, what it may say, and what it means.

`load_config` reads the file into frozen dataclasses, so a reload can compare
the old and new `ShardConfig` of each shard and restart only the ones that
changed (`Config.diff_shards`). Everything that is not understood is refused:
unknown sections, unknown keys, wrong types, values out of range. Every refusal
is a `ConfigError` naming the file, the line of the offending key (found by
scanning the TOML text, since tomllib does not report positions of values) and
the reason, so the daemon can refuse to start, or keep running the old config on
a failed reload, with a message the user can act on.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple, NoReturn

import pathspec
import platformdirs

from ifmemd.errors import IfmemError
from ifmemd.shards import semantic as ranking

CONFIG_ENV: Final = "IFMEM_CONFIG"
APP_NAME: Final = "ifmem"
CONFIG_FILENAME: Final = "ifmem.toml"

WORKING_SHARD: Final = "working"
SHARD_NAME_RE: Final = re.compile(r"[a-z][a-z0-9_-]{0,31}")
SHARD_KINDS: Final = ("files", "memory")
BACKENDS: Final = ("local", "anthropic", "openai")
MODEL_BACKENDS: Final = ("anthropic", "openai")
CACHE_TTLS: Final = ("5m", "1h")
DEFAULT_MAX_FILE_BYTES: Final = 8 * 1024 * 1024
DEFAULT_MODEL_TIMEOUT: Final = 60.0
DEFAULT_MODEL_RETRIES: Final = 3

# "remote" is never written: a shard with `remote = "ssh://…"` is one.
ShardKind = Literal["files", "memory", "remote"]
Backend = Literal["local", "anthropic", "openai"]

# Every key each section accepts; the docs test checks each is documented.
DAEMON_KEYS: Final = (
    "heartbeat_interval",
    "heartbeat_timeout",
    "restart_intensity",
    "checkpoint_every",
    "ask_timeout",
    "max_clients",
)
SHARD_KEYS: Final = (
    "name",
    "description",
    "kind",
    "paths",
    "exclude",
    "respect_gitignore",
    "watch",
    "backend",
    "max_file_bytes",
    "semantic",
    "model",
    "max_tokens",
    "base_url",
    "api_key_file",
    "cache_ttl",
    "keep_warm",
    "timeout",
    "max_retries",
    "remote",
    "ssh_options",
    "remote_shards",
)
# All a remote shard may say: the rest is the remote's own config's business.
REMOTE_SHARD_KEYS: Final = ("name", "description", "remote", "ssh_options", "remote_shards")
# What ssh is given as a host and a user, and never as an option (a leading "-").
_SSH_HOST_RE: Final = re.compile(r"[A-Za-z0-9_.:%][A-Za-z0-9_.:%-]*")
_SSH_USER_RE: Final = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*")
COORDINATOR_KEYS: Final = ("route_top_n", "synthesize", "route_min_coverage_ratio")
LOG_KEYS: Final = ("segment_events", "segment_age", "compress")
COMPRESSIONS: Final = ("zstd", "none")
ANTHROPIC_KEYS: Final = ("model", "base_url", "api_key_file", "timeout", "max_retries")
OPENAI_KEYS: Final = ("base_url", "model", "api_key_file", "timeout", "max_retries")
# The keys of each `[prices."MODEL"]` table: USD per million tokens.
PRICE_KEYS: Final = ("input", "output", "cache_write", "cache_read")
CONFIG_KEYS: Final = {
    "daemon": DAEMON_KEYS,
    "shard": SHARD_KEYS,
    "coordinator": COORDINATOR_KEYS,
    "log": LOG_KEYS,
    "anthropic": ANTHROPIC_KEYS,
    "openai": OPENAI_KEYS,
    "prices": PRICE_KEYS,
}


class ConfigError(IfmemError):
    """Raised when the config file cannot be read or does not hold a valid ifmem config."""

    def __init__(
        self, path: Path | str, line: int | None, reason: str, column: int | None = None
    ) -> None:
        self.path = Path(path)
        self.line = line
        self.column = column
        self.reason = reason
        where = str(path)
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        super().__init__(f"{where}: {reason}")


class MissingSettingError(ConfigError):
    """Raised when a model-backed shard lacks a setting it cannot run without (model, base_url)."""

    def __init__(
        self, path: Path | str, line: int | None, reason: str, *, shard: str, backend: str, key: str
    ) -> None:
        self.shard = shard
        self.backend = backend
        self.key = key
        super().__init__(path, line, reason)


class RestartIntensity(NamedTuple):
    """More than `max_restarts` restarts within `window_seconds`: the shard has failed."""

    max_restarts: int
    window_seconds: float


_DEFAULT_RESTART_INTENSITY: Final = RestartIntensity(5, 60.0)


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """The `[daemon]` section: supervision and serving limits."""

    heartbeat_interval: float = 10.0
    heartbeat_timeout: float = 30.0
    restart_intensity: RestartIntensity = _DEFAULT_RESTART_INTENSITY
    checkpoint_every: int = 1000
    ask_timeout: float = 10.0
    max_clients: int = 256


@dataclass(frozen=True, slots=True)
class RemoteTarget:
    """Where a remote shard's ifmemd is: `ssh://[user@]host[:port]`, checked."""

    url: str
    host: str
    user: str | None = None
    port: int | None = None

    def ssh_args(self) -> list[str]:
        """The destination as ssh's arguments, after every option and a `--`."""
        port = ["-p", str(self.port)] if self.port is not None else []
        return [*port, "--", f"{self.user}@{self.host}" if self.user else self.host]


def parse_ssh_url(url: str) -> RemoteTarget:
    """`ssh://[user@]host[:port]` as a `RemoteTarget`; ValueError says what is wrong."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "ssh":
        raise ValueError("it must start with ssh://")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("it may hold only user, host and port, no path or query")
    if parts.password is not None:
        raise ValueError("it must not hold a password (ssh uses keys; BatchMode is on)")
    host = parts.hostname or ""
    if not _SSH_HOST_RE.fullmatch(host):
        raise ValueError(f"host {host!r} is not a host name or address")
    user = parts.username
    if user is not None and not _SSH_USER_RE.fullmatch(user):
        raise ValueError(f"user {user!r} is not a user name")
    port = parts.port  # raises ValueError when out of range
    return RemoteTarget(url, host, user, port)


@dataclass(frozen=True, slots=True)
class ShardConfig:
    """One `[[shard]]`: a memory shard the daemon keeps alive as a child process.

    `paths` are glob patterns with `~` expanded and relative patterns made
    absolute against the config file's directory.
    """

    name: str
    kind: ShardKind = "files"
    description: str = ""
    paths: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()  # gitignore-style patterns, relative to each path's root
    respect_gitignore: bool = True
    watch: bool = True
    backend: Backend = "local"
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    semantic: bool = False  # rank by meaning too (ifmemd.shards.semantic)
    model: str | None = None
    max_tokens: int = 180_000
    base_url: str | None = None
    api_key_file: str | None = None
    cache_ttl: str = "5m"
    keep_warm: bool = False
    timeout: float = DEFAULT_MODEL_TIMEOUT
    max_retries: int = DEFAULT_MODEL_RETRIES
    remote: RemoteTarget | None = None
    ssh_options: tuple[str, ...] = ()
    remote_shards: tuple[str, ...] = ()

    @property
    def uses_model(self) -> bool:
        """Whether questions to this shard may call a language model (and cost money)."""
        return self.backend in MODEL_BACKENDS

    def model_settings(self) -> dict[str, Any]:
        """What a model-backed shard process needs to call its model (never the key itself)."""
        return {
            "backend": self.backend,
            "model": self.model,
            "max_tokens": self.max_tokens,
            "base_url": self.base_url,
            "api_key_file": self.api_key_file,
            "cache_ttl": self.cache_ttl,
            "keep_warm": self.keep_warm,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
        }


WORKING_SHARD_DEFAULT: Final = ShardConfig(
    name=WORKING_SHARD,
    kind="memory",
    description="Working memory: notes kept with `ifmem remember`",
)


@dataclass(frozen=True, slots=True)
class CoordinatorConfig:
    """The `[coordinator]` section: how questions are routed to shards."""

    route_top_n: int = 2
    synthesize: bool = False
    # A model-backed shard whose best passage covers less than this share of what
    # the best shard's covers answers from its index: its model call would be waste.
    route_min_coverage_ratio: float = 0.5


@dataclass(frozen=True, slots=True)
class LogConfig:
    """The `[log]` section: when the live log file is sealed into a segment, and how kept."""

    segment_events: int = 1_000_000
    segment_age: float = 30 * 86400.0  # seconds
    compress: Literal["zstd", "none"] = "zstd"


@dataclass(frozen=True, slots=True)
class AnthropicConfig:
    """The `[anthropic]` section: defaults for shards with `backend = "anthropic"`."""

    model: str | None = None
    base_url: str | None = None
    api_key_file: str | None = None
    timeout: float = DEFAULT_MODEL_TIMEOUT
    max_retries: int = DEFAULT_MODEL_RETRIES


@dataclass(frozen=True, slots=True)
class OpenAIConfig:
    """The `[openai]` section: defaults for shards with `backend = "openai"`."""

    base_url: str | None = None
    model: str | None = None
    api_key_file: str | None = None
    timeout: float = DEFAULT_MODEL_TIMEOUT
    max_retries: int = DEFAULT_MODEL_RETRIES


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """One `[prices."MODEL"]` table: US dollars per million tokens of each kind."""

    input: float
    output: float
    cache_write: float
    cache_read: float


class ShardChanges(NamedTuple):
    """Which shards a reload has to start, stop or restart, by name."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    unchanged: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Config:
    """A whole, validated ifmem config; `source` is the file it came from, None for defaults."""

    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    shards: tuple[ShardConfig, ...] = (WORKING_SHARD_DEFAULT,)
    source: Path | None = None
    coordinator: CoordinatorConfig = field(default_factory=CoordinatorConfig)
    anthropic: AnthropicConfig = field(default_factory=AnthropicConfig)
    openai: OpenAIConfig = field(default_factory=OpenAIConfig)
    prices: dict[str, ModelPrice] = field(default_factory=dict)
    log: LogConfig = field(default_factory=LogConfig)

    @property
    def shard_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.shards)

    def shard(self, name: str) -> ShardConfig | None:
        """The shard called `name`, or None."""
        return next((s for s in self.shards if s.name == name), None)

    def diff_shards(self, new: Config) -> ShardChanges:
        """Compare this (running) config's shards with `new`'s, for a reload."""
        old_by_name = {s.name: s for s in self.shards}
        new_by_name = {s.name: s for s in new.shards}
        return ShardChanges(
            added=tuple(n for n in new_by_name if n not in old_by_name),
            removed=tuple(n for n in old_by_name if n not in new_by_name),
            changed=tuple(
                n for n, s in new_by_name.items() if n in old_by_name and old_by_name[n] != s
            ),
            unchanged=tuple(
                n for n, s in new_by_name.items() if n in old_by_name and old_by_name[n] == s
            ),
        )


# --- where the config lives --------------------------------------------------


def default_config_path() -> Path:
    """The config file to read: `$IFMEM_CONFIG` if set, else the platform's user config dir."""
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser()
    return platformdirs.user_config_path(APP_NAME) / CONFIG_FILENAME


def load_config(path: Path | str | None = None) -> Config:
    """Read and validate the config, or raise `ConfigError`.

    With no `path` and no `$IFMEM_CONFIG`, a missing default file means the
    defaults (only the working-memory shard). A file the user named, by
    argument or by `$IFMEM_CONFIG`, must exist.
    """
    explicit = path is not None or bool(os.environ.get(CONFIG_ENV))
    resolved = Path(path).expanduser() if path is not None else default_config_path()
    try:
        data = resolved.read_bytes()
    except FileNotFoundError as e:
        if not explicit:
            return Config()
        raise ConfigError(resolved, None, "read config: no such file") from e
    except OSError as e:
        raise ConfigError(resolved, None, f"read config: {e.strerror or e}") from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(resolved, line, "not valid UTF-8") from e
    return parse_config(text, resolved)


_TOML_POSITION: Final = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_TOML_AT_END: Final = re.compile(r"\s*\(at end of document\)$")


def parse_config(text: str, path: Path | str) -> Config:
    """Validate config `text`, read from `path` (used in messages and to resolve relative paths)."""
    path = Path(path)
    try:
        raw = tomllib.loads(text)
    except RecursionError as e:
        # Arrays or tables nested thousands deep: tomllib recurses once a level.
        raise ConfigError(path, None, "invalid TOML: nested too deeply") from e
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        line = column = None
        if m := _TOML_POSITION.search(message):
            line, column = int(m[1]), int(m[2])
            message = message[: m.start()]
        elif m := _TOML_AT_END.search(message):
            line = max(1, len(text.splitlines()))
            message = message[: m.start()]
        raise ConfigError(path, line, f"invalid TOML: {message}", column) from e
    return _Parser(path, text).config(raw)


# --- finding the line of a key -----------------------------------------------

_SEG: Final = r"""(?:[A-Za-z0-9_-]+|"[^"\n]*"|'[^'\n]*')"""
_KEYPATH: Final = rf"{_SEG}(?:\s*\.\s*{_SEG})*"
_ARRAY_HEADER: Final = re.compile(rf"\s*\[\[\s*({_KEYPATH})\s*\]\]")
_TABLE_HEADER: Final = re.compile(rf"\s*\[\s*({_KEYPATH})\s*\]")
_KEY_LINE: Final = re.compile(rf"\s*({_KEYPATH})\s*=")
_SEG_RE: Final = re.compile(_SEG)

Loc = tuple[str | int, ...]


def _split_key(keypath: str) -> tuple[str, ...]:
    return tuple(seg[1:-1] if seg[0] in "\"'" else seg for seg in _SEG_RE.findall(keypath))


def _index_lines(text: str) -> dict[Loc, int]:
    """Map each table and key of a TOML document to the line that first names it.

    A location is the path to the value in the parsed data, with the position
    in an array of tables as an int: `("shard", 1, "paths")`. This is a line
    scanner, not a parser: it runs only on text tomllib has accepted, and a
    location it misses falls back to its enclosing table.
    """
    index: dict[Loc, int] = {}
    array_counts: dict[Loc, int] = {}
    current: Loc = ()
    in_multiline: str | None = None

    def resolve(parts: Iterable[str]) -> Loc:
        # `[shard.x]` after `[[shard]]` means the last shard's table x.
        loc: Loc = ()
        for part in parts:
            loc = (*loc, part)
            if loc in array_counts:
                loc = (*loc, array_counts[loc] - 1)
        return loc

    def record(loc: Loc, line: int) -> None:
        for i in range(1, len(loc) + 1):
            index.setdefault(loc[:i], line)

    for lineno, line in enumerate(text.splitlines(), start=1):
        if in_multiline is not None:
            if line.count(in_multiline) % 2 == 1:
                in_multiline = None
            continue
        if m := _ARRAY_HEADER.match(line):
            parts = _split_key(m[1])
            name = (*resolve(parts[:-1]), parts[-1])
            n = array_counts.get(name, 0)
            array_counts[name] = n + 1
            current = (*name, n)
            record(current, lineno)
        elif m := _TABLE_HEADER.match(line):
            current = resolve(_split_key(m[1]))
            record(current, lineno)
        elif m := _KEY_LINE.match(line):
            record((*current, *_split_key(m[1])), lineno)
            rest = line[m.end() :]
            for quote in ('"""', "'''"):
                if rest.count(quote) % 2 == 1:
                    in_multiline = quote
                    break
    return index


# --- validation --------------------------------------------------------------


def _toml_type(value: object) -> str:
    match value:
        case bool():
            return "a boolean"
        case int():
            return "an integer"
        case float():
            return "a float"
        case str():
            return "a string"
        case list():
            return "an array"
        case dict():
            return "a table"
    return "a date/time"


_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_DURATION_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _num(value: float) -> str:
    return f"{value:g}"


class _Parser:
    """Turns parsed TOML into a `Config`, raising `ConfigError` at the offending line."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.base_dir = path.parent
        self.text = text
        self._index: dict[Loc, int] | None = None
        self.backend_defaults: dict[str, AnthropicConfig | OpenAIConfig] = {
            "anthropic": AnthropicConfig(),
            "openai": OpenAIConfig(),
        }

    def line_of(self, loc: Loc) -> int | None:
        if self._index is None:
            self._index = _index_lines(self.text)
        while loc:
            if loc in self._index:
                return self._index[loc]
            loc = loc[:-1]
        return None

    def fail(self, loc: Loc, reason: str) -> NoReturn:
        raise ConfigError(self.path, self.line_of(loc), reason)

    def config(self, raw: dict[str, Any]) -> Config:
        for key, value in raw.items():
            if key not in CONFIG_KEYS:
                what = f"section [{key}]" if isinstance(value, dict) else f"key {key!r}"
                self.fail((key,), f"unknown {what}{_suggest(key, CONFIG_KEYS)}")
        daemon = self.daemon(self.table(raw, "daemon"))
        # The backend tables first: shards take their defaults from them.
        anthropic_t = _Table(self, ("anthropic",), self.table(raw, "anthropic"), "[anthropic]")
        anthropic = AnthropicConfig(
            model=anthropic_t.string("model"),
            base_url=anthropic_t.url("base_url"),
            api_key_file=anthropic_t.path("api_key_file"),
            timeout=anthropic_t.seconds("timeout", DEFAULT_MODEL_TIMEOUT),
            max_retries=anthropic_t.integer("max_retries", DEFAULT_MODEL_RETRIES, minimum=0),
        )
        openai_t = _Table(self, ("openai",), self.table(raw, "openai"), "[openai]")
        openai = OpenAIConfig(
            base_url=openai_t.url("base_url"),
            model=openai_t.string("model"),
            api_key_file=openai_t.path("api_key_file"),
            timeout=openai_t.seconds("timeout", DEFAULT_MODEL_TIMEOUT),
            max_retries=openai_t.integer("max_retries", DEFAULT_MODEL_RETRIES, minimum=0),
        )
        self.backend_defaults = {"anthropic": anthropic, "openai": openai}
        shards = self.shards(raw.get("shard", []))
        coordinator_t = _Table(
            self, ("coordinator",), self.table(raw, "coordinator"), "[coordinator]"
        )
        coordinator = CoordinatorConfig(
            route_top_n=coordinator_t.integer("route_top_n", 2, minimum=1),
            synthesize=coordinator_t.boolean("synthesize", False),
            route_min_coverage_ratio=coordinator_t.fraction("route_min_coverage_ratio", 0.5),
        )
        prices = self.prices(self.table(raw, "prices"))
        log_t = _Table(self, ("log",), self.table(raw, "log"), "[log]")
        log_defaults = LogConfig()
        log = LogConfig(
            segment_events=log_t.integer("segment_events", log_defaults.segment_events, minimum=2),
            segment_age=log_t.duration("segment_age", log_defaults.segment_age),
            compress=log_t.choice("compress", log_defaults.compress, COMPRESSIONS),
        )
        return Config(daemon, shards, self.path, coordinator, anthropic, openai, prices, log)

    def prices(self, data: dict[str, Any]) -> dict[str, ModelPrice]:
        prices: dict[str, ModelPrice] = {}
        for model, value in data.items():
            if not isinstance(value, dict):
                self.fail(
                    ("prices", model),
                    f"[prices] entry {model!r} must be a table: write "
                    f'[prices."{model}"] with input, output, cache_write and cache_read',
                )
            t = _Table(self, ("prices", model), value, f'[prices."{model}"]')
            base = t.price("input")
            prices[model] = ModelPrice(
                input=base,
                output=t.price("output"),
                # Anthropic's multipliers for 5-minute cache writes and cache reads.
                cache_write=t.price("cache_write", base * 1.25),
                cache_read=t.price("cache_read", base * 0.1),
            )
        return prices

    def table(self, raw: dict[str, Any], name: str) -> dict[str, Any]:
        value = raw.get(name, {})
        if not isinstance(value, dict):
            self.fail((name,), f"{name} must be a table ([{name}]), not {_toml_type(value)}")
        return value

    def daemon(self, data: dict[str, Any]) -> DaemonConfig:
        t = _Table(self, ("daemon",), data, "[daemon]")
        defaults = DaemonConfig()
        interval = t.seconds("heartbeat_interval", defaults.heartbeat_interval)
        timeout = t.seconds("heartbeat_timeout", defaults.heartbeat_timeout)
        if timeout <= interval:
            if "heartbeat_timeout" in data:
                t.fail(
                    "heartbeat_timeout",
                    f"heartbeat_timeout must be greater than heartbeat_interval ({_num(interval)})",
                )
            t.fail(
                "heartbeat_interval",
                f"heartbeat_interval must be less than heartbeat_timeout "
                f"({_num(timeout)}, the default)",
            )
        return DaemonConfig(
            heartbeat_interval=interval,
            heartbeat_timeout=timeout,
            restart_intensity=t.restart_intensity(defaults.restart_intensity),
            checkpoint_every=t.integer("checkpoint_every", defaults.checkpoint_every, minimum=1),
            ask_timeout=t.seconds("ask_timeout", defaults.ask_timeout),
            max_clients=t.integer("max_clients", defaults.max_clients, minimum=1),
        )

    def shards(self, value: object) -> tuple[ShardConfig, ...]:
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.fail(("shard",), "shard must be an array of tables: write each one as [[shard]]")
        shards: list[ShardConfig] = []
        first_line: dict[str, int | None] = {}
        for i, data in enumerate(value):
            shard = self.shard(i, data)
            if shard.name in first_line:
                where = first_line[shard.name]
                self.fail(
                    ("shard", i, "name"),
                    f"duplicate shard name {shard.name!r}"
                    + (f" (first defined on line {where})" if where is not None else ""),
                )
            first_line[shard.name] = self.line_of(("shard", i, "name"))
            shards.append(shard)
        if WORKING_SHARD not in first_line:
            shards.append(WORKING_SHARD_DEFAULT)
        return tuple(shards)

    def shard(self, i: int, data: dict[str, Any]) -> ShardConfig:
        loc: Loc = ("shard", i)
        if "name" not in data:
            self.fail(loc, f"[[shard]] number {i + 1} has no name")
        name = data["name"]
        if not isinstance(name, str):
            self.fail((*loc, "name"), f"shard name must be a string, not {_toml_type(name)}")
        if not SHARD_NAME_RE.fullmatch(name):
            self.fail(
                (*loc, "name"),
                f"invalid shard name {name!r}: use 1 to 32 lowercase letters, digits, "
                "'_' or '-', starting with a letter",
            )
        t = _Table(self, loc, data, f"shard {name!r}")
        if "remote" in data:
            return self.remote_shard(name, t)
        for key in ("ssh_options", "remote_shards"):
            if key in data:
                t.fail(key, f'shard {name!r}: {key} is only used with remote = "ssh://…"')
        kind = t.choice("kind", "files", SHARD_KINDS)
        if name == WORKING_SHARD and kind != "memory":
            t.fail(
                "kind" if "kind" in data else "name",
                f'shard {WORKING_SHARD!r} holds working memory and must have kind = "memory"',
            )
        if name != WORKING_SHARD and kind == "memory":
            t.fail(
                "kind",
                f'only the shard {WORKING_SHARD!r} can have kind = "memory"; '
                f'shard {name!r} needs kind = "files"',
            )
        if kind == "files":
            if "paths" not in data:
                self.fail(loc, f'shard {name!r}: paths is required for kind = "files"')
            paths = tuple(self.resolve_path(p) for p in t.string_list("paths"))
        else:
            for key in ("paths", "exclude", "respect_gitignore", "watch"):
                if key in data:
                    t.fail(key, f'shard {name!r}: {key} is not used by kind = "memory"')
            paths = ()
        backend = t.choice("backend", "local", BACKENDS)
        model, base_url, api_key_file = t.string("model"), t.url("base_url"), t.path("api_key_file")
        timeout, max_retries = DEFAULT_MODEL_TIMEOUT, DEFAULT_MODEL_RETRIES
        if backend in MODEL_BACKENDS:
            section = self.backend_defaults[backend]
            model = model or section.model
            base_url = base_url or section.base_url
            api_key_file = api_key_file or section.api_key_file
            timeout = t.seconds("timeout", section.timeout)
            max_retries = t.integer("max_retries", section.max_retries, minimum=0)
            where = "backend" if "backend" in data else "name"
            if model is None:
                t.missing(
                    where,
                    f'shard {name!r}: backend = "{backend}" needs a model: '
                    f'set model = "…" in this shard or in [{backend}]',
                    shard=name,
                    backend=backend,
                    key="model",
                )
            if backend == "openai" and base_url is None:
                t.missing(
                    where,
                    f'shard {name!r}: backend = "openai" needs base_url (the server\'s '
                    f"OpenAI-compatible URL, e.g. http://127.0.0.1:11434/v1): set it in this "
                    f"shard or in [openai]",
                    shard=name,
                    backend=backend,
                    key="base_url",
                )
        else:
            for key in ("timeout", "max_retries"):
                if key in data:
                    t.fail(
                        key,
                        f"shard {name!r}: {key} is only used by the anthropic and "
                        f'openai backends, not by backend = "{backend}"',
                    )
        if backend != "anthropic":
            for key in ("cache_ttl", "keep_warm"):
                if key in data:
                    t.fail(key, f'shard {name!r}: {key} is only used by backend = "anthropic"')
        semantic = t.boolean("semantic", False)
        if semantic and (reason := ranking.missing()):
            t.fail(
                "semantic",
                f"shard {name!r}: semantic = true needs the optional extra "
                f"ifmem[{ranking.EXTRA}] and its model, and {reason}: install them with "
                f"`{ranking.INSTALL}`, or set semantic = false",
            )
        return ShardConfig(
            name=name,
            kind=kind,
            description=t.string("description", "", allow_empty=True) or "",
            paths=paths,
            exclude=t.pattern_list("exclude"),
            respect_gitignore=t.boolean("respect_gitignore", True),
            watch=t.boolean("watch", True),
            backend=backend,
            max_file_bytes=t.integer("max_file_bytes", DEFAULT_MAX_FILE_BYTES, minimum=1),
            semantic=semantic,
            model=model,
            max_tokens=t.integer("max_tokens", 180_000, minimum=1),
            base_url=base_url,
            api_key_file=api_key_file,
            cache_ttl=t.choice("cache_ttl", "5m", CACHE_TTLS),
            keep_warm=t.boolean("keep_warm", False),
            timeout=timeout,
            max_retries=max_retries,
        )

    def remote_shard(self, name: str, t: _Table) -> ShardConfig:
        """A `[[shard]]` with `remote`: another host's ifmemd, reached over ssh."""
        if name == WORKING_SHARD:
            t.fail("remote", f"shard {WORKING_SHARD!r} holds this host's working memory")
        for key in t.data:
            if key not in REMOTE_SHARD_KEYS:
                t.fail(
                    key,
                    f"shard {name!r}: {key} is not used by a remote shard "
                    "(the remote host's own config says it)",
                )
        url = t.string("remote") or ""
        try:
            target = parse_ssh_url(url)
        except ValueError as e:
            t.fail("remote", f"shard {name!r}: remote {url!r}: {e}")
        shards = t.string_list("remote_shards") if "remote_shards" in t.data else ()
        for remote_name in shards:
            if not SHARD_NAME_RE.fullmatch(remote_name):
                t.fail("remote_shards", f"remote_shards: {remote_name!r} is not a shard name")
        return ShardConfig(
            name=name,
            kind="remote",
            description=t.string("description", "", allow_empty=True) or "",
            remote=target,
            ssh_options=t.string_list("ssh_options") if "ssh_options" in t.data else (),
            remote_shards=shards,
        )

    def resolve_path(self, pattern: str) -> str:
        expanded = Path(os.path.expanduser(pattern))
        return str(expanded if expanded.is_absolute() else self.base_dir / expanded)


def _suggest(key: str, known: Iterable[str]) -> str:
    known = list(known)
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (known: {', '.join(known)})"


class _Table:
    """Typed access to one TOML table's keys; every failure names the key's line."""

    def __init__(self, parser: _Parser, loc: Loc, data: dict[str, Any], label: str) -> None:
        self.parser = parser
        self.loc = loc
        self.data = data
        self.label = label
        known = CONFIG_KEYS[str(loc[0])]
        for key in data:
            if key not in known:
                self.fail(key, f"unknown key {key!r} in {label}{_suggest(key, known)}")

    def fail(self, key: str, reason: str) -> NoReturn:
        self.parser.fail((*self.loc, key), reason)

    def missing(self, where: str, reason: str, *, shard: str, backend: str, key: str) -> NoReturn:
        """Shard `shard` has no `key`, in its table or in its backend's."""
        raise MissingSettingError(
            self.parser.path,
            self.parser.line_of((*self.loc, where)),
            reason,
            shard=shard,
            backend=backend,
            key=key,
        )

    def _wrong_type(self, key: str, expected: str) -> NoReturn:
        self.fail(key, f"{key} must be {expected}, not {_toml_type(self.data[key])}")

    def seconds(self, key: str, default: float) -> float:
        if key not in self.data:
            return default
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            self._wrong_type(key, "a number of seconds")
        if not math.isfinite(value) or value <= 0:
            self.fail(key, f"{key} must be a positive number of seconds, got {value}")
        return float(value)

    def fraction(self, key: str, default: float) -> float:
        """A number from 0 to 1."""
        if key not in self.data:
            return default
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            self._wrong_type(key, "a number from 0 to 1")
        if not 0 <= value <= 1:
            self.fail(key, f"{key} must be a number from 0 to 1, got {value}")
        return float(value)

    def duration(self, key: str, default: float) -> float:
        """A span of time, as "30d", "12h", "90m", "45s" or a number of seconds."""
        if key not in self.data:
            return default
        value = self.data[key]
        if isinstance(value, str):
            m = _DURATION.fullmatch(value.strip())
            if m is None:
                self.fail(key, f'{key} must be like "30d", "12h", "90m" or "45s", got {value!r}')
            value = float(m[1]) * _DURATION_UNITS[m[2]]
        elif isinstance(value, bool) or not isinstance(value, int | float):
            self._wrong_type(key, 'a duration like "30d" or a number of seconds')
        if not math.isfinite(value) or value <= 0:
            self.fail(key, f"{key} must be a positive duration, got {self.data[key]!r}")
        return float(value)

    def integer(self, key: str, default: int, *, minimum: int) -> int:
        if key not in self.data:
            return default
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self._wrong_type(key, "an integer")
        if value < minimum:
            self.fail(key, f"{key} must be at least {minimum}, got {value}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        if key not in self.data:
            return default
        value = self.data[key]
        if not isinstance(value, bool):
            self._wrong_type(key, "true or false")
        return value

    def string(
        self, key: str, default: str | None = None, *, allow_empty: bool = False
    ) -> str | None:
        if key not in self.data:
            return default
        value = self.data[key]
        if not isinstance(value, str):
            self._wrong_type(key, "a string")
        if not allow_empty and not value.strip():
            self.fail(key, f"{key} must not be empty")
        if "\0" in value:
            self.fail(key, f"{key} must not hold a NUL character")
        return value

    def path(self, key: str) -> str | None:
        """A file path, `~` expanded and made absolute against the config file's directory."""
        value = self.string(key)
        return self.parser.resolve_path(value) if value is not None else None

    def price(self, key: str, default: float | None = None) -> float:
        """US dollars per million tokens: a finite number, at least 0."""
        if key not in self.data:
            if default is None:
                self.fail(key, f"{self.label}: {key} is required (US dollars per million tokens)")
            return default
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            self._wrong_type(key, "a number (US dollars per million tokens)")
        if not math.isfinite(value) or value < 0:
            self.fail(key, f"{key} must be a number at least 0, got {value}")
        return float(value)

    def url(self, key: str) -> str | None:
        value = self.string(key)
        if value is not None and not value.startswith(("http://", "https://")):
            self.fail(key, f"{key} must be an http:// or https:// URL, got {value!r}")
        return value

    def choice(self, key: str, default: Any, choices: tuple[str, ...]) -> Any:
        value = self.string(key, default)
        if value not in choices:
            options = " or ".join(f'"{c}"' for c in choices)
            self.fail(key, f"{key} must be {options}, got {value!r}")
        return value

    def string_list(self, key: str) -> tuple[str, ...]:
        value = self.data[key]
        if not isinstance(value, list):
            self._wrong_type(key, "an array of strings")
        if not value:
            self.fail(key, f"{key} must not be empty")
        for item in value:
            if not isinstance(item, str):
                self.fail(key, f"{key} must hold only strings, not {_toml_type(item)}")
            if not item.strip():
                self.fail(key, f"{key} must not hold empty strings")
            if "\0" in item:
                self.fail(key, f"{key} must not hold a NUL character")
        return tuple(value)

    def pattern_list(self, key: str) -> tuple[str, ...]:
        """Gitignore-style patterns (may be empty); one git would reject is refused here."""
        if key not in self.data:
            return ()
        value = self.data[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self._wrong_type(key, "an array of strings")
        for pattern in value:
            try:
                pathspec.GitIgnoreSpec.from_lines([pattern])
            except ValueError as e:
                self.fail(key, f"{key}: invalid pattern {pattern!r}: {e}")
        return tuple(value)

    def restart_intensity(self, default: RestartIntensity) -> RestartIntensity:
        key = "restart_intensity"
        if key not in self.data:
            return default
        value = self.data[key]
        shape = "[max_restarts, window_seconds], e.g. [5, 60]"
        if not isinstance(value, list) or len(value) != 2:
            self.fail(key, f"{key} must be a pair {shape}")
        restarts, window = value
        if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 0:
            self.fail(key, f"{key}: max_restarts must be a non-negative integer, got {restarts!r}")
        if (
            isinstance(window, bool)
            or not isinstance(window, int | float)
            or not math.isfinite(window)
            or window <= 0
        ):
            self.fail(key, f"{key}: window_seconds must be a positive number, got {window!r}")
        return RestartIntensity(restarts, float(window))
