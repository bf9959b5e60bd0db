"""Ed25519 signing of canonical JSON bundles and deltas (docs/architecture.md#bundles-and-sync).

HQ signs with its current private key; gateways pin one or more public keys (several
during a key rotation, see hq.keyring) and verify before they parse anything further.
Canonical JSON here is msgspec's encoding with sorted keys.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from aislecast.kernel.errors import BundleError
from aislecast.kernel.schema import SCHEMA_VERSION, KeyNotice, SignedEnvelope, decode, encode

__all__ = [
    "Signer",
    "Verifier",
    "canonical_json",
    "key_id",
    "load_or_create_signing_key",
    "public_key_from_pem",
    "public_key_pem",
]


def canonical_json(obj: msgspec.Struct) -> bytes:
    return msgspec.json.encode(obj, order="sorted")


def _raw_public(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(pub: Ed25519PublicKey) -> str:
    """Short fingerprint of a public key (first 8 bytes of SHA-256, hex)."""
    return hashlib.sha256(_raw_public(pub)).hexdigest()[:16]


def public_key_pem(pub: Ed25519PublicKey) -> str:
    return pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def public_key_from_pem(pem: str | bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError("malformed", "the pinned HQ key is not an Ed25519 public key")
    return key


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
        self.kid = key_id(self.public_key)
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


class Verifier:
    """Verify envelopes against the pinned public keys; every failure is a BundleError.

    The set changes during a key rotation (:meth:`pin`, :meth:`unpin`); an envelope
    whose key id is not pinned is refused as ``unknown_key`` before any signature check.
    """

    def __init__(self, *public_keys: Ed25519PublicKey) -> None:
        self._pubs: dict[str, Ed25519PublicKey] = {}
        for pub in public_keys:
            self.pin(pub)

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._pubs)

    def pin(self, pub: Ed25519PublicKey) -> bool:
        """Accept envelopes signed by ``pub``; False if it was pinned already."""
        kid = key_id(pub)
        if kid in self._pubs:
            return False
        self._pubs[kid] = pub
        return True

    def unpin(self, kid: str) -> bool:
        """Refuse envelopes signed by key ``kid`` from now on; False if it was not pinned."""
        return self._pubs.pop(kid, None) is not None

    def open(self, payload: bytes, kind: Literal["bundle", "delta"]) -> bytes:
        """Return the verified canonical body bytes of an envelope of ``kind``."""
        try:
            env = decode(payload, SignedEnvelope)
            raw = base64.b64decode(env.body, validate=True)
            sig = base64.b64decode(env.sig, validate=True)
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
            raise BundleError("malformed", f"not a signed envelope: {exc}") from exc
        if env.kind != kind:
            raise BundleError("malformed", f"expected a {kind} envelope, got {env.kind}")
        pub = self._pubs.get(env.kid)
        if pub is None:
            raise BundleError("unknown_key", f"signed by key {env.kid}, which is not pinned "
                              f"(pinned: {', '.join(sorted(self._pubs)) or 'none'})")
        try:
            pub.verify(sig, raw)
        except InvalidSignature as exc:
            raise BundleError("forged", "signature does not verify") from exc
        return raw
