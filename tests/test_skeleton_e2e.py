"""End to end on a private Mosquitto: shopper walks in -> exactly one offer on the phone."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import pytest

from aislecast.kernel.broker import MosquittoProcess
from edge.simstore import SimShopper
from hq.consent import PURPOSES
from tests.harness import STORE, enter_campaign, stack, until

_until = functools.partial(until, timeout=15.0)


@pytest.mark.slow
async def test_shopper_walks_into_zone_and_phone_gets_exactly_one_offer(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    async with stack(broker.port, tmp_path, [enter_campaign("produce")], noise_db=2.0) as st:
        e = st.hq.service.enroll(list(PURPOSES), [STORE])
        await st.hq.service.publish_bundle(STORE)
        gw = await st.start_gateway()
        async with st.phone(e) as phone:
            await phone.link.wait_connected(10)
            # entrance 2 s, walk 10 m, produce 6 s, back to the entrance and linger
            shopper = SimShopper(e.inbox, phone.token, [("entrance", 2.0), ("produce", 6.0),
                                                         ("entrance", 3.0)],
                                 start=time.monotonic(), speed_mps=5.0)
            st.sim.add_shopper(shopper)
            await _until(lambda: phone.stats.offers_received >= 1)
            await _until(lambda: time.monotonic() > shopper.end + 0.5, timeout=30)
            offer = next(iter(phone.offers.values()))
            assert offer.campaign == "c-produce"
            assert offer.zone == "produce"
            assert phone.stats.offers_received == 1  # cap 1 per visit, re-entry gives nothing
            assert phone.stats.duplicates == 0
            # HQ saw the whole story: the enter, the decision with its reason, the publish
            await _until(lambda: st.hq.ingest.stats.by_kind.get("offer_published", 0) >= 1)
            await _until(lambda: st.hq.ingest.stats.by_kind.get("offer_opened", 0) >= 1)
            rows = st.hq.db.query(
                "SELECT kind, reason FROM events WHERE inbox = ? AND kind = 'decision'", (e.inbox,))
            reasons = [r[1] for r in rows]
            assert "offer" in reasons
            assert gw.parts.counters.adverts_decoded > 0


async def test_shopper_who_is_not_opted_in_gets_nothing(broker: MosquittoProcess, tmp_path: Path) -> None:
    async with stack(broker.port, tmp_path, [enter_campaign("entrance")]) as st:
        e = st.hq.service.enroll(["analytics"])  # no "offers" consent: absent from token tables
        await st.hq.service.publish_bundle(STORE)
        gw = await st.start_gateway()
        async with st.phone(e) as phone:
            await phone.link.wait_connected(10)
            st.sim.add_shopper(SimShopper(e.inbox, phone.token, [("entrance", 3.0)],
                                          start=time.monotonic()))
            # the witness: the token was heard and did not resolve; presence and decisions
            # start only from a resolved token, so nothing can follow
            await _until(lambda: gw.parts.counters.tokens_unknown >= 5)
            assert phone.stats.offers_received == 0
            assert gw.parts.triggers.stats.presence_events == 0
            assert gw.parts.recorder.stats.decisions == 0
