"""``aislecast hq gateways add|list|revoke`` against a real broker that reads HQ's files."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import pytest

from aislecast.apps.cli import main
from aislecast.kernel import topics
from aislecast.kernel.errors import PublishDenied
from aislecast.kernel.mqtt import MqttLink
from gateway.config import load_config
from tests.harness import authenticated_broker, tls_broker, until

_KICK_S = 2.0


def _hq_toml(tmp: Path, port: int, pid_file: Path) -> Path:
    path = tmp / "hq.toml"
    path.write_text(f'data_dir = "{tmp / "hq-data"}"\n[broker]\nport = {port}\n'
                    f'auth_dir = "{tmp / "broker-auth"}"\npid_file = "{pid_file}"\n')
    return path


async def test_add_writes_a_gateway_toml_that_logs_in_and_revoke_kicks_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with authenticated_broker(tmp_path) as broker:
        pid_file = tmp_path / "mosquitto.pid"
        pid_file.write_text(f"{broker.pid}\n")
        hq = _hq_toml(tmp_path, broker.port, pid_file)
        out = tmp_path / "gw-9.toml"
        rc = await asyncio.to_thread(main, ["hq", "gateways", "add", "store-t", "gw-9",
                                            "--config", str(hq), "-o", str(out)])
        text = capsys.readouterr().out
        assert rc == 0, text
        assert "broker reloaded" in text
        secret = out.with_suffix(".mqtt-password")
        assert stat.S_IMODE(out.stat().st_mode) == 0o600 == stat.S_IMODE(secret.stat().st_mode)
        password = secret.read_text().strip()
        assert password not in out.read_text()  # the TOML names the file, never the secret
        cfg = await asyncio.to_thread(load_config, out)
        assert (cfg.store, cfg.gateway, cfg.broker.username) == ("store-t", "gw-9", "gw.store-t.gw-9")
        assert cfg.broker.password == password and len(cfg.public_keys()) == 1
        async with MqttLink(cfg.broker.mqtt_settings(), client_id="gw.store-t.gw-9",
                            clean_start=True) as link:
            await link.wait_connected(10)
            await link.publish(topics.gateway_events("store-t", "gw-9"), b"{}", qos=1)  # its own
            assert await asyncio.to_thread(main, ["hq", "gateways", "list", "--json", "--config",
                                                  str(hq)]) == 0
            listed = json.loads(capsys.readouterr().out)
            assert [r["username"] for r in listed] == ["gw.store-t.gw-9"]
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            assert await asyncio.to_thread(main, ["hq", "gateways", "revoke", "store-t", "gw-9",
                                                  "--config", str(hq)]) == 0
            await until(lambda: not link.connected.is_set(), timeout=_KICK_S)
            print(f"cli revoke -> session gone in {(loop.time() - t0) * 1000:.0f} ms")
            await until(lambda: "Not authorized" in link.stats.last_error, timeout=10)
        assert await asyncio.to_thread(main, ["hq", "gateways", "list", "--json", "--config",
                                              str(hq)]) == 0
        capsys.readouterr()


def test_bad_ids_and_unknown_revokes_are_one_line(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    hq = tmp_path / "hq.toml"
    hq.write_text(f'data_dir = "{tmp_path / "hq-data"}"\n')
    db = ["--config", str(hq)]
    assert main(["hq", "gateways", "add", "store/1", "gw-1", *db, "-o", str(tmp_path / "g.toml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "STORE" in err and "store/1" in err
    assert not (tmp_path / "g.toml").exists()
    assert main(["hq", "gateways", "revoke", "store-1", "gw-1", *db]) == 2
    assert "has no active broker login" in capsys.readouterr().err
    # the witness: a valid add is accepted by the same database
    assert main(["hq", "gateways", "add", "store-1", "gw-1", *db, "-o", str(tmp_path / "g.toml")]) == 0
    assert "registered gw.store-1.gw-1" in capsys.readouterr().out


async def test_add_with_tls_issues_a_certificate_and_revoke_ends_its_session(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with tls_broker(tmp_path) as (broker, layout):
        pid_file = tmp_path / "mosquitto.pid"
        pid_file.write_text(f"{broker.pid}\n")
        hq = _hq_toml(tmp_path, layout.phone_port, pid_file)
        with hq.open("a") as f:  # the broker's mutual-TLS listener: certificates by default
            f.write(f'gateway_port = {layout.gateway_port}\ntls_ca = "{layout.ca.cert_path}"\n')
        out = tmp_path / "gw" / "gw-7.toml"
        rc = await asyncio.to_thread(main, ["hq", "gateways", "add", "store-t", "gw-7",
                                            "--config", str(hq), "-o", str(out)])
        text = capsys.readouterr().out
        assert rc == 0, text
        assert not out.with_suffix(".mqtt-password").exists()  # no password for the gateway
        cfg = await asyncio.to_thread(load_config, out)
        b = cfg.broker
        assert (b.port, b.username, b.password) == (layout.gateway_port, None, None)
        assert b.tls_ca and b.tls_cert and b.tls_key and len(cfg.public_keys()) == 1
        assert stat.S_IMODE(Path(b.tls_key).stat().st_mode) == 0o600
        async with MqttLink(b.mqtt_settings(), client_id="ignored", clean_start=False) as link:
            await link.wait_connected(10)
            # its own topics (the ACL of its CN, rendered by `add`: the reload may lag a bit)
            await until_published(link, topics.gateway_events("store-t", "gw-7"))
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            assert await asyncio.to_thread(main, ["hq", "gateways", "revoke", "store-t", "gw-7",
                                                  "--config", str(hq)]) == 0
            text = capsys.readouterr().out
            assert "session ended" in text and "certificate(s)" in text, text
            await until(lambda: not link.connected.is_set(), timeout=_KICK_S + 10)
            print(f"cli revoke (certificate) -> session gone in {(loop.time() - t0) * 1000:.0f} ms")
            # and it stays out: the reconnects meet the CRL (aiomqtt sees a timed-out handshake)
            await until(lambda: link.stats.connects == 1 and "timed out" in link.stats.last_error,
                        timeout=30)
            assert not link.connected.is_set()


async def until_published(link: MqttLink, topic: str) -> None:
    async with asyncio.timeout(10):
        while True:
            try:
                await link.publish(topic, b"{}", qos=1)
            except PublishDenied:
                await asyncio.sleep(0.05)
            else:
                return


def test_add_with_tls_without_a_ca_or_port_is_one_line(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    hq = tmp_path / "hq.toml"
    hq.write_text(f'data_dir = "{tmp_path / "hq-data"}"\n')
    db = ["--config", str(hq), "-o", str(tmp_path / "g.toml")]
    assert main(["hq", "gateways", "add", "store-1", "gw-1", "--tls", *db]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gateway_port" in err
    assert main(["hq", "gateways", "add", "store-1", "gw-1", "--tls", "--broker", "h:8884", *db]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no certificate authority" in err and "hq init" in err
    assert not (tmp_path / "g.toml").exists()
