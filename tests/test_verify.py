"""The gateway's verifier (PyNaCl) accepts exactly what HQ's signer (cryptography) signed.

HQ signs with ``cryptography`` and writes its public key as PEM; the gateway reads that
PEM without ``cryptography`` and checks signatures with libsodium. A signature by the
pinned key verifies; a changed body, a changed or truncated signature, another key
(announced as itself or as the pinned key) and envelopes of the wrong kind are refused
with the reason the gateway counts. PEM that is not an Ed25519 public key is refused.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aislecast.kernel.errors import BundleError
from aislecast.kernel.schema import SignedEnvelope, Store, decode, encode
from aislecast.kernel.signing import Signer, public_key_pem
from aislecast.kernel.verify import Verifier, key_id, public_key_from_pem


def _pinned(signer: Signer) -> Verifier:
    return Verifier(public_key_from_pem(public_key_pem(signer.public_key)))


def _reason(verifier: Verifier, payload: bytes, kind: str = "bundle") -> str:
    with pytest.raises(BundleError) as err:
        verifier.open(payload, kind)  # type: ignore[arg-type]
    return err.value.reason


def _tweak(payload: bytes, **fields: str) -> bytes:
    return encode(msgspec.structs.replace(decode(payload, SignedEnvelope), **fields))


def test_what_hq_signs_verifies_from_its_pem() -> None:
    signer = Signer(Ed25519PrivateKey.generate())
    verifier = _pinned(signer)
    body = Store(id="s1", name="Main street")
    raw = verifier.open(signer.sign("delta", body), "delta")
    assert decode(raw, Store) == body
    assert verifier.kids == {signer.kid} and signer.kid == key_id(signer.public_raw)
    assert public_key_from_pem(public_key_pem(signer.public_key).encode()) == signer.public_raw


def test_tampering_and_other_keys_are_refused() -> None:
    signer = Signer(Ed25519PrivateKey.generate())
    verifier = _pinned(signer)
    good = signer.sign("bundle", Store(id="s1", name="x"))
    env = decode(good, SignedEnvelope)
    other = Store(id="s1", name="y")
    other_body = base64.b64encode(msgspec.json.encode(other, order="sorted")).decode()
    sig = base64.b64decode(env.sig)
    flipped = base64.b64encode(bytes([sig[0] ^ 1]) + sig[1:]).decode()
    impostor = Signer(Ed25519PrivateKey.generate())
    posing = _tweak(impostor.sign("bundle", Store(id="s1", name="x")), kid=signer.kid)

    assert verifier.open(good, "bundle")  # the witness: the same verifier accepts the original
    assert _reason(verifier, _tweak(good, body=other_body)) == "forged"
    assert _reason(verifier, _tweak(good, sig=flipped)) == "forged"
    assert _reason(verifier, _tweak(good, sig=base64.b64encode(sig[:63]).decode())) == "forged"
    assert _reason(verifier, impostor.sign("bundle", Store(id="s1", name="x"))) == "unknown_key"
    assert _reason(verifier, posing) == "forged"
    assert _reason(verifier, good, "delta") == "malformed"
    assert _reason(verifier, b"{not json") == "malformed"
    assert _reason(verifier, _tweak(good, sig="***")) == "malformed"


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize("pem", [
    pytest.param(lambda: _pem(rsa.generate_private_key(65537, 2048)), id="rsa"),
    pytest.param(lambda: _pem(ec.generate_private_key(ec.SECP256R1())), id="p-256"),
    pytest.param(lambda: Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()), id="private-key"),
    pytest.param(lambda: b"-----BEGIN PUBLIC KEY-----\n%%%%\n-----END PUBLIC KEY-----\n", id="not-base64"),
    pytest.param(lambda: b"", id="empty"),
])
def test_pem_that_is_not_an_ed25519_public_key_is_refused(pem: object) -> None:
    assert callable(pem)
    with pytest.raises(BundleError) as err:
        public_key_from_pem(pem())
    assert err.value.reason == "malformed"
    assert "set hq_public_key to HQ's bundle key" in str(err.value)  # the fix, in one line


def test_a_raw_key_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(BundleError, match="32 bytes, got 31"):
        Verifier(bytes(31))


def test_a_gateway_process_does_not_load_cryptography(tmp_path: Path) -> None:
    """The point of this module: the gateway's whole import graph stays off it."""
    probe = ("import json, sys, aislecast.apps.cmd_gateway, gateway.parts; "
             "print(json.dumps([m for m in sys.modules if m.split('.')[0] in ('cryptography', 'nacl')]))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         cwd=tmp_path).stdout
    loaded = json.loads(out)
    assert "nacl.signing" in loaded
    assert not [m for m in loaded if m.startswith("cryptography")]
