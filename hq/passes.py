"""Wallet passes: an Apple Wallet ``.pkpass`` and a Google Wallet loyalty object.

Both carry the shopper's member id (:func:`hq.till.member_of`) as a QR code, so the till
reads the pass like the web wallet's member QR. The Apple pass also lists the iBeacons
of the shopper's home stores (every store when they chose none; at most
:data:`MAX_BEACONS`), so iOS shows it on the lock screen near the shelf, and the same
stores' positions (those that have ``latitude``/``longitude``; at most
:data:`MAX_LOCATIONS`) under ``locations``, so it shows near the store too. The Google
object carries those positions as ``merchantLocations`` (Google's ``locations`` field is
deprecated and triggers nothing).

A ``.pkpass`` is a zip of ``pass.json``, two PNGs, ``manifest.json`` (the SHA-1 of every
other file, as Apple specifies) and ``signature``: a detached PKCS#7 signature of
``manifest.json`` with the pass type certificate, carrying Apple's WWDR intermediate
(built with ``cryptography``'s :class:`~cryptography.hazmat.primitives.serialization.
pkcs7.PKCS7SignatureBuilder`). The Google object is the REST resource
(``loyaltyObject``) HQ's operator inserts with their own service account; HQ signs no
Google JWT.

The serial number is derived from the member id (which the barcode shows anyway),
never the inbox.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Final

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from msgspec import Meta
from PIL import Image

from aislecast.kernel.errors import ConfigError
from aislecast.kernel.schema import Beacon, Store

__all__ = [
    "MAX_BEACONS",
    "MAX_LOCATIONS",
    "PKPASS_TYPE",
    "ApplePassSigner",
    "PassSettings",
    "PassSubject",
    "apple_pass_json",
    "build_pkpass",
    "check_passes",
    "google_loyalty_object",
    "serial_of",
]

MAX_BEACONS: Final = 10  # Apple reads at most ten beacons per pass
MAX_LOCATIONS: Final = 10  # Apple reads at most ten locations; Google takes ten merchantLocations
PKPASS_TYPE: Final = "application/vnd.apple.pkpass"
_BRAND: Final = (31, 94, 160)  # the console's blue


class PassSettings(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """``[passes]``: the Apple pass type certificate and the Google Wallet issuer."""

    apple_cert: str | None = None  # the pass type certificate (PEM)
    apple_key: str | None = None  # its private key (PEM, unencrypted, 0600)
    apple_wwdr: str | None = None  # Apple's WWDR intermediate certificate (PEM)
    pass_type_id: Annotated[str, Meta(pattern=r"^pass\.[A-Za-z0-9.-]{1,120}\Z", description=(
        'the pass type identifier, e.g. "pass.com.example.aislecast"'))] | None = None
    team_id: Annotated[str, Meta(pattern=r"^[A-Z0-9]{10}\Z", description=(
        "the Apple developer team id: 10 capital letters or digits"))] | None = None
    organization: Annotated[str, Meta(min_length=1, max_length=64)] = "aislecast"
    google_issuer_id: Annotated[str, Meta(pattern=r"^[0-9]{1,25}\Z", description=(
        "the Google Wallet issuer id (digits)"))] | None = None
    google_class_suffix: Annotated[str, Meta(pattern=r"^[A-Za-z0-9._-]{1,64}\Z", description=(
        "the loyalty class id after ISSUER. (letters, digits, '.', '_', '-')"))] = "loyalty"

    def apple_missing(self) -> list[str]:
        """The Apple settings not set (empty: Apple passes are configured)."""
        return [f"passes.{k}" for k in ("apple_cert", "apple_key", "apple_wwdr",
                                        "pass_type_id", "team_id") if getattr(self, k) is None]


@dataclass(frozen=True)
class PassSubject:
    """What one shopper's pass shows: their member id and their stores' beacons."""

    member: str
    stores: list[tuple[Store, list[Beacon]]]


def serial_of(member: str) -> str:
    """The pass serial: a hash of the member id, so a pass names no inbox."""
    return hashlib.sha256(b"aislecast pass\0" + member.encode()).hexdigest()[:24]


def _ibeacons(subject: PassSubject) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for store, beacons in subject.stores:
        for b in beacons:
            if b.uuid is None or len(out) >= MAX_BEACONS:
                continue
            entry: dict[str, Any] = {"proximityUUID": b.uuid.upper(),
                                     "relevantText": f"Your offers at {store.name}"}
            if b.major is not None:
                entry["major"] = b.major
                if b.minor is not None:
                    entry["minor"] = b.minor
            out.append(entry)
    return out


def _positions(subject: PassSubject) -> list[tuple[Store, float, float]]:
    """The subject's stores that have a position, with it (at most :data:`MAX_LOCATIONS`)."""
    return [(store, store.latitude, store.longitude) for store, _ in subject.stores
            if store.latitude is not None and store.longitude is not None][:MAX_LOCATIONS]


def apple_pass_json(s: PassSettings, subject: PassSubject) -> dict[str, Any]:
    """``pass.json``: a store card with the member QR, the stores' beacons and positions."""
    assert s.pass_type_id is not None and s.team_id is not None, "apple_missing() is empty"
    body: dict[str, Any] = {
        "formatVersion": 1, "passTypeIdentifier": s.pass_type_id,
        "serialNumber": serial_of(subject.member), "teamIdentifier": s.team_id,
        "organizationName": s.organization, "description": f"{s.organization} member card",
        "logoText": s.organization,
        "barcodes": [{"format": "PKBarcodeFormatQR", "message": subject.member,
                      "messageEncoding": "iso-8859-1", "altText": subject.member}],
        "storeCard": {"primaryFields": [
            {"key": "member", "label": "Member", "value": subject.member}]},
    }
    if beacons := _ibeacons(subject):
        body["beacons"] = beacons
    if positions := _positions(subject):
        body["locations"] = [{"latitude": lat, "longitude": lon,
                              "relevantText": f"{store.name}: your offers are here"}
                             for store, lat, lon in positions]
    return body


@cache
def _png(size: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), _BRAND).save(buf, format="PNG")
    return buf.getvalue()


class ApplePassSigner:
    """The pass type certificate, its key and the WWDR intermediate, loaded once."""

    def __init__(self, cert: x509.Certificate, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
                 wwdr: x509.Certificate) -> None:
        self.cert, self.key, self.wwdr = cert, key, wwdr

    @classmethod
    def load(cls, s: PassSettings, file: str | None = None) -> ApplePassSigner:
        """From the PEM files ``s`` names; a bad one is a :class:`ConfigError`."""
        assert s.apple_cert and s.apple_key and s.apple_wwdr, "apple_missing() is empty"
        cert = _cert("passes.apple_cert", s.apple_cert, file)
        wwdr = _cert("passes.apple_wwdr", s.apple_wwdr, file)
        try:
            key = serialization.load_pem_private_key(Path(s.apple_key).read_bytes(), None)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError("passes.apple_key", f"cannot be read as an unencrypted PEM key "
                              f"({exc})", file=file, hint="export the pass certificate's key "
                              "without a passphrase (openssl pkcs12 -nocerts -nodes)") from None
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ConfigError("passes.apple_key", "is neither an RSA nor an EC key", file=file,
                              hint="use the key the pass type certificate was issued for")
        if cert.public_key() != key.public_key():
            raise ConfigError("passes.apple_key", "is not the key of passes.apple_cert",
                              file=file, hint="give the certificate and key issued together")
        return cls(cert, key, wwdr)

    def sign(self, manifest: bytes) -> bytes:
        """The detached DER PKCS#7 signature of ``manifest`` (with the WWDR certificate)."""
        return (pkcs7.PKCS7SignatureBuilder().set_data(manifest)
                .add_signer(self.cert, self.key, hashes.SHA256()).add_certificate(self.wwdr)
                .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature,
                                                   pkcs7.PKCS7Options.Binary]))


def _cert(field: str, path: str, file: str | None) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(field, f"cannot be read as a PEM certificate ({exc})", file=file,
                          hint="convert it with: openssl x509 -inform DER -in FILE.cer "
                               "-out FILE.pem") from None


def build_pkpass(s: PassSettings, signer: ApplePassSigner, subject: PassSubject) -> bytes:
    """The ``.pkpass`` zip for ``subject``."""
    files = {"pass.json": json.dumps(apple_pass_json(s, subject), indent=1).encode(),
             "icon.png": _png(29), "icon@2x.png": _png(58), "logo.png": _png(50)}
    manifest = json.dumps({n: hashlib.sha1(b).hexdigest() for n, b in files.items()},  # noqa: S324
                          indent=1, sort_keys=True).encode()  # Apple's manifest is SHA-1
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in {**files, "manifest.json": manifest,
                           "signature": signer.sign(manifest)}.items():
            z.writestr(name, data)
    return buf.getvalue()


def google_loyalty_object(s: PassSettings, subject: PassSubject) -> dict[str, Any]:
    """The Google Wallet ``loyaltyObject`` resource for ``subject`` (not inserted)."""
    assert s.google_issuer_id is not None, "checked by the caller"
    body: dict[str, Any] = {
        "id": f"{s.google_issuer_id}.{serial_of(subject.member)}",
        "classId": f"{s.google_issuer_id}.{s.google_class_suffix}", "state": "ACTIVE",
        "accountId": subject.member, "accountName": f"{s.organization} member",
        "barcode": {"type": "QR_CODE", "value": subject.member, "alternateText": subject.member}}
    if positions := _positions(subject):
        body["merchantLocations"] = [{"latitude": lat, "longitude": lon}
                                     for _, lat, lon in positions]
    return body


def check_passes(s: PassSettings, file: str | None) -> None:
    """Apple settings all or none, and their files loadable (one line each, at start)."""
    missing = s.apple_missing()
    if len(missing) < 5 and missing:
        raise ConfigError(missing[0], "is missing while other passes.apple_* settings are set",
                          file=file, hint="set apple_cert, apple_key, apple_wwdr, pass_type_id "
                                          "and team_id together, or none of them")
    if not missing:
        ApplePassSigner.load(s, file)
