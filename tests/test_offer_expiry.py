"""The publisher's expiry check (gateway/publisher.py) on a fake wall clock: an offer
whose validity passed while it sat in the outbox is never published, and is counted."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import aiomqtt

from aislecast.kernel import topics
from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.mqtt import MqttLink, MqttSettings
from gateway.outbox import Outbox
from gateway.publisher import OutboxPublisher
from gateway.storage import open_db
from tests.fakeclock import FakeClock
from tests.harness import until


async def test_offers_expired_in_the_outbox_are_dropped_the_rest_published(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    clock = FakeClock(wall=time.time())  # starts at real time: MQTT expiry stays meaningful
    ob = Outbox(open_db(tmp_path / "gw.sqlite"))
    now = clock.time()
    ob.add(offers=[("stale", topics.offers("i1"), b'{"o":"stale"}', now + 0.5),  # < 1 s left
                   ("late", topics.offers("i2"), b'{"o":"late"}', now + 30),
                   ("fresh", topics.offers("i3"), b'{"o":"fresh"}', now + 600)])
    clock.advance(31)  # the gateway was down half a minute: "late" expired meanwhile
    got: list[bytes] = []

    async def on_offer(msg: aiomqtt.Message) -> None:
        got.append(bytes(msg.payload))  # type: ignore[arg-type]

    settings = MqttSettings(port=broker.port)
    async with MqttLink(settings, client_id="phones", subscriptions=[(topics.offers("+"), 1)],
                        handler=on_offer) as phones, \
            MqttLink(settings, client_id="gw-expiry") as link:
        await phones.wait_connected(10)
        pub = OutboxPublisher(ob, events_topic=topics.gateway_events("s", "g"),
                              batch_header=b"{}", clock=clock.time)
        task = asyncio.create_task(pub.run(link))
        try:
            await until(lambda: got and pub.stats.offers_expired == 2 and len(ob) == 0,
                        timeout=20)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert got == [b'{"o":"fresh"}']  # the witness arrived, the expired two never did
    assert pub.stats.offers_published == 1
    ob.conn.close()
