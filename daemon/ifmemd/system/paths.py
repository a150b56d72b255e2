"""Where ifmem keeps its files (platformdirs, app name `ifmem`; XDG variables override).

The config file's path lives in `config.default_config_path`. The socket's
location needs neither platformdirs nor pathlib (`socket_location`): `ifmem
ask` reads only that, and must start fast (cli/ifmem/fast.py).
"""

from __future__ import annotations

import os

# Annotations only (never evaluated: `from __future__ import annotations`).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

APP = "ifmem"


def data_dir() -> Path:
    """`~/.local/share/ifmem`: the event log and the signing key."""
    import platformdirs

    return platformdirs.user_data_path(APP)


def state_dir() -> Path:
    """`~/.local/state/ifmem`: checkpoints and snapshots."""
    import platformdirs

    return platformdirs.user_state_path(APP)


def cache_dir() -> Path:
    """`~/.cache/ifmem`: derived data (shard indexes), safe to delete."""
    import platformdirs

    return platformdirs.user_cache_path(APP)


def shard_index_dir(shard: str) -> Path:
    """`~/.cache/ifmem/shards/<name>`: one shard's on-disk index (deleting it means a rebuild)."""
    return cache_dir() / "shards" / shard


def log_path() -> Path:
    """The event log."""
    return data_dir() / "events.db"


def key_path() -> Path:
    """The Ed25519 signing key (mode 0600)."""
    return data_dir() / "signing.key"


def checkpoints_path() -> Path:
    """The append-only checkpoints file, one signed checkpoint a line."""
    return state_dir() / "checkpoints"


def snapshot_path() -> Path:
    """The latest snapshot of the projected state (derived data; may be deleted)."""
    return state_dir() / "snapshot.json"


def socket_path() -> Path:
    """The daemon's socket: `IFMEM_SOCKET`, else `$XDG_RUNTIME_DIR/ifmem/ifmem.sock`."""
    from pathlib import Path

    return Path(socket_location())


def socket_location() -> str:
    """`socket_path()` as a string, worked out without pathlib."""
    env = os.environ.get("IFMEM_SOCKET")
    if env:
        return env
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    return os.path.join(runtime, APP, "ifmem.sock")
