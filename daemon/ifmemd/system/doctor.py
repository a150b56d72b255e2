"""`ifmem doctor`: check an installation, one line per check, each failure with its fix."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ifmemd import __version__
from ifmemd.config import (
    Config,
    ConfigError,
    MissingSettingError,
    ShardConfig,
    default_config_path,
    load_config,
)
from ifmemd.errors import IfmemError, KeyFileError
from ifmemd.log.keys import load_signer
from ifmemd.system import install, paths, units

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass(frozen=True, slots=True)
class Check:
    """One finding: its name, verdict, what was seen, and how to fix it."""

    name: str
    verdict: str
    detail: str
    fix: str = ""


def _config() -> tuple[Check, Config | None]:
    path = default_config_path()
    try:
        config = load_config(None)
    except MissingSettingError as e:
        line = install.EXAMPLE_LINES[(e.backend, e.key)]
        fix = (
            f"add the line `{line}` to the [{e.backend}] table of {e.path} (and the "
            f"[{e.backend}] header above it if the file has none), or to shard {e.shard!r}"
        )
        return Check("config", FAIL, str(e), fix), None
    except ConfigError as e:
        return Check("config", FAIL, str(e), f"edit {path}; see ifmem.toml(5)"), None
    where = str(path) if path.exists() else f"{path} absent: defaults"
    return Check("config", OK, f"{where}; shards: {', '.join(config.shard_names)}"), config


def _key() -> Check:
    path = paths.key_path()
    try:
        signer = load_signer(path)
    except FileNotFoundError:
        return Check("key", WARN, f"{path} absent", "run `ifmem init` (or start the daemon once)")
    except KeyFileError as e:
        return Check("key", FAIL, str(e), f"chmod 600 {path}, or move it away and run `ifmem init`")
    mode = stat.S_IMODE(path.stat().st_mode)
    return Check("key", OK, f"{path} (mode {mode:04o}, key id {signer.key_id})")


def _units() -> Check:
    unit_dir = units.user_unit_dir()
    missing = [n for n in (units.SERVICE, units.SOCKET) if not (unit_dir / n).exists()]
    if missing:
        return Check(
            "units", WARN, f"not installed in {unit_dir}: {', '.join(missing)}", "run `ifmem init`"
        )
    if shutil.which("systemctl") is None:
        return Check("units", OK, f"installed in {unit_dir} (no systemctl to ask)")
    done = subprocess.run(
        ["systemctl", "--user", "show", "-p", "LoadState", "-p", "ActiveState", units.SOCKET],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return Check(
            "units",
            WARN,
            f"installed; the user manager did not answer: {done.stderr.strip()}",
            "is a `systemd --user` running for you?",
        )
    state = dict(line.split("=", 1) for line in done.stdout.split() if "=" in line)
    if state.get("LoadState") != "loaded":
        return Check(
            "units",
            FAIL,
            f"ifmem.socket is {state.get('LoadState')}",
            "run `systemctl --user daemon-reload`",
        )
    return Check(
        "units",
        OK,
        f"loaded; ifmem.socket is {state.get('ActiveState')}",
        ""
        if state.get("ActiveState") == "active"
        else "`systemctl --user enable --now ifmem.socket` to start on first use",
    )


def _daemon() -> Check:
    from ifmemd.wire.protocol import Client

    path = paths.socket_path()
    try:
        with Client(path, timeout=5) as client:
            status = client.request("status")
    except IfmemError as e:
        return Check(
            "daemon",
            WARN,
            f"not reachable at {path}: {e}",
            "`ifmem daemon`, or `systemctl --user start ifmem.socket`",
        )
    version = status.get("version")
    shards = status.get("shards", [])
    bad = [s["name"] for s in shards if s["status"] not in ("ready", "starting")]
    detail = f"version {version}, pid {status.get('pid')}, {len(shards)} shard(s)"
    if version != __version__:
        return Check(
            "daemon",
            WARN,
            f"{detail}; this ifmem is {__version__}",
            "restart the daemon to run the installed version",
        )
    if bad:
        return Check(
            "daemon",
            FAIL,
            f"{detail}; unhealthy: {', '.join(bad)}",
            "see `ifmem status`; fix and `ifmem reload`",
        )
    polling = [s["name"] for s in shards if s.get("watch") == "polling"]
    if polling:
        return Check(
            "daemon",
            WARN,
            f"{detail}; inotify watches ran out, polling for changes: {', '.join(polling)}",
            "raise fs.inotify.max_user_watches (sysctl), then restart the daemon",
        )
    return Check("daemon", OK, detail)


def _log() -> Check:
    from ifmemd.log.verify import verify_log

    path = paths.log_path()
    if not path.exists():
        return Check("log", WARN, f"{path} absent (no daemon has run yet)")
    try:
        report = verify_log(path)
    except IfmemError as e:
        return Check("log", FAIL, str(e), "see `ifmem audit verify`")
    if report.failure is not None:
        return Check("log", FAIL, f"first bad {report.failure}", "see `ifmem audit verify`")
    return Check("log", OK, f"{report.rows} events verify ({path})")


def _log_files() -> list[Path]:
    """Every file the log writes, where they are by default (DESIGN.md: Paths)."""
    log = paths.log_path()
    candidates = [
        log,
        *(log.with_name(log.name + suffix) for suffix in ("-wal", "-shm", "-journal")),
        paths.checkpoints_path(),
        paths.snapshot_path(),
    ]
    segments = paths.data_dir() / "segments"
    if segments.is_dir():
        candidates += sorted(segments.iterdir())
    return [p for p in candidates if p.is_file()]


def _private_files() -> Check:
    """The log's files must be private on their own: a copied or moved folder keeps their modes."""
    files = _log_files()
    open_to_others = [p for p in files if stat.S_IMODE(p.stat().st_mode) & 0o077]
    if open_to_others:
        listed = ", ".join(f"{p} ({stat.S_IMODE(p.stat().st_mode):04o})" for p in open_to_others)
        return Check(
            "files",
            WARN,
            f"readable by others: {listed}",
            "chmod go-rwx " + " ".join(str(p) for p in open_to_others),
        )
    return Check("files", OK, f"{len(files)} log file(s), none readable by others")


def _anthropic_key(config: Config, shard: ShardConfig) -> tuple[str, str] | None:
    """What keeps a Claude shard from its key, and the fix; None when it has one."""
    if os.environ.get("ANTHROPIC_API_KEY"):
        return None
    if shard.api_key_file is None:
        where = config.source or default_config_path()
        return (
            f"{shard.name}: no API key: ANTHROPIC_API_KEY is not set and no api_key_file",
            f'add the line `api_key_file = "{install.anthropic_key_file()}"` to the '
            f"[anthropic] table of {where} and write the key into that file (chmod 600), "
            "or set ANTHROPIC_API_KEY in the daemon's environment",
        )
    key_file = Path(shard.api_key_file).expanduser()
    if not key_file.exists():
        return (
            f"{shard.name}: api_key_file {key_file} does not exist",
            f"write the API key into {key_file}, then `chmod 600 {key_file}`",
        )
    if stat.S_IMODE(key_file.stat().st_mode) & 0o077:
        return f"{shard.name}: {key_file} is readable by others", f"chmod 600 {key_file}"
    return None


def _credentials(config: Config | None) -> Check:
    if config is None:
        return Check("backends", WARN, "config invalid: not checked")
    problems: list[str] = []
    fixes: list[str] = []
    for shard in config.shards:
        if shard.backend == "anthropic" and (found := _anthropic_key(config, shard)):
            problems.append(found[0])
            if found[1] not in fixes:
                fixes.append(found[1])
    backends = sorted({s.backend for s in config.shards})
    if problems:
        return Check("backends", FAIL, "; ".join(problems), "; ".join(fixes))
    return Check("backends", OK, f"credentials present for: {', '.join(backends)}")


def run_checks() -> list[Check]:
    """Every check, in order; none raises."""
    config_check, config = _config()
    steps: list[Callable[[], Check]] = [_key, _units, _daemon, _log, _private_files]
    return [config_check, *(step() for step in steps), _credentials(config)]
