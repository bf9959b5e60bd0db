"""Rotating shopper tokens, Eddystone-EID style (docs/architecture.md#rotating-tokens).

Every ``2**k`` seconds a phone derives a new 8-byte token from its 16-byte identity key
with the AES-128 construction of the Eddystone-EID specification:

* temporary key = AES(identity_key, 0x00*11 || 0xFF || 0x00 0x00 || ts[31:16])
* EID = AES(temporary key, 0x00*11 || k || ts with its low k bits cleared)[:8]

HQ precomputes ``token -> inbox`` per epoch for opted-in shoppers; gateways only ever
see the tables, never an identity key.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Sequence
from typing import Final

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["EidMaker", "eid_for", "epoch_of", "epoch_start", "new_identity_key", "new_inbox"]


def _aes_block(key: bytes, block: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 - one block, per spec
    return enc.update(block) + enc.finalize()


def epoch_of(unix_ts: float, k: int) -> int:
    return int(unix_ts) >> k


def epoch_start(epoch: int, k: int) -> int:
    return epoch << k


def eid_for(identity_key: bytes, unix_ts: float, k: int) -> bytes:
    """The 8-byte EID for ``identity_key`` at ``unix_ts`` with rotation exponent ``k``."""
    if len(identity_key) != 16:
        raise ValueError("an identity key is 16 bytes")
    if not 0 <= k <= 15:
        raise ValueError("rotation exponent k must be within 0..15")
    ts = int(unix_ts) & 0xFFFFFFFF
    temp_in = b"\x00" * 11 + b"\xff" + b"\x00\x00" + struct.pack(">H", (ts >> 16) & 0xFFFF)
    temp_key = _aes_block(identity_key, temp_in)
    quantised = (ts >> k) << k
    eid_in = b"\x00" * 11 + bytes([k]) + struct.pack(">I", quantised)
    return _aes_block(temp_key, eid_in)[:8]


_ECB: Final = modes.ECB()  # noqa: S305 - one block per EID, per spec


class EidMaker:
    """The EIDs of one identity key, as :func:`eid_for` makes them, faster: the
    temporary key (it changes every 2**16 s, ~18 h) is derived once and kept as a ready
    cipher, so an EID costs one AES pass instead of two key setups and passes, and
    several EIDs of one temporary key share the pass (:meth:`eids`). HQ keeps one per
    shopper (a few hundred bytes; ``aislecast bench scope``)."""

    __slots__ = ("_key", "_temp", "k")

    def __init__(self, identity_key: bytes, k: int) -> None:
        if len(identity_key) != 16:
            raise ValueError("an identity key is 16 bytes")
        if not 0 <= k <= 15:
            raise ValueError("rotation exponent k must be within 0..15")
        self._key = identity_key
        self.k = k
        # (ts[31:16], a cipher of its temporary key): one object, read and replaced whole,
        # so several threads may share the maker
        self._temp: tuple[int, Cipher[modes.ECB] | None] = (-1, None)

    def _cipher(self, ts: int) -> Cipher[modes.ECB]:
        hi, cipher = self._temp
        if cipher is None or hi != ts >> 16:
            hi = ts >> 16
            temp = _aes_block(self._key, b"\x00" * 11 + b"\xff\x00\x00" + struct.pack(">H", hi))
            cipher = Cipher(algorithms.AES(temp), _ECB)
            self._temp = (hi, cipher)
        return cipher

    def eid(self, unix_ts: float) -> bytes:
        return self.eids([unix_ts])[0]

    def eids(self, starts: Sequence[float]) -> list[bytes]:
        """:meth:`eid` of each time; those of one temporary key in one AES pass."""
        k = self.k
        stamps = [int(t) & 0xFFFFFFFF for t in starts]
        first = stamps[0] >> 16
        if any(ts >> 16 != first for ts in stamps):
            return [self.eids([ts])[0] for ts in stamps]
        prefix = b"\x00" * 11 + bytes([k])
        out = self._cipher(stamps[0]).encryptor().update(
            b"".join(prefix + struct.pack(">I", (ts >> k) << k) for ts in stamps))
        return [out[i:i + 8] for i in range(0, len(out), 16)]


def new_identity_key() -> bytes:
    return secrets.token_bytes(16)


def new_inbox() -> str:
    """A pseudonymous inbox id: 16 random hex digits, never derived from personal data."""
    return secrets.token_hex(8)
