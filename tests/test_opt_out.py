"""Opt-out reaches every gateway of every store within seconds; nothing resolves after."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import httpx
import pytest

from aislecast.kernel.broker import MosquittoProcess
from edge.sim_scanner import SimScanner
from edge.simstore import SimShopper, SimStore, default_zones
from tests.harness import STORE, bearer, enter_campaign, stack, until

_until = functools.partial(until, timeout=10.0)


@pytest.mark.xdist_group("realtime")  # held to 5 s of wall time (see test_scenarios)
async def test_opt_out_reaches_all_gateways_within_seconds(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    async with stack(broker.port, tmp_path, [enter_campaign("produce", cap=5)]) as st:
        e = st.hq.service.enroll(["offers"], [STORE])
        keep = st.hq.service.enroll(["offers"], [STORE])
        await st.hq.service.publish_bundle(STORE)
        # each gateway hears its own radio: two SimScanners stepping one SimStore would
        # split its adverts between them, and gw-2 would hear next to nothing
        radio2 = SimStore(default_zones(), noise_db=0.0, dropout=0.0, seed=4)
        gws = [await st.start_gateway("gw-1"),
               await st.start_gateway("gw-2", scanner=lambda cb: SimScanner(radio2, cb))]
        async with st.phone(e) as phone:
            await phone.link.wait_connected(10)
            token = phone.token().hex()
            assert all(gw.parts.identity.resolve(token, time.time()) == e.inbox for gw in gws)
            t0 = time.monotonic()
            deltas_before = st.hq.service.stats.deltas_published
            async with httpx.AsyncClient(base_url=st.url, headers=bearer(st.token("wallet"))) as http:
                r = await http.post(f"/api/shoppers/{e.inbox}/opt-out")
                assert r.status_code == 200
            await _until(lambda: all(gw.parts.identity.resolve(token, time.time()) is None for gw in gws))
            applied_s = time.monotonic() - t0
            assert st.hq.service.stats.deltas_published == deltas_before + 1  # the fast path, not bundles
            assert applied_s < 5.0, f"opt-out took {applied_s:.2f} s to reach both gateways"
            # the other shopper still resolves; the opted-out one is gone from new bundles too
            other = st.phone(keep).token().hex()
            assert all(gw.parts.identity.resolve(other, time.time()) == keep.inbox for gw in gws)
            bundle = st.hq.service.build_bundle(STORE)
            assert all(e.inbox not in t.tokens.values() for t in bundle.token_tables)
            # walking in now yields no presence and no offer; the shopper still enrolled
            # walks the same path beside them, so their offer witnesses that the adverts
            # were heard and decided on, and the unknown-token count that the opted-out
            # token was heard by both gateways and did not resolve
            unknown_before = [gw.parts.counters.tokens_unknown for gw in gws]
            async with st.phone(keep) as witness:
                await witness.link.wait_connected(10)
                for sim in (st.sim, radio2):
                    for name, shopper in ((e.inbox, phone), (keep.inbox, witness)):
                        sim.add_shopper(SimShopper(name, shopper.token, [("produce", 6.0)],
                                                   start=time.monotonic()))
                await _until(lambda: witness.stats.offers_received >= 1 and all(
                    gw.parts.counters.tokens_unknown >= n + 5 for gw, n in zip(gws, unknown_before,
                                                                          strict=True)))
                assert any(keep.inbox in gw.parts.presence.present() for gw in gws)
            assert phone.stats.offers_received == 0
            assert all(e.inbox not in gw.parts.presence.present() for gw in gws)
