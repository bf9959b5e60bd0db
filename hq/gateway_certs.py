"""Gateways' client certificates: issued from HQ's CA, revoked through the CRL.

A gateway on the broker's mutual-TLS listener logs in with a certificate whose CN is its
broker username (``gw.{store}.{gateway}``; the listener has ``use_identity_as_username``),
so the ACL block HQ renders for that username applies to it. :func:`issue_gateway_cert`
writes the key (0600), the certificate and HQ's CA certificate for the gateway, and keeps
a copy of the certificate (public) under ``CA/issued/`` so that a revocation finds
every serial ever issued to that name.

Revocation has two halves. :func:`revoke_gateway_certs` adds those serials to the CRL,
which the broker re-reads on SIGHUP: new handshakes are refused from then on. But
Mosquitto 2.0.11 does not re-check the certificate of a connection that is already open
(measured in tests/test_broker_tls.py: the session stays, its ACL gone), so
:func:`end_gateway_session` then takes the client id over with a throw-away certificate
of the same CN and a clean start: the broker closes the old connection and drops its
session, and the gateway's reconnects meet the CRL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiomqtt
from cryptography import x509

from aislecast.kernel.privatefile import write_private
from hq.pki import (
    CertificateAuthority,
    IssuedCert,
    build_crl,
    issue_client,
    revoked_serials,
)

__all__ = [
    "GatewayTlsFiles",
    "SessionEnder",
    "end_gateway_session",
    "ensure_crl",
    "issue_gateway_cert",
    "issued_serials",
    "revoke_gateway_certs",
    "throwaway_certs",
]

# The take-over and probe certificates live minutes (their keys only in a temp dir that
# is deleted at once); a CRL reload is seen within this long or the probe gives up.
_THROWAWAY: Final = dt.timedelta(minutes=10)
_RELOAD_TIMEOUT_S: Final = 10.0
_PROBE_CONNECT_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class GatewayTlsFiles:
    """What a gateway's ``[broker]`` section points at: ``tls_ca``, ``tls_cert``, ``tls_key``."""

    ca: Path
    cert: Path
    key: Path
    serial: int


def _issued_dir(ca: CertificateAuthority) -> Path:
    return ca.directory / "issued"


def issue_gateway_cert(ca: CertificateAuthority, username: str, out_dir: Path) -> GatewayTlsFiles:
    """A client certificate for ``username`` in ``out_dir``: ``{username}.key`` (0600),
    ``{username}.crt`` and ``{username}.ca.crt`` (HQ's CA, to verify the broker)."""
    issued = issue_client(ca, username, out_dir=out_dir)
    ca_copy = out_dir / f"{username}.ca.crt"
    write_private(ca_copy, ca.cert_path.read_bytes())
    write_private(_issued_dir(ca) / f"{username}.{issued.serial:x}.crt", issued.cert_path.read_bytes())
    return GatewayTlsFiles(ca_copy, issued.cert_path, issued.key_path, issued.serial)


def issued_serials(ca: CertificateAuthority, username: str) -> set[int]:
    """The serials of every certificate :func:`issue_gateway_cert` issued to ``username``."""
    out: set[int] = set()
    for path in _issued_dir(ca).glob(f"{username}.*.crt"):
        if path.name.removesuffix(".crt").rpartition(".")[0] == username:
            out.add(x509.load_pem_x509_certificate(path.read_bytes()).serial_number)
    return out


def revoke_gateway_certs(ca: CertificateAuthority, username: str, *, crl_copies: Iterable[Path] = (),
                         also: Iterable[int] = ()) -> set[int]:
    """Add every certificate issued to ``username`` (and the serials ``also``) to the
    CA's CRL, written to ``ca.crl`` and to each of ``crl_copies`` (the broker's
    ``crlfile``); returns the serials of ``username`` that it lists."""
    mine = issued_serials(ca, username)
    listed = revoked_serials(ca.crl_path) | mine | set(also)
    build_crl(ca, listed)
    for copy in crl_copies:
        write_private(copy, ca.crl_path.read_bytes())
    return mine


def ensure_crl(ca: CertificateAuthority, path: Path) -> None:
    """Write the CA's current CRL to ``path`` if it is missing there (the broker refuses
    to start with a ``crlfile`` that does not exist)."""
    if path.exists():
        return
    build_crl(ca, revoked_serials(ca.crl_path))
    write_private(path, ca.crl_path.read_bytes())


def _client(host: str, port: int, cafile: Path, cert: IssuedCert, *, client_id: str,
            timeout: float) -> aiomqtt.Client:
    return aiomqtt.Client(
        host, port, identifier=client_id, protocol=aiomqtt.ProtocolVersion.V5, clean_start=True,
        tls_params=aiomqtt.TLSParameters(ca_certs=str(cafile), certfile=str(cert.cert_path),
                                         keyfile=str(cert.key_path)), timeout=timeout)


@dataclass(frozen=True, slots=True)
class SessionEnder:
    """Throw-away certificates for one revocation: ``probe.serial`` goes into the CRL
    with the gateway's (its refusal shows the reload took effect), ``takeover`` has the
    gateway's CN and is not revoked."""

    probe: IssuedCert
    takeover: IssuedCert


def throwaway_certs(ca: CertificateAuthority, username: str, directory: Path) -> SessionEnder:
    probe = issue_client(ca, f"probe.{secrets.token_hex(6)}", out_dir=directory / "p",
                         lifetime=_THROWAWAY)
    takeover = issue_client(ca, username, out_dir=directory / "t", lifetime=_THROWAWAY)
    return SessionEnder(probe, takeover)


async def end_gateway_session(ender: SessionEnder, username: str, host: str, port: int,
                              cafile: Path) -> float:
    """Once the broker has reloaded the CRL (the probe is refused), take ``username``'s
    client id over with a clean start and leave: its open session, if any, is closed and
    dropped. Returns the seconds the reload took to show; TimeoutError if it never does."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with asyncio.timeout(_RELOAD_TIMEOUT_S):
        while True:
            try:
                async with _client(host, port, cafile, ender.probe, client_id=ender.probe.cert_path.stem,
                                   timeout=_PROBE_CONNECT_S):
                    pass
            except aiomqtt.MqttError:  # refused: the broker has the new CRL
                break
            await asyncio.sleep(0.05)
    waited = loop.time() - t0
    async with _client(host, port, cafile, ender.takeover, client_id=username, timeout=10):
        pass
    return waited

