"""The Ed25519 signing key: created on first use, refused if anyone else can read it."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from nacl import bindings
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey

from ifmemd import durable
from ifmemd.errors import KeyFileError
from ifmemd.logformat import key_id_of

_HEADER = "ifmem-ed25519-seed-v1"


@dataclass(frozen=True, slots=True)
class Signer:
    """A signing key ready to sign row hashes; `key_id` names it in the log."""

    seed: bytes = b""
    public_key: bytes = b""
    key_id: str = ""
    secret_key: bytes = b""

    @classmethod
    def from_seed(cls, seed: bytes) -> Signer:
        key = SigningKey(seed)
        public = key.verify_key.encode()
        return cls(seed, public, key_id_of(public), key._signing_key)

    @classmethod
    def generate(cls) -> Signer:
        return cls.from_seed(os.urandom(32))

    def sign(self, message: bytes) -> bytes:
        """The 64-byte detached Ed25519 signature of `message`."""
        return bindings.crypto_sign(message, self.secret_key)[:64]

    def __repr__(self) -> str:  # never print the secret
        return f"Signer(key_id={self.key_id!r})"


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when `signature` is a valid Ed25519 signature of `message`."""
    if len(signature) != 64 or len(public_key) != 32:
        return False
    try:
        bindings.crypto_sign_open(signature + message, public_key)
    except BadSignatureError:
        return False
    return True


def _check_private(path: Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(path, "not a regular file")
    if st.st_mode & 0o077:
        raise KeyFileError(
            path,
            f"permissions {stat.S_IMODE(st.st_mode):04o} are too open: group or others "
            f"can read it; run `chmod 600 {path}` (and rotate the key if others may have read it)",
        )
    if st.st_uid != os.getuid():
        raise KeyFileError(path, f"owned by uid {st.st_uid}, not by you (uid {os.getuid()})")


def load_signer(path: Path) -> Signer:
    """Read the key at `path`, refusing it when group or others can read it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise KeyFileError(path, f"cannot open: {e.strerror}") from e
    try:
        _check_private(path, os.fstat(fd))
        raw = os.read(fd, 4096).decode("ascii", "replace").split()
    finally:
        os.close(fd)
    if len(raw) != 2 or raw[0] != _HEADER:
        raise KeyFileError(path, f"not an ifmem signing key (expected a '{_HEADER}' line)")
    try:
        seed = bytes.fromhex(raw[1])
    except ValueError as e:
        raise KeyFileError(path, "the seed is not hexadecimal") from e
    if len(seed) != 32:
        raise KeyFileError(path, f"the seed is {len(seed)} bytes, expected 32")
    return Signer.from_seed(seed)


def load_or_create_signer(path: Path) -> Signer:
    """The signer at `path`, creating a new key (mode 0600) if there is none."""
    try:
        return load_signer(path)
    except FileNotFoundError:
        pass
    durable.ensure_private_dir(path.parent)
    signer = Signer.generate()
    try:
        durable.write_atomic(
            path, f"{_HEADER} {signer.seed.hex()}\n".encode(), mode=0o600, exclusive=True
        )
    except FileExistsError:
        return load_signer(path)  # another process created it first: use theirs
    except OSError as e:
        raise KeyFileError(path, f"cannot create: {e.strerror or e}") from e
    return signer
