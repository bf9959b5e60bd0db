"""hq.toml: defaults are today's flag defaults, flags override the file, broker
credentials and TLS reach a real Mosquitto, the public base URL wins over the request."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI
from fastapi.testclient import TestClient

from aislecast.apps.cli import build_parser, main
from aislecast.apps.cmd_hq import load
from aislecast.kernel.broker import BrokerConfig, MosquittoProcess, free_ports
from aislecast.kernel.errors import ConfigError
from aislecast.kernel.mqtt import MqttLink
from hq.config import load_hq_config
from hq.db import HqDb
from hq.ingest import Ingest
from hq.shortlink_store import DbShortLinkStore, make_mint_router
from tests.harness import secure, until


def _serve_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["hq", "serve", *argv])


def test_no_file_gives_the_old_flag_defaults() -> None:
    cfg = load(_serve_args())
    assert cfg.db_url() == "sqlite:///hq-data/hq.sqlite"
    assert str(cfg.key_path()) == "hq-data/hq-signing.pem"
    assert (cfg.broker.host, cfg.broker.port, cfg.broker.mqtt_client_id()) == (
        "127.0.0.1", 1883, "hq-1")
    assert (cfg.http.host, cfg.http.port, cfg.http.public_base_url) == ("127.0.0.1", 8080, None)
    assert (cfg.learn_every_s, cfg.log_level) == (60.0, "info")
    flags = load(_serve_args("--db", "postgresql://hq@db/a", "--broker", "mqtt.internal:1884",
                             "--key", "k.pem", "--worker", "2", "--learn-every", "0",
                             "--log-level", "DEBUG"))
    assert (flags.db_url(), str(flags.key_path()), flags.broker.mqtt_client_id()) == (
        "postgresql://hq@db/a", "k.pem", "hq-2")
    assert flags.broker.worker == "2"
    assert (flags.broker.host, flags.broker.port, flags.learn_every_s, flags.log_level) == (
        "mqtt.internal", 1884, 0.0, "debug")


def test_flags_override_the_file_and_bad_flags_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "hq.toml"
    path.write_text('data_dir = "/srv/hq"\n[broker]\nhost = "mqtt"\nport = 8883\n'
                    '[http]\nport = 8081\npublic_base_url = "https://hq.example.com"\n')
    cfg = load(_serve_args("--config", str(path), "--http-port", "9000"))
    assert (cfg.http.port, cfg.broker.host, cfg.broker.port) == (9000, "mqtt", 8883)
    assert cfg.db_url() == "sqlite:////srv/hq/hq.sqlite"
    assert cfg.http.public_base_url == "https://hq.example.com"
    for argv, says in ((["--http-port", "0"], "--http-port: 0 is out of range (use an integer from 1"),
                       (["--broker", "mqtt:x"], "--broker: 'mqtt:x' is not HOST:PORT"),
                       (["--public-url", "hq.example.com"], "--public-url: "),
                       (["--config", str(tmp_path)], f"{tmp_path}: is a directory")):
        assert main(["hq", "serve", *argv]) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1, err
    path.write_text('[brokr]\nhost = "mqtt"\n')
    assert main(["hq", "serve", "--config", str(path)]) == 2
    assert f"{path}: brokr: is not a setting aislecast knows (did you mean broker?)" in (
        capsys.readouterr().err)


def test_password_and_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "mqtt.secret"
    secret.write_text("s3cret\n")
    cfg = load_hq_config(overrides={"broker.username": "hq", "broker.password_file": str(secret)})
    assert (cfg.mqtt_settings().username, cfg.mqtt_settings().password) == ("hq", "s3cret")
    with pytest.raises(ConfigError, match=r"broker\.password_file: is set together with broker\.password"):
        load_hq_config(overrides={"broker.password": "x", "broker.password_file": str(secret)})
    missing = load_hq_config(overrides={"broker.password_file": str(tmp_path / "none")})
    with pytest.raises(ConfigError, match=r"cannot read .*none: No such file"):
        missing.mqtt_settings()


def test_public_base_url_wins_over_the_request(tmp_path: Path) -> None:
    db = HqDb(f"sqlite:///{tmp_path}/hq.sqlite")
    try:
        store = DbShortLinkStore(db, Ingest(db).store_events)
        app = FastAPI()
        app.include_router(make_mint_router(store, public_base_url="https://hq.example.com/"))
        client = TestClient(app, base_url="http://attacker.example", headers=secure(app, db))
        made = client.post("/api/shortlinks", json={"url": "https://shop.example/p", "tag": "T-1"})
        assert made.status_code == 201
        assert made.json()["short"] == f"https://hq.example.com/s/{made.json()['code']}"
        stats = client.get(f"/api/shortlinks/{made.json()['code']}").json()
        assert stats["nfc"].startswith("https://hq.example.com/s/")
    finally:
        db.close()


# -- TLS and a password, against a real Mosquitto ---------------------------------------


@dataclass(slots=True)
class _TlsBroker(BrokerConfig):
    """The harness's broker with a TLS listener beside its plain one."""

    tls_port: int = 0

    def render(self) -> str:
        d = self.directory
        return BrokerConfig.render(self) + (
            f"listener {self.tls_port} 127.0.0.1\n"
            f"cafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n")


def _certs(d: Path) -> None:
    """A CA and a server certificate for 127.0.0.1 signed by it."""
    d.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aislecast test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
              .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
              .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "server.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    (d / "server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


async def test_hq_toml_credentials_and_tls_reach_the_broker(tmp_path: Path) -> None:
    d = tmp_path / "mosquitto"
    await asyncio.to_thread(_certs, d)
    secret = tmp_path / "hq-mqtt.secret"
    secret.write_text("s3cret\n")
    plain, tls_port = free_ports(2)
    conf = _TlsBroker(directory=d, port=plain, tls_port=tls_port, passwords={"hq": "s3cret"})
    path = tmp_path / "hq.toml"
    path.write_text(f'[broker]\nport = {conf.tls_port}\nusername = "hq"\n'
                    f'password_file = "{secret}"\ntls_ca = "{d}/ca.pem"\n')
    settings = load_hq_config(str(path)).mqtt_settings()
    got: list[bytes] = []

    async def on(msg: aiomqtt.Message) -> None:
        assert isinstance(msg.payload, bytes)
        got.append(msg.payload)

    async with (MosquittoProcess(conf),
                MqttLink(settings, client_id="hq-tls", subscriptions=[("t/hq", 1)], handler=on) as sub,
                MqttLink(settings, client_id="hq-tls-pub") as pub):  # No Local: not to itself
        await sub.wait_connected(20)
        await pub.publish("t/hq", b"over tls", qos=1)
        await until(lambda: got)
    assert got == [b"over tls"]
    log = (d / "mosquitto.log").read_text()
    assert "error" not in log.lower(), log
