"""HQ over HTTPS with a certificate from its own CA (``aislecast hq ca init --https``):
clients with that CA get in, clients without it fail verification; the session cookie
is Secure over HTTPS; X-Forwarded-* count only from a trusted proxy."""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from aislecast.apps.cli import main
from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.errors import ConfigError
from aislecast.kernel.httpclient import HQ_CA_ENV, HqCertificateError, hq_request
from aislecast.kernel.mqtt import MqttSettings
from firmware_config.qr import mint_link
from hq.accounts import Accounts
from hq.config import load_hq_config
from hq.pki import init_ca
from hq.server import HqServer
from tests.harness import bearer, token_for

PUBLIC = "https://hq.example.com"
PASSPHRASE = "a long passphrase here"  # noqa: S105 - a test account's


def _write_config(tmp_path: Path, extra: str = "") -> Path:
    toml = tmp_path / "hq.toml"
    toml.write_text(f'data_dir = "{tmp_path / "hq-data"}"\n[http]\n'
                    f'public_base_url = "{PUBLIC}"\n{extra}')
    return toml


def _issue(tmp_path: Path) -> tuple[Path, Path, Path]:
    """``aislecast hq ca init --https``: (ca.crt, HQ's certificate, its key)."""
    toml = _write_config(tmp_path)
    assert main(["hq", "ca", "init", "--config", str(toml), "--https"]) == 0
    ca_dir = tmp_path / "hq-data" / "ca"
    return ca_dir / "ca.crt", ca_dir / "hq-https.crt", ca_dir / "hq-https.key"


@asynccontextmanager
async def _hq(port: int, tmp_path: Path, **options: object) -> AsyncIterator[HqServer]:
    async with HqServer(db_url=f"sqlite:///{tmp_path}/hq.sqlite", key_path=tmp_path / "hq.pem",
                        mqtt=MqttSettings(port=port), http_port=0, learn_every_s=0,
                        public_base_url=PUBLIC, **options) as hq:  # type: ignore[arg-type]
        yield hq


def _admin_login(hq: HqServer) -> dict[str, str]:
    Accounts(hq.db).add_user("ops", "admin", password=PASSPHRASE)
    return {"name": "ops", "password": PASSPHRASE}


def test_ca_init_issues_hqs_certificate_for_its_names(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    _, cert, key = _issue(tmp_path)
    out = capsys.readouterr().out
    assert f'tls_cert = "{cert}"' in out and f'tls_key = "{key}"' in out
    san = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"hq.example.com", "localhost"}
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    cfg = load_hq_config(str(_write_config(tmp_path, f'tls_cert = "{cert}"\ntls_key = "{key}"\n')))
    assert cfg.http.https and cfg.http.trusted_proxies == []


@pytest.mark.parametrize(("extra", "field", "fix"), [
    ('tls_cert = "{cert}"\n', "http.tls_key", "set both"),
    ('tls_key = "{key}"\n', "http.tls_cert", "set both"),
    ('tls_cert = "{cert}"\ntls_key = "/nonexistent.key"\n', "http.tls_key", "hq ca init --https"),
    ('tls_cert = "{cert}"\ntls_key = "{other}"\n', "http.tls_key", "issued together"),
    ('trusted_proxies = ["10.0.0.5", "proxy.internal"]\n', "http.trusted_proxies[1]",
     "10.0.0.0/24"),
])
def test_bad_https_settings_name_the_field_and_the_fix(tmp_path: Path, extra: str, field: str,
                                                       fix: str) -> None:
    _, cert, key = _issue(tmp_path)
    other = init_ca(tmp_path / "other-ca").key_path  # a key, but not the certificate's
    toml = _write_config(tmp_path, extra.format(cert=cert, key=key, other=other))
    with pytest.raises(ConfigError) as err:
        load_hq_config(str(toml))
    assert err.value.field == field and fix in (err.value.fix or "")
    assert main(["hq", "serve", "--config", str(toml)]) == 2  # one line, exit 2, no start


def test_a_missing_ca_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["phone", "enroll", "--hq", "https://127.0.0.1:9", "--token", "t",
                 "--hq-ca", str(tmp_path / "nope.crt")]) == 2
    assert "--hq-ca: file" in capsys.readouterr().err


async def test_https_clients_verify_hq_against_its_ca(
        broker: MosquittoProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    ca, cert, key = await asyncio.to_thread(_issue, tmp_path)
    other = await asyncio.to_thread(init_ca, tmp_path / "other-ca")
    async with _hq(broker.port, tmp_path, tls_cert=cert, tls_key=key) as hq:
        url = f"https://127.0.0.1:{hq.http_port}"
        assert hq.scheme == "https"
        wallet, staff = token_for(hq.db, "wallet"), token_for(hq.db, "admin")
        capsys.readouterr()

        # with HQ's CA: `phone enroll` and minting a short link both get through
        argv = ["phone", "enroll", "--hq", url, "--token", wallet]
        assert await asyncio.to_thread(main, [*argv, "--hq-ca", str(ca)]) == 0
        assert json.loads(capsys.readouterr().out)["inbox"]
        monkeypatch.setenv(HQ_CA_ENV, str(ca))  # the staff tools' way to name it
        link = await asyncio.to_thread(mint_link, url, "https://shop.example/milk", token=staff)
        assert link.short.startswith(f"{PUBLIC}/s/")

        # without it (the system's trust store) or with another CA: refused by the client
        monkeypatch.delenv(HQ_CA_ENV)
        for wrong in (None, str(other.cert_path)):
            with pytest.raises(HqCertificateError) as err:
                await asyncio.to_thread(hq_request, urllib.request.Request(f"{url}/health"),  # noqa: S310
                                        ca=wrong, timeout=10)
            assert "--hq-ca" in str(err.value)
        assert await asyncio.to_thread(main, argv) == 1
        refused = capsys.readouterr().err
        assert "does not verify" in refused and "\n" not in refused.strip()

        # the console's session cookie is Secure over HTTPS
        ctx = ssl.create_default_context(cafile=str(ca))
        async with httpx.AsyncClient(base_url=url, verify=ctx) as c:
            r = await c.post("/console/login", json=_admin_login(hq))
        assert r.status_code == 200
        cookies = r.headers.get_list("set-cookie")
        assert len(cookies) == 2 and all("; secure" in c.lower() for c in cookies)


@pytest.mark.parametrize("trusted", [[], ["127.0.0.1"]], ids=["no-proxy", "trusted-proxy"])
async def test_forwarded_headers_count_only_from_a_trusted_proxy(
        broker: MosquittoProcess, tmp_path: Path, trusted: list[str]) -> None:
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9",
                 "X-Forwarded-Host": "evil.example", "Host": "evil.example"}
    async with _hq(broker.port, tmp_path, trusted_proxies=trusted) as hq:
        url = f"http://127.0.0.1:{hq.http_port}"
        async with httpx.AsyncClient(base_url=url, headers=forwarded) as c:
            login = await c.post("/console/login", json=_admin_login(hq))
            minted = await c.post("/api/shortlinks", json={"url": "https://shop.example/x"},
                                  headers=bearer(token_for(hq.db, "admin")))
    assert login.status_code == 200  # the witness: the headers reached HQ
    secure = ["; secure" in c.lower() for c in login.headers.get_list("set-cookie")]
    assert secure == [bool(trusted)] * 2  # https only when a trusted proxy says so
    assert minted.status_code == 201
    assert minted.json()["short"].startswith(f"{PUBLIC}/s/")  # never from Host or X-Forwarded-*
