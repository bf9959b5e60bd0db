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
    """Verify envelopes against one pinned public key; every failure is a BundleError."""

    def __init__(self, raw_public: bytes) -> None:
        if len(raw_public) != _KEY_LEN:
            raise BundleError("malformed", f"an Ed25519 public key is {_KEY_LEN} bytes, "
                                           f"got {len(raw_public)}")
        self._key = VerifyKey(raw_public)
        self.kid = key_id(raw_public)

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
        if env.kid != self.kid:
            raise BundleError("forged", f"signed by unknown key {env.kid}, pinned {self.kid}")
        if len(sig) != _SIG_LEN:
            raise BundleError("forged", f"signature is {len(sig)} bytes, not {_SIG_LEN}")
        try:
            self._key.verify(raw, sig)
        except BadSignatureError as exc:
            raise BundleError("forged", "signature does not verify") from exc
        return raw
