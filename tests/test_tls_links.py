"""Every link over TLS, on a real Mosquitto with the product's generated config
(hq.local_broker): the gateway over mutual TLS with a certificate from HQ's CA, HQ and
phones over TLS with their passwords. Refusals come with a positive witness."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import aiomqtt
import pytest

from aislecast.apps.cli import main
from aislecast.kernel import topics
from aislecast.kernel.acl import gateway_username
from aislecast.kernel.errors import ConfigError, PublishDenied
from aislecast.kernel.mqtt import MqttLink, MqttSettings
from edge.simstore import SimShopper
from gateway.config import load_config
from hq.broker_auth import try_login
from hq.gateway_certs import issue_gateway_cert
from hq.pki import init_ca
from tests.harness import STORE, authenticated_stack, enter_campaign, until


async def test_gateway_over_mutual_tls_delivers_an_offer_to_a_phone_over_tls(tmp_path: Path) -> None:
    async with authenticated_stack(tmp_path, [enter_campaign("entrance")], tls=True) as st:
        assert st.tls_broker is not None and st.hq.mqtt.tls_ca is not None
        assert st.hq.link.connected.is_set() and st.hq.mqtt.port == st.tls_broker.phone_port
        e = st.hq.service.enroll(["offers"], [STORE])
        await st.hq.service.publish_bundle(STORE)
        gw = await st.start_gateway()  # ready = the signed bundle arrived over mutual TLS
        b = gw.cfg.broker
        assert (b.port, b.username, b.password) == (st.tls_broker.gateway_port, None, None)
        assert b.tls_cert is not None and gw.parts.bundles.version > 0
        phone = st.phone(e)
        assert phone.link.settings.tls_ca is not None and phone.link.settings.password
        async with phone:
            await phone.link.wait_connected(10)
            st.sim.add_shopper(SimShopper(e.inbox, phone.token, [("entrance", 2.0)],
                                          start=time.monotonic(), speed_mps=5.0))
            await until(lambda: phone.stats.offers_received >= 1)
        # and the gateway's events reached HQ the same way
        await until(lambda: st.hq.ingest.stats.events_ingested >= 1)


async def test_a_browser_phone_gets_its_offer_over_secure_websockets(tmp_path: Path) -> None:
    """The layout's wss listener (the wallet's way in): the same login and ACL as TLS."""
    async with authenticated_stack(tmp_path, [enter_campaign("entrance")], tls=True) as st:
        assert st.tls_broker is not None
        e = st.hq.service.enroll(["offers"], [STORE])
        assert e.broker_username and e.broker_password
        await st.hq.service.publish_bundle(STORE)
        await st.start_gateway()
        ws = MqttSettings(port=st.tls_broker.browser_port, tls_ca=str(st.tls_broker.ca.cert_path))

        def client(password: str) -> aiomqtt.Client:
            return aiomqtt.Client("localhost", ws.port, username=e.broker_username, password=password,
                                  identifier="ignored", transport="websockets",
                                  tls_params=ws.tls_params(), protocol=aiomqtt.ProtocolVersion.V5,
                                  timeout=10)

        with pytest.raises(aiomqtt.MqttError):  # a wrong password is refused there too
            async with client(e.broker_password + "x"):
                pass
        async with client(e.broker_password) as c:
            await c.subscribe(topics.offers(e.inbox), qos=1)
            token = st.phone(e).token
            st.sim.add_shopper(SimShopper(e.inbox, token, [("entrance", 2.0)],
                                          start=time.monotonic(), speed_mps=5.0))
            async with asyncio.timeout(60):
                msg = await anext(aiter(c.messages))
        assert msg.topic.matches(topics.offers(e.inbox)) and isinstance(msg.payload, bytes)
        assert json.loads(msg.payload)["inbox"] == e.inbox


async def test_certificates_of_another_ca_or_another_name_get_nothing(tmp_path: Path) -> None:
    async with authenticated_stack(tmp_path, [], tls=True) as st:
        assert st.tls_broker is not None
        ca, port, cafile = st.tls_broker.ca, st.tls_broker.gateway_port, str(st.tls_broker.ca.cert_path)
        await st.hq.service.publish_bundle(STORE)
        good = await st.start_gateway()  # the positive witness: gw-1's own certificate works
        assert good.link.connected.is_set()
        # a certificate from another CA, with the right name: the handshake is refused
        rogue = await asyncio.to_thread(init_ca, tmp_path / "rogue")
        forged = await asyncio.to_thread(issue_gateway_cert, rogue, gateway_username(STORE, "gw-1"),
                                         tmp_path / "forged")
        settings = MqttSettings(port=port, tls_ca=cafile, tls_cert=str(forged.cert),
                                tls_key=str(forged.key))
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client("127.0.0.1", port, tls_params=settings.tls_params(), timeout=2,
                                      identifier="x", protocol=aiomqtt.ProtocolVersion.V5):
                pass
        # HQ's CA, but a name no gateway of this store was registered under: it connects
        # (the CA is the authentication) and may do nothing, not even as gw-1
        other = await asyncio.to_thread(issue_gateway_cert, ca, gateway_username(STORE, "gw-x"),
                                        tmp_path / "other")
        wrong = MqttSettings(port=port, tls_ca=cafile, tls_cert=str(other.cert), tls_key=str(other.key))
        async with MqttLink(wrong, client_id="ignored", clean_start=True) as link:
            await link.wait_connected(10)
            for gw in ("gw-x", "gw-1"):
                with pytest.raises(PublishDenied):
                    await link.publish(topics.gateway_events(STORE, gw), b"{}")
        await good.link.publish(topics.gateway_events(STORE, "gw-1"), b"{}")  # gw-1 may


async def test_plain_mqtt_is_refused_on_the_tls_listeners_and_phones_log_in_over_tls(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with authenticated_stack(tmp_path, [], tls=True) as st:
        assert st.tls_broker is not None
        e = st.hq.service.enroll(["offers"], [STORE])
        assert st.hq.broker_sync is not None
        await st.hq.broker_sync.flush()
        user, pw = e.broker_username or "", e.broker_password or ""
        ctx = st.tls_context()
        # the positive witness: the phone's login over TLS on the phone listener
        assert await st_login(st.tls_broker.phone_port, user, pw, ctx)
        assert not await st_login(st.tls_broker.phone_port, user, pw + "x", ctx)
        for port in (st.tls_broker.phone_port, st.tls_broker.gateway_port):  # no plain listener
            with pytest.raises(aiomqtt.MqttError):
                await try_login("127.0.0.1", port, user, pw, timeout=2)
        # `aislecast phone sight --tls-ca`: the reference client over TLS (its publish is
        # acknowledged, or the command fails), and a CA file that is not there is one line
        me = tmp_path / "me.json"
        me.write_text(json.dumps({"inbox": e.inbox, "identity_key": e.identity_key,
                                  "rotation_k": e.rotation_k, "broker_username": user,
                                  "broker_password": pw}))
        sight = ["phone", "sight", "--me", str(me), "--broker", f"127.0.0.1:{st.tls_broker.phone_port}",
                 "--store", STORE, "--beacon", "b-1", "--rssi", "-60", "--tls-ca"]
        assert await asyncio.to_thread(main, [*sight, str(st.tls_broker.ca.cert_path)]) == 0
        assert await asyncio.to_thread(main, [*sight, str(tmp_path / "none.pem")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--tls-ca" in err


async def st_login(port: int, user: str, pw: str, ctx: object) -> bool:
    async with asyncio.timeout(20):
        while True:  # the broker reloads its files a few ms after HQ's SIGHUP
            ok = await try_login("127.0.0.1", port, user, pw, tls_context=ctx)  # type: ignore[arg-type]
            if ok or pw.endswith("x"):
                return ok
            await asyncio.sleep(0.02)


def test_gateway_tls_settings_are_checked_with_field_and_fix(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca")
    files = issue_gateway_cert(ca, "gw.s.g", tmp_path / "gw")
    base = {"gateway": "g", "store": "s", "hq_public_key": "-----BEGIN x",
            "scanner": {"backend": "sim"}}
    tls = {"tls_ca": str(files.ca), "tls_cert": str(files.cert), "tls_key": str(files.key)}
    cfg = load_config(base | {"broker": tls})  # the witness: the files as written load
    assert cfg.broker.mqtt_settings().tls_params() is not None
    cases = [
        ({"tls_cert": str(tmp_path / "missing.crt")}, "broker.tls_cert", "cannot read"),
        ({"tls_key": None}, "broker.tls_key", "needs both"),
    ]
    for change, field, words in cases:
        with pytest.raises(ConfigError) as err:
            load_config(base | {"broker": {k: v for k, v in (tls | change).items() if v is not None}})
        assert err.value.field == field and words in err.value.problem and err.value.fix
    os.chmod(files.key, 0o644)
    with pytest.raises(ConfigError) as err:
        load_config(base | {"broker": tls})
    assert err.value.field == "broker.tls_key" and err.value.fix == f"chmod 600 {files.key}"
