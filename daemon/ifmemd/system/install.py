"""`ifmem init`: a commented config, the signing key, and the user units, idempotently."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ifmemd.config import default_config_path
from ifmemd.log.keys import load_or_create_signer
from ifmemd.system import durable, paths, units

DEFAULT_CONFIG = """\
# ifmem configuration: see ifmem.toml(5).
# A shard named "working" (kind = "memory", fed by `ifmem remember`) always exists.

[daemon]
heartbeat_interval = 10      # seconds between shard heartbeats
heartbeat_timeout  = 30      # a shard silent this long is killed and restarted
restart_intensity  = [5, 60] # more restarts than this in that many seconds: shard failed
# checkpoint_every = 1000    # events between signed checkpoints
# ask_timeout      = 10      # seconds a shard may take to answer
# max_clients      = 256

# One [[shard]] per domain; each runs as its own process with its corpus hot.
# [[shard]]
# name = "docs"
# description = "Project documentation"
# paths = ["~/notes/**/*.md"]
# backend = "local"          # local (offline, FTS5) | anthropic (Claude) | openai

# A shard with backend = "anthropic" needs a model and an API key, in its
# [[shard]] or here for all of them. The key is ANTHROPIC_API_KEY in the
# daemon's environment, or the first line of api_key_file (chmod 600).
# [anthropic]
# model = "{model}"
# api_key_file = "{key_file}"
"""

# Model names are configuration, never built in: these are only the examples
# `ifmem init` writes and `ifmem doctor` suggests, as lines to add.
EXAMPLE_ANTHROPIC_MODEL = "claude-sonnet-4-5"
EXAMPLE_LINES = {
    ("anthropic", "model"): f'model = "{EXAMPLE_ANTHROPIC_MODEL}"',
    ("openai", "model"): 'model = "llama3.1:8b"',
    ("openai", "base_url"): 'base_url = "http://127.0.0.1:11434/v1"',
}


def anthropic_key_file() -> str:
    """Where the config `ifmem init` writes suggests keeping the Anthropic key, `~` for home."""
    path = default_config_path().parent / "anthropic.key"
    home = Path.home()
    return f"~/{path.relative_to(home)}" if path.is_relative_to(home) else str(path)


def default_config() -> str:
    """The commented config `ifmem init` writes."""
    return DEFAULT_CONFIG.replace("{model}", EXAMPLE_ANTHROPIC_MODEL).replace(
        "{key_file}", anthropic_key_file()
    )


@dataclass
class InitReport:
    """What `init` did: each line is (path, what happened)."""

    actions: list[tuple[Path, str]] = field(default_factory=list)
    key_id: str = ""
    systemctl: str = ""


def _write(path: Path, text: str, force: bool, report: InitReport, mode: int = 0o644) -> None:
    if path.exists() and not force:
        report.actions.append((path, "kept (exists; --force to overwrite)"))
        return
    existed = path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    durable.write_atomic(path, text.encode(), mode=mode)
    report.actions.append((path, "overwritten" if existed else "written"))


def init(force: bool = False, unit_dir: Path | None = None) -> InitReport:
    """Create what a user needs to run ifmem under systemd; never touches the event log."""
    report = InitReport()
    _write(default_config_path(), default_config(), force, report)
    key_path = paths.key_path()
    existed = key_path.exists()
    report.key_id = load_or_create_signer(key_path).key_id
    report.actions.append((key_path, "kept" if existed else "created (0600)"))
    unit_dir = unit_dir or units.user_unit_dir()
    command = [sys.executable, "-m", "ifmemd"]
    _write(unit_dir / units.SERVICE, units.render_service(command), force, report)
    _write(unit_dir / units.SOCKET, units.render_socket(), force, report)
    report.systemctl = _daemon_reload()
    return report


def _daemon_reload() -> str:
    """Tell the user manager about new units, if there is one; say what happened."""
    if shutil.which("systemctl") is None:
        return "systemctl not found: start the daemon with `ifmem daemon`"
    done = subprocess.run(
        ["systemctl", "--user", "daemon-reload"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return f"systemctl --user daemon-reload failed: {done.stderr.strip() or done.returncode}"
    return "systemctl --user daemon-reload: done"
