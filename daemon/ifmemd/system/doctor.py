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
from ifmemd.config import Config, ConfigError, default_config_path, load_config
from ifmemd.errors import IfmemError, KeyFileError
from ifmemd.log.keys import load_signer
from ifmemd.system import paths, units

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


def _credentials(config: Config | None) -> Check:
    if config is None:
        return Check("backends", WARN, "config invalid: not checked")
    problems = []
    for shard in config.shards:
        if shard.backend == "anthropic" and not os.environ.get("ANTHROPIC_API_KEY"):
            key_file = Path(shard.api_key_file).expanduser() if shard.api_key_file else None
            if key_file is None or not key_file.exists():
                problems.append(f"{shard.name}: no ANTHROPIC_API_KEY and no api_key_file")
            elif stat.S_IMODE(key_file.stat().st_mode) & 0o077:
                problems.append(f"{shard.name}: {key_file} is readable by others")
        if shard.backend == "openai" and not (shard.base_url or config.openai.base_url):
            problems.append(f"{shard.name}: no base_url for the openai backend")
    backends = sorted({s.backend for s in config.shards})
    if problems:
        return Check(
            "backends",
            FAIL,
            "; ".join(problems),
            "set ANTHROPIC_API_KEY or api_key_file (0600), or base_url",
        )
    return Check("backends", OK, f"credentials present for: {', '.join(backends)}")


def run_checks() -> list[Check]:
    """Every check, in order; none raises."""
    config_check, config = _config()
    steps: list[Callable[[], Check]] = [_key, _units, _daemon, _log]
    return [config_check, *(step() for step in steps), _credentials(config)]
