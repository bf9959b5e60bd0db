"""HQ's private CA: certificates verify against it, key files are 0600, revocation lists."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509 import DNSName, IPAddress
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import ClientVerifier, PolicyBuilder, Store, VerificationError

from hq.pki import PkiError, build_crl, init_ca, issue_client, issue_server, load_ca


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _verifier(ca_cert: x509.Certificate) -> PolicyBuilder:
    return PolicyBuilder().store(Store([ca_cert]))


def _client_verifier(ca_cert: x509.Certificate) -> ClientVerifier:
    return _verifier(ca_cert).build_client_verifier()


def test_ca_has_the_constraints_and_its_files_are_private(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca")
    bc = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ca.cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    for f in (ca.key_path, ca.cert_path):
        assert _mode(f) == 0o600, f
    # nothing but the two files: no temp file left behind by the atomic writes
    assert sorted(p.name for p in ca.directory.iterdir()) == ["ca.crt", "ca.key"]
    again = load_ca(ca.directory)
    assert again.cert == ca.cert


def test_an_existing_ca_is_not_replaced_without_the_flag(tmp_path: Path) -> None:
    ca = init_ca(tmp_path)
    with pytest.raises(PkiError) as err:
        init_ca(tmp_path)
    assert err.value.path == tmp_path / "ca.key"
    assert "already exists" in str(err.value)
    assert load_ca(tmp_path).cert == ca.cert  # untouched
    replaced = init_ca(tmp_path, overwrite=True)
    assert replaced.cert != ca.cert


def test_load_ca_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PkiError) as err:
        load_ca(tmp_path)
    assert err.value.path == tmp_path / "ca.key"


def test_server_and_client_certificates_verify_against_the_ca(tmp_path: Path) -> None:
    ca = init_ca(tmp_path)
    server = issue_server(ca, ["localhost", "127.0.0.1"])
    client = issue_client(ca, "gw.s1.g1")
    for f in (server.key_path, server.cert_path, client.key_path, client.cert_path):
        assert _mode(f) == 0o600, f
    san = server.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(DNSName) == ["localhost"]
    assert [str(a) for a in san.get_values_for_type(IPAddress)] == ["127.0.0.1"]
    # cryptography's own path validation: server auth for the name, client auth for the CN
    chain = _verifier(ca.cert).build_server_verifier(DNSName("localhost")).verify(server.cert, [])
    assert chain[-1] == ca.cert
    by_ip = _verifier(ca.cert).build_server_verifier(IPAddress(ipaddress.ip_address("127.0.0.1")))
    by_ip.verify(server.cert, [])
    verified = _client_verifier(ca.cert).verify(client.cert, [])
    assert verified.chain[-1] == ca.cert
    eku = client.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert client.cert.subject.rfc4514_string() == "CN=gw.s1.g1"
    # a server certificate is not a client certificate, and a foreign CA verifies neither
    with pytest.raises(VerificationError):
        _client_verifier(ca.cert).verify(server.cert, [])
    rogue = init_ca(tmp_path / "rogue")
    with pytest.raises(VerificationError):
        _client_verifier(rogue.cert).verify(client.cert, [])


async def test_an_ssl_handshake_with_client_certificate_succeeds(tmp_path: Path) -> None:
    ca = init_ca(tmp_path)
    server = issue_server(ca, ["localhost", "127.0.0.1"])
    client = issue_client(ca, "gw.s1.g1")
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca.cert_path))
    sctx.load_cert_chain(server.cert_path, server.key_path)
    sctx.verify_mode = ssl.CERT_REQUIRED
    peers: list[object] = []

    async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        peers.append(w.get_extra_info("peercert"))
        w.write(b"ok")
        await w.drain()
        w.close()

    srv = await asyncio.start_server(on_conn, "127.0.0.1", 0, ssl=sctx)
    port = srv.sockets[0].getsockname()[1]
    cctx = ssl.create_default_context(cafile=str(ca.cert_path))
    cctx.load_cert_chain(client.cert_path, client.key_path)
    async with srv:
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=cctx, server_hostname="127.0.0.1")
        assert await r.read() == b"ok"
        w.close()
    subject = peers[0]["subject"]  # type: ignore[index]
    assert subject == ((("commonName", "gw.s1.g1"),),)


def test_a_revoked_serial_is_in_the_crl(tmp_path: Path) -> None:
    ca = init_ca(tmp_path)
    kept, revoked = issue_client(ca, "gw.s1.g1"), issue_client(ca, "gw.s1.g2")
    path = build_crl(ca, [revoked.serial])
    assert path == ca.crl_path and _mode(path) == 0o600
    crl = x509.load_pem_x509_crl(path.read_bytes())
    assert crl.is_signature_valid(ca.key.public_key())
    assert crl.get_revoked_certificate_by_serial_number(revoked.serial) is not None
    assert crl.get_revoked_certificate_by_serial_number(kept.serial) is None
    assert len(crl) == 1


def test_bad_names_are_refused_with_the_field(tmp_path: Path) -> None:
    ca = init_ca(tmp_path)
    with pytest.raises(PkiError, match=re.escape("common name '../x'")):
        issue_client(ca, "../x")
    with pytest.raises(PkiError, match="at least one host"):
        issue_server(ca, [])
