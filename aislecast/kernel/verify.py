"""Checking HQ's Ed25519 signatures on envelopes (docs/architecture.md#bundles-and-sync).

A gateway only ever verifies, so this side uses PyNaCl (libsodium) and not
``cryptography``, which :mod:`aislecast.kernel.signing` keeps for HQ's key files and
signing: measured in ``aislecast gateway run``, ``cryptography``'s Rust extension (with
its own copy of OpenSSL) and Python modules are ~10 MiB resident, PyNaCl ~1 MiB. Both
implement RFC 8032, so what HQ signs with one verifies with the other (tested).

The pinned key is read from the PEM that HQ writes: a SubjectPublicKeyInfo, which for
Ed25519 is always the same 12 bytes (the algorithm identifier, RFC 8410 section 4, no
parameters) followed by the 32-byte key. Anything else is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Final, Literal

import msgspec
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from aislecast.kernel.errors import BundleError
from aislecast.kernel.schema import SignedEnvelope, decode

__all__ = ["Verifier", "key_id", "public_key_from_pem"]

_SPKI_ED25519_PREFIX: Final = bytes.fromhex("302a300506032b6570032100")
_KEY_LEN: Final = 32
_SIG_LEN: Final = 64
_PEM_BEGIN: Final = "-----BEGIN PUBLIC KEY-----"
_PEM_END: Final = "-----END PUBLIC KEY-----"
_FIX: Final = "set hq_public_key to HQ's bundle key (GET /api/keys/bundle on HQ)"


def key_id(raw_public: bytes) -> str:
    """Short fingerprint of a raw 32-byte public key (first 8 bytes of SHA-256, hex)."""
    return hashlib.sha256(raw_public).hexdigest()[:16]


def public_key_from_pem(pem: str | bytes) -> bytes:
    """The raw 32-byte Ed25519 key of a PEM public key; BundleError for anything else."""
    text = pem.decode("ascii", errors="replace") if isinstance(pem, bytes) else pem
    begin, end = text.find(_PEM_BEGIN), text.find(_PEM_END)
    if begin < 0 or end < begin:
        raise BundleError("malformed", "the pinned HQ key is not a PEM public key "
                                       f"({_PEM_BEGIN} ... {_PEM_END}): {_FIX}")
    try:
        der = base64.b64decode("".join(text[begin + len(_PEM_BEGIN):end].split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BundleError("malformed", f"the pinned HQ key's PEM body is not base64 ({exc}): {_FIX}") from exc
    if len(der) != len(_SPKI_ED25519_PREFIX) + _KEY_LEN or not der.startswith(_SPKI_ED25519_PREFIX):
        raise BundleError("malformed", f"the pinned HQ key is not an Ed25519 public key: {_FIX}")
    return der[len(_SPKI_ED25519_PREFIX):]


class Verifier:
    """Verify envelopes against the pinned public keys (raw 32 bytes each); every failure
    is a BundleError.

    The set changes during a key rotation (:meth:`pin`, :meth:`unpin`); an envelope
    whose key id is not pinned is refused as ``unknown_key`` before any signature check.
    """

    def __init__(self, *raw_publics: bytes) -> None:
        self._keys: dict[str, VerifyKey] = {}
        for raw in raw_publics:
            self.pin(raw)

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def pin(self, raw_public: bytes) -> bool:
        """Accept envelopes signed by this key; False if it was pinned already."""
        if len(raw_public) != _KEY_LEN:
            raise BundleError("malformed", f"an Ed25519 public key is {_KEY_LEN} bytes, "
                                           f"got {len(raw_public)}")
        kid = key_id(raw_public)
        if kid in self._keys:
            return False
        self._keys[kid] = VerifyKey(raw_public)
        return True

    def unpin(self, kid: str) -> bool:
        """Refuse envelopes signed by key ``kid`` from now on; False if it was not pinned."""
        return self._keys.pop(kid, None) is not None

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
        key = self._keys.get(env.kid)
        if key is None:
            raise BundleError("unknown_key", f"signed by key {env.kid}, which is not pinned "
                              f"(pinned: {', '.join(sorted(self._keys)) or 'none'})")
        if len(sig) != _SIG_LEN:
            raise BundleError("forged", f"signature is {len(sig)} bytes, not {_SIG_LEN}")
        try:
            key.verify(raw, sig)
        except BadSignatureError as exc:
            raise BundleError("forged", "signature does not verify") from exc
        return raw
