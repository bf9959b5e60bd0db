"""HQ's private certificate authority (EC P-256, the ``cryptography`` package).

One CA signs the broker's server certificate and the gateways' client certificates;
gateways connect over mutual TLS and the broker takes the certificate's common name as
the MQTT username (``use_identity_as_username``), so a gateway's CN is its broker
username (:func:`aislecast.kernel.acl.gateway_username`). Revocation is a CRL the
broker re-reads on SIGHUP.

Layout of a CA directory: ``ca.key`` (0600), ``ca.crt``, ``ca.crl`` and one
``NAME.key``/``NAME.crt`` pair per issued certificate. Every file is written atomically
and 0600 (:func:`aislecast.kernel.privatefile.write_private`). :func:`init_ca` refuses
to replace an existing CA unless told to: every certificate it signed would stop
verifying.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aislecast.kernel.errors import AislecastError
from aislecast.kernel.privatefile import write_private

__all__ = [
    "CertificateAuthority",
    "IssuedCert",
    "PkiError",
    "build_crl",
    "init_ca",
    "issue_client",
    "issue_server",
    "load_ca",
    "revoked_serials",
]

# The CA outlives many leaf rotations; leaves stay under the 825 days some TLS clients
# (Apple's) accept for server certificates. The CRL is re-signed by HQ well within a week.
_CA_DAYS = 3650
_LEAF_DAYS = 825
_CRL_DAYS = 7
# Clocks of freshly booted Pis lag until NTP: a certificate valid from "now" would be
# refused for a few minutes, so validity starts a little in the past.
_BACKDATE = dt.timedelta(minutes=5)
# File stems and common names: what a gateway username may hold (gw.store.gateway),
# no path separators; X.509 caps a CN at 64 characters.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class PkiError(AislecastError):
    """A CA or certificate file could not be created or read: ``path`` says which."""

    def __init__(self, path: Path, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{path}: {message}", hint=hint)
        self.path = path


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    directory: Path
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_path(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def key_path(self) -> Path:
        return self.directory / "ca.key"

    @property
    def crl_path(self) -> Path:
        return self.directory / "ca.crl"


@dataclass(frozen=True, slots=True)
class IssuedCert:
    cert: x509.Certificate
    cert_path: Path
    key_path: Path

    @property
    def serial(self) -> int:
        return self.cert.serial_number


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _check_name(name: str, what: str) -> str:
    if not _NAME.fullmatch(name):
        raise PkiError(Path(name), f"{what} {name!r} is not a valid name",
                       hint="use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def init_ca(directory: Path, *, common_name: str = "aislecast private CA",
            overwrite: bool = False) -> CertificateAuthority:
    """Create a CA key and self-signed certificate in ``directory``.

    Refuses (:class:`PkiError`) when ``ca.key`` or ``ca.crt`` exists, unless ``overwrite``.
    """
    if not overwrite:
        for existing in (directory / "ca.key", directory / "ca.crt"):
            if existing.exists():
                raise PkiError(existing, "a CA already exists here",
                               hint="replacing it invalidates every certificate it signed; "
                                    "pass overwrite=True only if that is what you want")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE).not_valid_after(now + dt.timedelta(days=_CA_DAYS))
        # path_length=0: this CA signs leaves only, never another CA
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    ca = CertificateAuthority(directory, key, cert)
    write_private(ca.key_path, _key_pem(key))
    write_private(ca.cert_path, _cert_pem(cert))
    return ca


def load_ca(directory: Path) -> CertificateAuthority:
    """Read the CA made by :func:`init_ca`; :class:`PkiError` names the missing or bad file."""
    key_path, cert_path = directory / "ca.key", directory / "ca.crt"
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError:
        raise PkiError(key_path, "no CA key", hint="create the CA first (init_ca)") from None
    except ValueError as exc:
        raise PkiError(key_path, f"not a PEM private key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(key_path, "the CA key is not an EC key")
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except FileNotFoundError:
        raise PkiError(cert_path, "no CA certificate", hint="create the CA first (init_ca)") from None
    except ValueError as exc:
        raise PkiError(cert_path, f"not a PEM certificate ({exc})") from exc
    return CertificateAuthority(directory, key, cert)


def _issue(ca: CertificateAuthority, common_name: str, extensions: list[x509.ExtensionType],
           out_dir: Path | None, lifetime: dt.timedelta = dt.timedelta(days=_LEAF_DAYS),
           ) -> IssuedCert:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE).not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                       critical=False)
    )
    for ext in extensions:
        builder = builder.add_extension(ext, critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    where = out_dir or ca.directory
    issued = IssuedCert(cert, where / f"{common_name}.crt", where / f"{common_name}.key")
    write_private(issued.key_path, _key_pem(key))
    write_private(issued.cert_path, _cert_pem(cert))
    return issued


def issue_server(ca: CertificateAuthority, hosts: Sequence[str], *, stem: str = "server",
                 out_dir: Path | None = None) -> IssuedCert:
    """A broker (or HQ HTTPS) certificate for ``hosts``: DNS names and IP addresses.

    Each host that parses as an IP address becomes an IP SAN, the others DNS SANs; the
    files are ``{stem}.crt``/``{stem}.key`` in ``out_dir`` (default: the CA directory).
    """
    if not hosts:
        raise PkiError(Path(stem), "a server certificate needs at least one host name or address",
                       hint="for a broker on this machine: ['localhost', '127.0.0.1']")
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    return _issue(ca, _check_name(stem, "file stem"), [
        x509.SubjectAlternativeName(sans),
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
    ], out_dir)


def issue_client(ca: CertificateAuthority, common_name: str, *,
                 out_dir: Path | None = None, lifetime: dt.timedelta | None = None) -> IssuedCert:
    """A client certificate whose CN is the broker username (a gateway's ``gw.S.G``).

    The name is repeated as a DNS SAN: Mosquitto reads the CN, but RFC 5280 path
    validators (cryptography's, rustls') want the identity in the SAN. ``lifetime``
    (default: 825 days) shortens it for a throw-away certificate.
    """
    name = _check_name(common_name, "common name")
    return _issue(ca, name, [x509.SubjectAlternativeName([x509.DNSName(name)]),
                             x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])], out_dir,
                  lifetime or dt.timedelta(days=_LEAF_DAYS))


def revoked_serials(path: Path) -> set[int]:
    """The serials a CRL file lists; an empty set when there is no file yet."""
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
    except FileNotFoundError:
        return set()
    except ValueError as exc:
        raise PkiError(path, f"not a PEM CRL ({exc})") from exc
    return {r.serial_number for r in crl}


def build_crl(ca: CertificateAuthority, revoked: Iterable[int], *,
              path: Path | None = None) -> Path:
    """Sign a CRL listing the ``revoked`` serials; written to ``path`` (default ``ca.crl``).

    The broker reads it at start and on SIGHUP; it must be re-signed before it expires
    (a week), or OpenSSL refuses every client certificate.
    """
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - _BACKDATE).next_update(now + dt.timedelta(days=_CRL_DAYS))
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                       critical=False)
    )
    for serial in sorted(set(revoked)):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
    crl = builder.sign(ca.key, hashes.SHA256())
    target = path or ca.crl_path
    write_private(target, crl.public_bytes(serialization.Encoding.PEM))
    return target
