"""The generated ACL on a real broker: what each role may do, and denial detection."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aislecast.kernel import topics
from aislecast.kernel.acl import GatewayAccount, acl_rules, gateway_username, hq_username
from aislecast.kernel.broker import BrokerConfig, MosquittoProcess, free_port
from aislecast.kernel.errors import PublishDenied
from aislecast.kernel.mqtt import MqttLink, MqttSettings
from tests.harness import until


@pytest.fixture
async def secured(tmp_path: Path):  # type: ignore[no-untyped-def]
    gw = GatewayAccount("s1", "g1")
    users = {gw.username: "gwpass", hq_username(): "hqpass", "inboxa": "pa", "inboxb": "pb"}
    cfg = BrokerConfig(directory=tmp_path / "b", port=free_port(), passwords=users,
                       acl=acl_rules([gw], [hq_username()]))
    async with MosquittoProcess(cfg) as proc:
        yield proc


def _link(port: int, user: str, pw: str, **kw: object) -> MqttLink:
    return MqttLink(MqttSettings(port=port, username=user, password=pw), client_id=user,
                    clean_start=True, **kw)  # type: ignore[arg-type]


async def test_phone_cannot_write_into_another_inbox(secured: MosquittoProcess) -> None:
    async with _link(secured.port, "inboxa", "pa") as phone:
        await phone.wait_connected(10)
        await phone.publish(topics.feedback("inboxa"), b"{}", qos=1)  # its own: allowed
        with pytest.raises(PublishDenied) as err:
            await phone.publish(topics.feedback("inboxb"), b"{}", qos=1)
        assert err.value.reason_code == 0x87
        with pytest.raises(PublishDenied):
            await phone.publish(topics.offers("inboxb"), b"{}", qos=1)
        # reports only under its own inbox, in any store it walks into
        await phone.publish(topics.interactions("s9", "inboxa"), b"{}", qos=1)
        await phone.publish(topics.sightings("s1", "inboxa"), b"{}", qos=1)
        with pytest.raises(PublishDenied):
            await phone.publish(topics.interactions("s1", "inboxb"), b"{}", qos=1)
        assert phone.stats.denied == 3


async def test_gateway_writes_its_store_and_inboxes_only(secured: MosquittoProcess) -> None:
    got: list[str] = []

    async def on(msg) -> None:  # type: ignore[no-untyped-def]
        got.append(msg.topic.value)

    async with _link(secured.port, gateway_username("s1", "g1"), "gwpass") as gw, \
            _link(secured.port, "inboxa", "pa", subscriptions=[(topics.offers("inboxa"), 1),
                                                               (topics.offers("inboxb"), 1)],
                  handler=on) as phone:
        await gw.wait_connected(10)
        await phone.wait_connected(10)
        await gw.publish(topics.gateway_events("s1", "g1"), b"{}", qos=1)
        await gw.publish(topics.offers("inboxa"), b"a", qos=1)
        await gw.publish(topics.offers("inboxb"), b"b", qos=1)
        foreign = (topics.gateway_events("s2", "g1"), topics.bundle("s1"),
                   topics.gateway_events("s1", "g2"), topics.interactions("s2", "inboxa"),
                   topics.sightings("s1", "inboxa"))
        # (under its own username the pattern lets it write, but the receiving gateway drops
        # a report whose token is not that sender's: tests/test_taps.py)
        for t in foreign:
            with pytest.raises(PublishDenied):
                await gw.publish(t, b"{}", qos=1)
        # the phone's subscription to someone else's inbox is granted but never delivers:
        # a last offer to its own inbox, published after "b", is the witness (one
        # publisher's messages reach a subscriber in order, so "b" would come first)
        await gw.publish(topics.offers("inboxa"), b"a2", qos=1)
        await until(lambda: len(got) >= 2, timeout=10)
        assert got == [topics.offers("inboxa"), topics.offers("inboxa")]


async def test_wrong_password_is_refused(secured: MosquittoProcess) -> None:
    async with _link(secured.port, "inboxa", "wrong") as phone:
        with pytest.raises(TimeoutError):
            await phone.wait_connected(1.5)
        assert "Not authorized" in phone.stats.last_error


async def test_hq_reads_batches_by_shared_subscription_and_acks_them(secured: MosquittoProcess) -> None:
    """HQ's lines come from the table too: its shared subscription still delivers."""
    hq_got: list[str] = []
    gw_got: list[str] = []

    async def on_hq(msg) -> None:  # type: ignore[no-untyped-def]
        hq_got.append(msg.topic.value)

    async def on_gw(msg) -> None:  # type: ignore[no-untyped-def]
        gw_got.append(msg.topic.value)

    async with _link(secured.port, hq_username(), "hqpass", handler=on_hq,
                     subscriptions=[(topics.HQ_EVENTS_SHARED, 1)]) as hq, \
            _link(secured.port, gateway_username("s1", "g1"), "gwpass", handler=on_gw,
                  subscriptions=[(topics.gateway_acks("s1", "g1"), 1)]) as gw:
        await hq.wait_connected(10)
        await gw.wait_connected(10)
        await gw.publish(topics.gateway_events("s1", "g1"), b"{}", qos=1)
        await asyncio.wait_for(_arrived(hq_got, topics.gateway_events("s1", "g1")), 10)
        await hq.publish(topics.gateway_acks("s1", "g1"), b"{}", qos=1)
        await asyncio.wait_for(_arrived(gw_got, topics.gateway_acks("s1", "g1")), 10)
        with pytest.raises(PublishDenied):  # only the gateway itself reports its state
            await hq.publish(topics.gateway_state("s1", "g1"), b"{}", qos=1)


async def _arrived(got: list[str], topic: str) -> None:
    while topic not in got:
        await asyncio.sleep(0.02)
