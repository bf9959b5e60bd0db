"""A pause (delta) survives a gateway restart: the last bundle alone would revive it."""

from __future__ import annotations

import functools
import time
from pathlib import Path

from aislecast.kernel.broker import MosquittoProcess
from edge.simstore import SimShopper
from tests.harness import STORE, enter_campaign, stack, until

_until = functools.partial(until, timeout=15.0)


async def test_paused_campaign_stays_paused_after_restart(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    async with stack(broker.port, tmp_path, [enter_campaign("produce")]) as st:
        e = st.hq.service.enroll(["offers"], [STORE])
        await st.hq.service.publish_bundle(STORE)
        gw = await st.start_gateway()
        await st.hq.service.pause_campaign("c-produce")
        await _until(lambda: gw.parts.bundles.delta_seq >= 1)
        await st.stop_gateway(gw)
        gw2 = await st.start_gateway()
        assert gw2.parts.bundles.delta_seq >= 1  # replayed from SQLite
        async with st.phone(e) as phone:
            await phone.link.wait_connected(10)
            st.sim.add_shopper(SimShopper(e.inbox, phone.token, [("produce", 3.0)],
                                          start=time.monotonic()))
            # the witness: the walk was decided on; an offer would be counted right then
            await _until(lambda: gw2.parts.recorder.stats.decisions >= 1)
            assert gw2.parts.recorder.stats.offers == 0
            assert phone.stats.offers_received == 0
            # the retained bundle comes again, quietly (after the decision, on a loaded
            # machine: the gateway decides on the bundle it persisted)
            await _until(lambda: gw2.parts.bundles.redelivered >= 1)
            assert sum(gw2.parts.bundles.rejected.values()) == 0
