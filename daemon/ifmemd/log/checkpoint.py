"""Signed checkpoints: a (seq, hash) the log must still hold, kept outside the log.

A checkpoint line is written every N events and at shutdown, to the
checkpoints file and to stderr (the journal under systemd). Whoever keeps a
copy can later prove the log was not truncated or rewritten before that point
(`ifmem audit verify --checkpoint FILE`). Line format (ifmem-log(5)):

    ifmem-checkpoint-v1 <log_id hex> <seq> <hash hex> <key_id> <sig hex>

where sig is Ed25519 over b"ifmem-checkpoint-v1\\x00" ‖ log_id ‖ seq(u64 BE) ‖ hash.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from ifmemd.errors import CheckpointError
from ifmemd.log.keys import Signer, verify
from ifmemd.log.logformat import checkpoint_message
from ifmemd.system import durable

TAG = "ifmem-checkpoint-v1"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement that log `log_id` had `hash` at `seq`."""

    log_id: bytes
    seq: int
    hash: bytes
    key_id: str
    sig: bytes

    @classmethod
    def make(cls, signer: Signer, log_id: bytes, seq: int, hash_: bytes) -> Checkpoint:
        sig = signer.sign(checkpoint_message(log_id, seq, hash_))
        return cls(log_id, seq, hash_, signer.key_id, sig)

    def line(self) -> str:
        return (
            f"{TAG} {self.log_id.hex()} {self.seq} {self.hash.hex()} {self.key_id} {self.sig.hex()}"
        )

    def signature_holds(self, public_key: bytes) -> bool:
        return verify(public_key, checkpoint_message(self.log_id, self.seq, self.hash), self.sig)


def parse_line(line: str, where: str) -> Checkpoint:
    """Parse one checkpoint line; `where` names it in errors (file:line)."""
    parts = line.split()
    # A line may carry a prefix (a journal's timestamp): the checkpoint starts at its tag.
    if TAG in parts:
        parts = parts[parts.index(TAG) :]
    if len(parts) != 6 or parts[0] != TAG:
        raise CheckpointError(where, f"expected '{TAG} LOG_ID SEQ HASH KEY_ID SIG'")
    try:
        log_id, hash_ = bytes.fromhex(parts[1]), bytes.fromhex(parts[3])
        sig = bytes.fromhex(parts[5])
        seq = int(parts[2])
    except ValueError as e:
        raise CheckpointError(where, f"malformed field: {e}") from e
    if len(log_id) != 16 or len(hash_) != 32 or len(sig) != 64 or seq < 1:
        raise CheckpointError(where, "field of the wrong length")
    return Checkpoint(log_id, seq, hash_, parts[4], sig)


def read_file(path: Path) -> list[Checkpoint]:
    """Every checkpoint in a file; lines without the tag (journal noise) are skipped."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise CheckpointError(str(path), e.strerror or str(e)) from e
    found = [
        parse_line(line, f"{path}:{n}")
        for n, line in enumerate(text.splitlines(), 1)
        if TAG in line
    ]
    if not found:
        raise CheckpointError(str(path), "holds no checkpoint line")
    return found


def publish(checkpoint: Checkpoint, path: Path | None) -> None:
    """Append the checkpoint durably to `path` (if any) and print it to stderr."""
    if path is not None:
        durable.ensure_private_dir(path.parent)
        durable.append_line(path, checkpoint.line())
    print(checkpoint.line(), file=sys.stderr, flush=True)
