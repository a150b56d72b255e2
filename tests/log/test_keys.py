"""The Ed25519 signing key: created private on first use, refused when it is not private
or not a key, and shared when two processes race to create it."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ifmemd.errors import KeyFileError
from ifmemd.log.keys import Signer, load_or_create_signer, load_signer, verify
from ifmemd.log.logformat import key_id_of
from ifmemd.system import durable

HEADER = "ifmem-ed25519-seed-v1"


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "ifmem" / "signing.key"


def write_key(path: Path, text: str, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


# -- creation ----------------------------------------------------------------------------------


def test_created_0600_on_first_use(key_path: Path) -> None:
    signer = load_or_create_signer(key_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_path.parent.stat().st_mode) == 0o700
    assert key_path.read_text() == f"{HEADER} {signer.seed.hex()}\n"
    assert sorted(p.name for p in key_path.parent.iterdir()) == ["signing.key"]  # no temp left


def test_second_use_loads_the_same_key(key_path: Path) -> None:
    first = load_or_create_signer(key_path)
    second = load_or_create_signer(key_path)
    assert second == first
    assert load_signer(key_path) == first


def test_created_0600_whatever_the_umask(key_path: Path) -> None:
    old = os.umask(0)
    try:
        load_or_create_signer(key_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_load_signer_does_not_create(key_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_signer(key_path)
    assert not key_path.exists()


def test_create_failure_is_a_key_file_error(
    key_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*args: object, **kwargs: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(durable, "os_open", full)
    with pytest.raises(KeyFileError, match="cannot create: No space left on device"):
        load_or_create_signer(key_path)
    assert not key_path.exists()


# -- refusal -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o606, 0o610])
def test_key_others_can_read_is_refused(key_path: Path, mode: int) -> None:
    signer = load_or_create_signer(key_path)
    key_path.chmod(mode)
    with pytest.raises(KeyFileError) as caught:
        load_signer(key_path)
    message = str(caught.value)
    assert f"chmod 600 {key_path}" in message
    assert f"{mode:04o}" in message
    # load_or_create refuses too, and never replaces the key.
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_or_create_signer(key_path)
    assert key_path.read_text() == f"{HEADER} {signer.seed.hex()}\n"
    key_path.chmod(0o600)
    assert load_signer(key_path) == signer


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_private_modes_are_accepted(key_path: Path, mode: int) -> None:
    signer = load_or_create_signer(key_path)
    key_path.chmod(mode)
    assert load_signer(key_path) == signer


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not an ifmem signing key"),
        ("hello\n", "not an ifmem signing key"),
        (f"{HEADER}\n", "not an ifmem signing key"),
        (f"{HEADER} {'00' * 32} extra\n", "not an ifmem signing key"),
        (f"ifmem-ed25519-seed-v2 {'00' * 32}\n", "not an ifmem signing key"),
        (f"{HEADER} {'zz' * 32}\n", "not hexadecimal"),
        (f"{HEADER} {'0' * 63}\n", "not hexadecimal"),
        (f"{HEADER} {'00' * 31}\n", "31 bytes, expected 32"),
        (f"{HEADER} {'00' * 33}\n", "33 bytes, expected 32"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\n", "not an ifmem"),
    ],
)
def test_malformed_key_is_refused(key_path: Path, text: str, message: str) -> None:
    write_key(key_path, text)
    with pytest.raises(KeyFileError, match=message) as caught:
        load_signer(key_path)
    assert str(key_path) in str(caught.value)
    with pytest.raises(KeyFileError, match=message):
        load_or_create_signer(key_path)
    assert key_path.read_text() == text  # never overwritten


def test_binary_garbage_is_refused(key_path: Path) -> None:
    key_path.parent.mkdir(parents=True)
    key_path.write_bytes(os.urandom(64) + b"\xff\xfe")
    key_path.chmod(0o600)
    with pytest.raises(KeyFileError, match="not an ifmem signing key"):
        load_signer(key_path)


def test_symlink_is_refused(key_path: Path, tmp_path: Path) -> None:
    real = tmp_path / "elsewhere.key"
    load_or_create_signer(real)
    key_path.parent.mkdir(parents=True)
    key_path.symlink_to(real)
    with pytest.raises(KeyFileError, match="cannot open"):
        load_signer(key_path)


def test_directory_is_refused(key_path: Path) -> None:
    key_path.mkdir(parents=True, mode=0o700)
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_signer(key_path)


# -- the key itself ----------------------------------------------------------------------------


def test_rfc8032_test_vector_1() -> None:
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    public = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    sig = bytes.fromhex(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bac"
        "c61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    signer = Signer.from_seed(seed)
    assert signer.public_key == public
    assert signer.sign(b"") == sig
    assert verify(public, b"", sig)
    # key_id: the first 16 hex characters of BLAKE2b-256 of the raw public key.
    assert signer.key_id == hashlib.blake2b(public, digest_size=32).hexdigest()[:16]
    assert key_id_of(public) == signer.key_id


def test_verify_refuses_bad_input() -> None:
    signer = Signer.generate()
    sig = signer.sign(b"message")
    assert verify(signer.public_key, b"message", sig)
    assert not verify(signer.public_key, b"messagE", sig)
    assert not verify(signer.public_key, b"message", bytes([sig[0] ^ 1]) + sig[1:])
    assert not verify(signer.public_key, b"message", sig[:63])
    assert not verify(signer.public_key[:31], b"message", sig)
    assert not verify(Signer.generate().public_key, b"message", sig)


def test_repr_hides_the_secret() -> None:
    signer = Signer.generate()
    assert signer.seed.hex() not in repr(signer)
    assert signer.key_id in repr(signer)


# -- racing creators ---------------------------------------------------------------------------


def test_losing_the_creation_race_uses_the_winners_key(
    key_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministically: another process creates the key between our look and our write."""
    rival = Signer.generate()
    real_write = durable.write_atomic

    def rival_writes_first(path: Path, data: bytes, mode: int = 0o600, **kw: bool) -> None:
        real_write(path, f"{HEADER} {rival.seed.hex()}\n".encode(), mode=0o600, exclusive=True)
        real_write(path, data, mode, **kw)

    monkeypatch.setattr(durable, "write_atomic", rival_writes_first)
    assert load_or_create_signer(key_path) == rival
    assert load_signer(key_path) == rival
    assert sorted(p.name for p in key_path.parent.iterdir()) == ["signing.key"]


_RACER = """
import os, sys, time
from pathlib import Path
from ifmemd.log.keys import load_or_create_signer
key, go, ready = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
ready.touch()
deadline = time.monotonic() + 30
while not go.exists():
    if time.monotonic() > deadline:
        sys.exit("never started")
print(load_or_create_signer(key).key_id)
"""


def test_processes_racing_to_create_end_up_with_one_key(key_path: Path, tmp_path: Path) -> None:
    racers = 6
    go = tmp_path / "go"
    ready = [tmp_path / f"ready.{i}" for i in range(racers)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(key_path), str(go), str(r)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in ready
    ]
    try:
        deadline = time.monotonic() + 30
        while not all(r.exists() for r in ready):
            assert time.monotonic() < deadline, "racers did not start"
            time.sleep(0.01)
        go.touch()
        results = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for (_, err), p in zip(results, procs, strict=True):
        assert p.returncode == 0, err
    key_ids = {out.strip() for out, _ in results}
    assert key_ids == {load_signer(key_path).key_id}
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert sorted(p.name for p in key_path.parent.iterdir()) == ["signing.key"]
