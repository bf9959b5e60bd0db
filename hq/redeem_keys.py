"""HQ's redemption master secret, and the per-store keys derived from it.

One file of 64 hex digits, 0600, beside the bundle-signing key (``hq-signing.pem`` ->
``hq-signing.redeem.key``), made on first start. A store's key
(:func:`aislecast.kernel.redeem.store_key`) rides in that store's signed bundle, which
the broker lets only that store's gateways read; HQ derives every store's key when it
verifies a code. Losing the file voids every code not yet redeemed; replacing it (delete
it and restart HQ, then republish bundles) is how a leaked master is rotated.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from aislecast.kernel.errors import ConfigError
from aislecast.kernel.privatefile import write_private
from aislecast.kernel.redeem import store_key

__all__ = ["RedeemKeys", "redeem_key_path"]


def redeem_key_path(key_path: Path) -> Path:
    return key_path.with_name(f"{key_path.stem}.redeem.key")


class RedeemKeys:
    def __init__(self, master: bytes) -> None:
        self._master = master
        self._keys: dict[str, bytes] = {}

    @classmethod
    def load(cls, key_path: Path) -> RedeemKeys:
        """The master beside ``key_path`` (the signing key), created when missing."""
        path = redeem_key_path(key_path)
        if not path.exists():
            write_private(path, secrets.token_hex(32) + "\n")
        try:
            master = bytes.fromhex(path.read_text(encoding="ascii").strip())
        except (OSError, ValueError, UnicodeDecodeError):
            master = b""
        if len(master) != 32:
            raise ConfigError("redeem key", f"{path} does not hold 64 hex digits",
                              hint="delete it to make a new one (codes not yet redeemed are lost)")
        return cls(master)

    def of(self, store: str) -> bytes:
        key = self._keys.get(store)
        if key is None:
            key = self._keys[store] = store_key(self._master, store)
        return key

    def hex_of(self, store: str) -> str:
        return self.of(store).hex()

    def __repr__(self) -> str:  # never the secret
        return f"RedeemKeys(stores={len(self._keys)})"
