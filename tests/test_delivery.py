"""Delivery guarantees: expiry for late phones, outbox replay across restarts."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from aislecast.kernel.broker import BrokerConfig, MosquittoProcess, free_port
from edge.simstore import SimShopper
from tests.harness import STORE, enter_campaign, stack
from tests.harness import until as _until


async def test_expired_offer_never_reaches_a_phone_that_connects_late(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    campaigns = [enter_campaign("entrance", validity_s=2.0, cid="short"),
                 enter_campaign("produce", validity_s=600, cid="long")]
    async with stack(broker.port, tmp_path, campaigns) as st:
        e = st.hq.service.enroll(["offers"], [STORE])
        await st.hq.service.publish_bundle(STORE)
        gw = await st.start_gateway()
        phone = st.phone(e)
        async with phone:  # first connection creates the persistent session
            await phone.link.wait_connected(10)
        # the phone is away while the shopper (someone else's phone in the sim) walks
        st.sim.add_shopper(SimShopper(e.inbox, phone.token, [("entrance", 2.0), ("produce", 3.0)],
                                      start=time.monotonic(), speed_mps=5.0))
        await _until(lambda: gw.parts.publisher.stats.offers_published >= 1)
        short_acked = time.monotonic()  # the broker holds "short" from before this instant
        await _until(lambda: gw.parts.publisher.stats.offers_published >= 2)
        # the thing under test runs on the broker's own clock, so this wait is real time:
        # "short" carries an expiry of at most 2 s (whole seconds, rounded down)
        await asyncio.sleep(max(0.0, short_acked + 2.5 - time.monotonic()))
        late = st.phone(e)
        async with late:
            await _until(lambda: late.stats.offers_received >= 1)
            # "short" was queued before "long" and the session queue is delivered in
            # order: "long" arriving first is the witness that "short" was dropped
            assert [o.campaign for o in late.offers.values()] == ["long"]
            assert late.stats.offers_late == 0  # the broker dropped it, not the phone


@pytest.mark.slow
async def test_gateway_restart_replays_outbox_without_loss(tmp_path: Path) -> None:
    port = free_port()
    bdir = tmp_path / "broker"
    async with MosquittoProcess(BrokerConfig(directory=bdir, port=port)) as first_broker:
        campaigns = [enter_campaign("entrance"), enter_campaign("produce")]
        async with stack(port, tmp_path, campaigns) as st:
            e = st.hq.service.enroll(["offers"], [STORE])
            await st.hq.service.publish_bundle(STORE)
            gw1 = await st.start_gateway()
            phone = st.phone(e)
            async with phone:
                await phone.link.wait_connected(10)
                await first_broker.__aexit__(None, None, None)  # broker goes away
                await _until(lambda: not gw1.link.connected.is_set())
                st.sim.add_shopper(SimShopper(e.inbox, phone.token,
                                              [("entrance", 2.0), ("produce", 3.0)],
                                              start=time.monotonic(), speed_mps=5.0))
                await _until(lambda: gw1.parts.recorder.stats.offers >= 2)
                await _until(lambda: not st.sim.shoppers)
                pending = len(gw1.parts.outbox)
                assert pending >= 4  # two offers plus their presence/decision events
                await st.stop_gateway(gw1)  # restart while offline
                gw2 = await st.start_gateway(wait_ready=False)
                assert gw2.parts.bundles.version >= 1  # last good bundle came back from SQLite
                assert len(gw2.parts.outbox) == pending
                async with MosquittoProcess(BrokerConfig(directory=bdir, port=port)):
                    await _until(lambda: phone.stats.offers_received >= 2, timeout=60)
                    # event rows leave only on HQ's end-to-end ack (shared subs are not
                    # restored by a restarted Mosquitto 2.0, so a PUBACK is not enough)
                    await _until(lambda: len(gw2.parts.outbox) == 0, timeout=60)
                    assert sorted(o.zone or "" for o in phone.offers.values()) == ["entrance", "produce"]
                    assert phone.stats.duplicates == 0
                    assert st.hq.ingest.stats.by_kind.get("offer_published", 0) >= 2
                    rows = st.hq.db.query(
                        "SELECT count(*) FROM events WHERE kind = 'decision' AND reason = 'offer'")
                    assert rows[0][0] == 2
