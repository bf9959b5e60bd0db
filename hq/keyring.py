"""HQ's bundle-signing keyring: rotation of the Ed25519 key with an overlap.

Each key has an id (:func:`aislecast.kernel.signing.public_key_id`) and a state:

- ``current``: signs every bundle and delta (exactly one);
- ``next``: made by ``aislecast hq keys next``; announced in every bundle, so gateways
  pin it while the current key still signs;
- ``previous``: the key ``aislecast hq keys rotate`` replaced; gateways still accept it
  (retained bundles and deltas in flight were signed by it) until it is retired;
- ``retired``: ``aislecast hq keys retire``; its private half is deleted and bundles
  announce it retired, so gateways drop it and refuse whatever it signed.

The keyring is one JSON file, 0600, beside the signing key: ``hq-signing.pem`` ->
``hq-signing.ring.json``. It is the authority; the signing key file always holds the
current private key too (rewritten by ``rotate``), for the tools that read only that
(``aislecast hq gateways add`` pins its public half). A signing key file without a
keyring (an HQ from before rotation) becomes the ring's current key on first load.
Both files are replaced atomically (:func:`aislecast.kernel.privatefile.write_private`).
The CLI changes the file; a running HQ notices within seconds (:meth:`Keyring.reload`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aislecast.kernel.errors import AislecastError
from aislecast.kernel.privatefile import write_private
from aislecast.kernel.schema import KeyNotice
from aislecast.kernel.signing import Signer, load_or_create_signing_key, public_key_id, public_key_pem

__all__ = ["KeyState", "Keyring", "KeyringError", "RingKey", "ring_path"]

KeyState = Literal["current", "next", "previous", "retired"]


class KeyringError(AislecastError):
    """A keyring change that is not allowed now (``hint`` says what to do instead)."""


class RingKey(msgspec.Struct, frozen=True, omit_defaults=True):
    kid: str
    state: KeyState
    created_at: float
    public_key: str  # PEM
    private_key: str | None = None  # PKCS#8 PEM; None once retired
    changed_at: float = 0.0


class _RingFile(msgspec.Struct, frozen=True):
    v: int
    keys: list[RingKey]


def ring_path(key_path: Path) -> Path:
    return key_path.with_name(f"{key_path.stem}.ring.json")


def _private_pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _new_key(key: Ed25519PrivateKey, state: KeyState) -> RingKey:
    now = time.time()
    return RingKey(kid=public_key_id(key.public_key()), state=state, created_at=now,
                   public_key=public_key_pem(key.public_key()), private_key=_private_pem(key),
                   changed_at=now)


def _load_private(pem: str) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyringError("the keyring's current key is not an Ed25519 key")
    return key


class Keyring:
    """``Keyring.load(key_path)``; every change is saved before it returns."""

    def __init__(self, key_path: Path, keys: list[RingKey]) -> None:
        self.key_path = key_path
        self.path = ring_path(key_path)
        self.keys = keys
        self._stamp = self._file_stamp()

    @classmethod
    def load(cls, key_path: Path) -> Keyring:
        """Read the ring (or start one from the signing key file, created if missing)."""
        path = ring_path(key_path)
        if not path.exists():
            ring = cls(key_path, [_new_key(load_or_create_signing_key(key_path), "current")])
            ring.save()
            return ring
        try:
            data = msgspec.json.decode(path.read_bytes(), type=_RingFile)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise KeyringError(f"{path}: not a keyring ({exc})",
                               hint="restore it from a backup; a gateway pins these keys") from exc
        ring = cls(key_path, list(data.keys))
        ring.current()  # exactly one, or KeyringError
        ring._mirror()
        return ring

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def reload(self) -> bool:
        """Re-read the file if another process (the CLI) changed it; True if it did."""
        if self._file_stamp() == self._stamp:
            return False
        fresh = Keyring.load(self.key_path)
        changed = fresh.keys != self.keys
        self.keys, self._stamp = fresh.keys, fresh._stamp
        return changed

    def save(self) -> None:
        write_private(self.path, msgspec.json.encode(_RingFile(v=1, keys=self.keys)))
        self._mirror()
        self._stamp = self._file_stamp()

    def _mirror(self) -> None:
        """The signing key file holds the current private key (repaired after a crash)."""
        pem = self.current().private_key
        assert pem is not None
        try:
            same = self.key_path.read_text() == pem
        except FileNotFoundError:
            same = False
        if not same:
            write_private(self.key_path, pem)

    # ---- reading -----------------------------------------------------------------------
    def _in(self, state: KeyState) -> Iterator[RingKey]:
        return (k for k in self.keys if k.state == state)

    def current(self) -> RingKey:
        found = list(self._in("current"))
        if len(found) != 1:
            raise KeyringError(f"{self.path}: {len(found)} current keys, expected one",
                               hint="restore the keyring from a backup")
        return found[0]

    def find(self, state: KeyState) -> RingKey | None:
        return next(self._in(state), None)

    def notices(self) -> list[KeyNotice]:
        """The keyring as bundles announce it (never a private key)."""
        return [KeyNotice(kid=k.kid, state=k.state,
                          public_key=None if k.state == "retired" else k.public_key)
                for k in self.keys]

    def signer(self) -> Signer:
        pem = self.current().private_key
        assert pem is not None
        return Signer(_load_private(pem), self.notices())

    # ---- changes (the CLI) -------------------------------------------------------------
    def _set(self, kid: str, state: KeyState, *, drop_private: bool = False) -> RingKey:
        now = time.time()
        for i, k in enumerate(self.keys):
            if k.kid == kid:
                self.keys[i] = msgspec.structs.replace(
                    k, state=state, changed_at=now,
                    private_key=None if drop_private else k.private_key)
                return self.keys[i]
        raise KeyringError(f"no key {kid} in {self.path}", hint="aislecast hq keys list")

    def add_next(self) -> RingKey:
        """Make the next key; gateways pin it from the next bundle on."""
        pending = self.find("next")
        if pending is not None:
            raise KeyringError(f"key {pending.kid} is already the next key",
                               hint="aislecast hq keys rotate makes it current")
        key = _new_key(Ed25519PrivateKey.generate(), "next")
        self.keys.append(key)
        self.save()
        return key

    def rotate(self) -> tuple[RingKey, RingKey]:
        """The next key signs from now on; the current one becomes previous. Returns both."""
        nxt = self.find("next")
        if nxt is None:
            raise KeyringError("there is no next key to rotate to",
                               hint="aislecast hq keys next, then wait until every gateway "
                                    "pins it (aislecast hq keys list shows how)")
        prev = self.find("previous")
        if prev is not None:
            raise KeyringError(f"key {prev.kid} is still the previous key",
                               hint=f"aislecast hq keys retire {prev.kid} first")
        old = self._set(self.current().kid, "previous")
        new = self._set(nxt.kid, "current")
        self.save()
        return new, old

    def retire(self, kid: str | None = None) -> RingKey:
        """Retire ``kid`` (default: the previous key): its private half is deleted."""
        if kid is None:
            prev = self.find("previous")
            if prev is None:
                raise KeyringError("there is no previous key to retire",
                                   hint="name the key: aislecast hq keys retire KID")
            kid = prev.kid
        if kid == self.current().kid:
            raise KeyringError(f"key {kid} is the current key and signs every bundle",
                               hint="rotate to the next key first (aislecast hq keys rotate)")
        key = next((k for k in self.keys if k.kid == kid), None)
        if key is not None and key.state == "retired":
            return key
        retired = self._set(kid, "retired", drop_private=True)
        self.save()
        return retired
