"""A real OpenSSH server on 127.0.0.1, with throwaway keys, for remote-shard tests.

`Sshd` writes a host key, a user key, an `authorized_keys` whose forced command
runs `ifmem proxy` against a given socket (as DESIGN.md suggests users restrict
their key), a `known_hosts` holding the host key, and an sshd_config that
listens on 127.0.0.1 only, on a free port. sshd runs as a child of the test in
the foreground (`sshd -D -e`), its log in a file, and is ended by `stop()`.
`ssh_options()` are what a remote shard's `ssh_options` must say to use them.

Under CI (CI set, as CI=true) a missing sshd fails the test; elsewhere it skips.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

START_TIMEOUT_S = 10.0


def sshd_binary() -> str:
    """The sshd to run (Debian's openssh-server), or skip (fail under CI) without it."""
    found = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else "")
    if not found or not shutil.which("ssh") or not shutil.which("ssh-keygen"):
        message = "needs OpenSSH (sshd, ssh, ssh-keygen): `make deps-apt` installs openssh-server"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> str:
    """A new ed25519 key pair at `path`; returns the public key line."""
    path.unlink(missing_ok=True)
    path.with_suffix(".pub").unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ifmem-test", "-f", str(path)],
        check=True,
    )
    return path.with_name(path.name + ".pub").read_text().strip()


def proxy_command(socket_path: Path) -> str:
    """The forced command: the installed `ifmem proxy` against the remote daemon's socket."""
    ifmem = Path(sys.executable).with_name("ifmem")
    return f"IFMEM_SOCKET={socket_path} exec {ifmem} proxy"


class Sshd:
    """One sshd on 127.0.0.1:`port`, and the user key and known_hosts to reach it."""

    def __init__(self, root: Path, remote_socket: Path, *, command: str | None = None) -> None:
        """`command`: the key's forced command (default: `ifmem proxy` on `remote_socket`)."""
        self.binary = sshd_binary()
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.user = getpass.getuser()
        self.port = free_port()
        self.host_key = root / "host_key"
        self.user_key = root / "user_key"
        self.known_hosts = root / "known_hosts"
        self.authorized_keys = root / "authorized_keys"
        self.config = root / "sshd_config"
        self.log = root / "sshd.log"
        self.new_host_key()
        user_pub = keygen(self.user_key)
        self.authorized_keys.write_text(
            f'restrict,command="{command or proxy_command(remote_socket)}" {user_pub}\n'
        )
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {self.host_public_key()}\n")
        self.config.write_text(
            "\n".join(
                [
                    "ListenAddress 127.0.0.1",
                    f"Port {self.port}",
                    f"HostKey {self.host_key}",
                    f"AuthorizedKeysFile {self.authorized_keys}",
                    f"PidFile {root / 'sshd.pid'}",
                    f"AllowUsers {self.user}",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "UsePAM no",
                    # The test's tmp dirs are not the user's home: skip sshd's ownership walk.
                    "StrictModes no",
                    "LogLevel VERBOSE",
                ]
            )
            + "\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def new_host_key(self) -> None:
        """Replace the host key (known_hosts keeps the old one: a changed host key)."""
        keygen(self.host_key)

    def host_public_key(self) -> str:
        return " ".join(self.host_key.with_name("host_key.pub").read_text().split()[:2])

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    def ssh_options(self) -> list[str]:
        """This user key and known_hosts only, strictly: nothing of ~/.ssh is read."""
        return [
            "-F",
            "none",
            "-i",
            str(self.user_key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
        ]

    def start(self) -> Sshd:
        if os.geteuid() == 0:
            # sshd's privilege separation needs its empty directory (the package's
            # systemd unit would make it).
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"sshd exited ({self.proc.returncode}):\n{self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"sshd did not listen within {START_TIMEOUT_S:g} s")
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
