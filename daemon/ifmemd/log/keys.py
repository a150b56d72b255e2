"""The Ed25519 signing key: created on first use, refused if anyone else can read it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from nacl import bindings
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey

from ifmemd.errors import KeyFileError
from ifmemd.log.logformat import key_id_of
from ifmemd.system import durable
from ifmemd.system.privatefile import NotPrivateError, read_private

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


def load_signer(path: Path) -> Signer:
    """Read the key at `path`, refusing it when group or others can read it."""
    try:
        raw = read_private(path, 4096).decode("ascii", "replace").split()
    except NotPrivateError as e:
        raise KeyFileError(path, e.reason) from e
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
