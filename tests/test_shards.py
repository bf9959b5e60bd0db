"""Stores sharded across two brokers: one HQ, two Mosquittos, a real gateway in each store.

Store A (the harness's ``store-t``) is on the default broker, store B on shard ``b``. HQ
renders both brokers' password/ACL files from its one registry (a second ``auth_dir``).
Each gateway gets its own store's bundle on its own broker and none from the other; both
stores' events reach HQ and are acknowledged; a flash to B goes to broker B only; with
broker B stopped, /health names shard b and its store while store A keeps working.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import httpx
import msgspec
import pytest

from aislecast.apps.scenarios import setup_store
from aislecast.kernel import topics
from aislecast.kernel.broker import BrokerConfig, MosquittoProcess
from aislecast.kernel.errors import ConfigError
from aislecast.kernel.mqtt import MqttSettings
from aislecast.kernel.signing import public_key_pem
from aislecast.kernel.tokens import eid_for
from edge.sim_scanner import SimScanner
from edge.simstore import STORE_UUID, SimShopper, SimStore, default_zones
from gateway.app import Gateway
from gateway.config import load_config
from hq.approvals import ApprovalPolicy
from hq.broker_auth import BrokerAuthFiles, wait_for_login
from hq.config import load_hq_config
from hq.service import Enrollment
from hq.shards import ShardSettings
from tests.harness import (
    STORE,
    Stack,
    authenticated_broker,
    broker_auth_dir,
    enter_campaign,
    stack,
    until,
)

STORE_B = "store-b"


class Spy:
    """A raw client with a store-B gateway's login (valid on both brokers: one registry)
    recording the topics it receives; :meth:`echo` is its positive witness: a presence
    message it sends itself and reads back, so everything the broker queued for it
    earlier has arrived."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.topics: list[str] = []
        self._echoes = 0

    async def read(self) -> None:
        async for msg in self.client.messages:
            self.topics.append(msg.topic.value)
            if msg.topic.value.endswith("/presence"):
                self._echoes += 1

    async def echo(self) -> None:
        want = self._echoes + 1
        await self.client.publish(topics.gateway_presence(STORE_B, "spy"), b"{}", qos=0)
        await until(lambda: self._echoes >= want, timeout=15)


@contextlib.asynccontextmanager
async def spy_on(port: int, login: tuple[str, str]) -> AsyncIterator[Spy]:
    async with aiomqtt.Client("127.0.0.1", port, username=login[0], password=login[1],
                              identifier=f"spy-{port}", protocol=aiomqtt.ProtocolVersion.V5) as c:
        spy = Spy(c)
        await c.subscribe(topics.bundle(STORE_B), qos=1)
        await c.subscribe(topics.bundle_delta(STORE_B), qos=1)
        await c.subscribe(topics.gateway_presence(STORE_B, "+"), qos=0)
        task = asyncio.create_task(spy.read(), name="test-spy")
        try:
            await spy.echo()  # subscribed, and any retained bundle is in
            yield spy
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _walk(sim: SimStore, e: Enrollment, name: str) -> None:
    key = bytes.fromhex(e.identity_key)
    sim.add_shopper(SimShopper(name, lambda t: eid_for(key, t, e.rotation_k),
                               [("entrance", 1.0), ("produce", 4.0)], start=time.monotonic(),
                               speed_mps=5.0))


async def _gateway_b(st: Stack, port: int, sim: SimStore) -> Gateway:
    user, password = st.hq.service.credentials.issue_gateway(STORE_B, "gw-b")
    await wait_for_login("127.0.0.1", port, user, password, timeout=30)  # broker b's files
    cfg = await asyncio.to_thread(load_config, {
        "gateway": "gw-b", "store": STORE_B, "data_dir": str(st.work / "gw-b"),
        "hq_public_key": public_key_pem(st.hq.service.signer.public_key),
        "broker": {"port": port, "username": user, "password": password},
        "scanner": {"backend": "sim", "receivers": sim.receivers}, "health_every_s": 1.0})
    gw = Gateway(cfg, lambda cb: SimScanner(sim, cb))
    st.gateways.append((gw, st.tg.create_task(gw.run(), name="test-gw-b")))
    async with asyncio.timeout(30):
        await gw.ready.wait()
    return gw


async def _flash(st: Stack, store: str) -> None:
    async with httpx.AsyncClient(base_url=st.url, headers=st.admin) as http:
        r = await http.post("/api/flash", json={"title": f"Flash {store}", "stores": [store]})
        assert r.status_code == 201, r.text


async def _events_and_flash(st: Stack, *, gw_a: Gateway, gw_b: Gateway, spy_a: Spy, spy_b: Spy,
                            sim_b: SimStore, e: Enrollment) -> None:
    """Both stores' events are acknowledged; a flash to B reaches broker b and not a."""
    _walk(st.sim, e, "shopper-a")
    _walk(sim_b, e, "shopper-b")
    await until(lambda: gw_a.parts.publisher.stats.events_acked > 0)
    await until(lambda: gw_b.parts.publisher.stats.events_acked > 0)
    stores = {r[0] for r in st.hq.db.query("SELECT DISTINCT store FROM events")}
    assert {STORE, STORE_B} <= stores

    seq_a, seq_b = gw_a.parts.bundles.delta_seq, gw_b.parts.bundles.delta_seq
    await _flash(st, STORE_B)
    await until(lambda: gw_b.parts.bundles.delta_seq > seq_b)  # gateway B applied it
    assert topics.bundle_delta(STORE_B) in spy_b.topics
    await _flash(st, STORE)  # HQ's link to broker a is live: A's flash lands...
    await until(lambda: gw_a.parts.bundles.delta_seq > seq_a)
    await spy_a.echo()  # ...and spy_a has had everything broker a queued for it
    assert topics.bundle_delta(STORE_B) not in spy_a.topics
    assert gw_a.parts.bundles.delta_seq == seq_a + 1  # only A's own flash
    assert st.hq.shards.stats.publishes["b"] >= 2  # B's bundle, its flash, its acks


async def _health_names_b(st: Stack) -> None:
    """/health goes 503 naming shard b and its store; /metrics says b is not connected."""
    async with httpx.AsyncClient(base_url=st.url) as http:
        for _ in range(600):  # 60 s at most; HQ notices a lost broker in about a second
            r = await http.get("/health")
            if r.status_code == 503 and r.json().get("shards_down") == [
                    {"shard": "b", "stores": [STORE_B]}]:
                assert r.json()["mqtt"] is True  # the default broker is fine
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"/health never named shard b as down: {r.status_code} {r.text}")
        await until(lambda: st.hq.shards.stats.connected.get("b") == 0)
        text = (await http.get("/metrics")).text
        assert 'aislecast_hq_shards_connected{shard="b"} 0.0' in text
        assert 'aislecast_hq_shards_connected{shard="default"} 1.0' in text


@pytest.mark.slow
async def test_two_stores_on_two_brokers(tmp_path: Path) -> None:
    work_a, work_b = tmp_path / "a", tmp_path / "b"
    async with contextlib.AsyncExitStack() as brokers:
        broker_a = await brokers.enter_async_context(authenticated_broker(work_a))
        b_side = contextlib.AsyncExitStack()
        broker_b = await b_side.enter_async_context(authenticated_broker(work_b))
        brokers.push_async_callback(b_side.aclose)
        shard = ShardSettings("b", MqttSettings(port=broker_b.port), frozenset({STORE_B}),
                              auth_dir=broker_auth_dir(work_b), pid=lambda: broker_b.pid)
        campaign = msgspec.structs.replace(enter_campaign("produce"), stores=[STORE, STORE_B])
        async with stack(broker_a.port, work_a, [campaign], broker=broker_a,
                         shards=[shard], approval=ApprovalPolicy(flash="single")) as st:
            hq = st.hq
            assert hq.shards.shard_of(STORE_B) == "b" and hq.shards.shard_of(STORE) == "default"
            sim_b = SimStore(default_zones(), seed=4)
            setup_store(hq.service, STORE_B, default_zones(), STORE_UUID)
            e = hq.service.enroll(["offers"], [STORE, STORE_B])
            await until(lambda: hq.shards.down() == [])
            assert await hq.service.republish_all() == 0
            async with httpx.AsyncClient(base_url=st.url) as http:
                r = await http.get("/health")
            assert r.status_code == 200 and r.json()["shards_down"] == [], r.text

            # each gateway gets its own store's bundle on its own broker
            gw_a = await st.start_gateway("gw-a")
            gw_b = await _gateway_b(st, broker_b.port, sim_b)
            a_bundle, b_bundle = gw_a.parts.bundles.current, gw_b.parts.bundles.current
            assert a_bundle is not None and a_bundle.store.id == STORE
            assert b_bundle is not None and b_bundle.store.id == STORE_B

            # and at the brokers: B's bundle is retained on broker b only
            spy_login = hq.service.credentials.issue_gateway(STORE_B, "spy")
            await wait_for_login("127.0.0.1", broker_b.port, *spy_login, timeout=30)
            await wait_for_login("127.0.0.1", broker_a.port, *spy_login, timeout=30)
            async with spy_on(broker_a.port, spy_login) as spy_a, \
                    spy_on(broker_b.port, spy_login) as spy_b:
                assert topics.bundle(STORE_B) in spy_b.topics
                assert topics.bundle(STORE_B) not in spy_a.topics  # after spy_a's echo
                await _events_and_flash(st, gw_a=gw_a, gw_b=gw_b, spy_a=spy_a, spy_b=spy_b,
                                        sim_b=sim_b, e=e)

            # broker b goes away: /health names the shard and its store; A keeps working
            await st.stop_gateway(gw_b)
            await b_side.aclose()
            await _health_names_b(st)
            seq_a = gw_a.parts.bundles.delta_seq
            await _flash(st, STORE)
            await until(lambda: gw_a.parts.bundles.delta_seq > seq_a)
            version = gw_a.parts.bundles.version
            assert await hq.service.republish_all() == 1  # B's store, skipped: its broker is down
            await until(lambda: gw_a.parts.bundles.version > version)

            # broker b back (empty: a fresh directory, no retained bundle): HQ republishes
            # store B's bundle there as soon as its link is up again
            files = BrokerAuthFiles(broker_auth_dir(work_b))
            again = BrokerConfig(directory=work_b / "mosquitto-again", port=broker_b.port,
                                 password_file=files.password_path, acl_file=files.acl_path)
            async with MosquittoProcess(again):
                await until(lambda: hq.shards.down() == [])
                async with spy_on(broker_b.port, spy_login) as spy_b:
                    await until(lambda: topics.bundle(STORE_B) in spy_b.topics)


def test_shards_in_hq_toml(tmp_path: Path) -> None:
    ok = tmp_path / "hq.toml"
    ok.write_text('[[shards]]\nname = "b"\nport = 1884\nstores = ["store-b"]\n')
    cfg = load_hq_config(str(ok))
    (s,) = cfg.shard_settings()
    assert (s.name, s.mqtt.port, s.stores, s.auth_dir) == ("b", 1884, frozenset({"store-b"}), None)
    twice = tmp_path / "twice.toml"
    twice.write_text('[[shards]]\nname = "b"\nstores = ["s1"]\n'
                     '[[shards]]\nname = "c"\nstores = ["s1"]\n')
    with pytest.raises(ConfigError) as exc:
        load_hq_config(str(twice))
    assert exc.value.field == "shards[1].stores" and "'b'" in str(exc.value)
    dup = tmp_path / "dup.toml"
    dup.write_text('[[shards]]\nname = "default"\nstores = ["s1"]\n')
    with pytest.raises(ConfigError) as exc:
        load_hq_config(str(dup))
    assert exc.value.field == "shards[0].name"
