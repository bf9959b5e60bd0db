"""Ed25519 signing of canonical JSON bundles and deltas (docs/architecture.md#bundles-and-sync).

HQ signs with its current private key; gateways pin one or more public keys (several
during a key rotation, see hq.keyring) and verify before they parse anything further,
with :mod:`aislecast.kernel.verify` (PyNaCl: a gateway never loads this module's
``cryptography``). Canonical JSON here is msgspec's encoding with sorted keys.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from aislecast.kernel.errors import BundleError
from aislecast.kernel.schema import SCHEMA_VERSION, KeyNotice, SignedEnvelope, encode
from aislecast.kernel.verify import key_id

__all__ = [
    "Signer",
    "canonical_json",
    "load_or_create_signing_key",
    "public_key_id",
    "public_key_pem",
    "raw_public",
]


def canonical_json(obj: msgspec.Struct) -> bytes:
    return msgspec.json.encode(obj, order="sorted")


def raw_public(pub: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of ``pub``: what :class:`aislecast.kernel.verify.Verifier` pins."""
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_id(pub: Ed25519PublicKey) -> str:
    """``pub``'s key id (:func:`aislecast.kernel.verify.key_id` of its raw bytes)."""
    return key_id(raw_public(pub))


def public_key_pem(pub: Ed25519PublicKey) -> str:
    return pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """Load HQ's private key from ``path`` (PEM), creating it with mode 0600 if absent."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise BundleError("malformed", f"{path} does not hold an Ed25519 private key")
        return key
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return key


class Signer:
    """Signs with ``key``; ``notices`` is HQ's keyring as bundles announce it."""

    def __init__(self, key: Ed25519PrivateKey, notices: Sequence[KeyNotice] = ()) -> None:
        self._key = key
        self.public_key = key.public_key()
        self.public_raw = raw_public(self.public_key)  # what a Verifier pins
        self.kid = key_id(self.public_raw)
        self.notices = tuple(notices)

    def sign(self, kind: Literal["bundle", "delta"], body: msgspec.Struct) -> bytes:
        raw = canonical_json(body)
        env = SignedEnvelope(
            v=SCHEMA_VERSION,
            kind=kind,
            kid=self.kid,
            body=base64.b64encode(raw).decode(),
            sig=base64.b64encode(self._key.sign(raw)).decode(),
        )
        return encode(env)
