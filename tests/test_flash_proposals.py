"""End to end on a real broker: a feed item served on 127.0.0.1 matches a rule, HQ's
leader proposes a flash draft, nothing reaches the store until an approver approves it,
then a phone in the store receives it; a marketer's pause needs no approval."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import httpx

from aislecast.apps.feed_server import FeedFiles, rss
from aislecast.kernel.broker import MosquittoProcess
from edge.simstore import SimShopper
from hq.feed_rules import FeedRule, FeedSettings, FeedSource, FlashTemplate
from tests.harness import STORE, bearer, stack, until

RULE = FeedRule(name="rain", keywords=["regen"], languages=["de"], sentiment_min=-0.5,
                flash=FlashTemplate(title="Schirme -30 %", stores=[STORE], format="coupon",
                                    coupon_code="REGEN30", validity_s=600))


async def test_a_feed_item_becomes_a_flash_that_phones_get_only_after_approval(
        broker: MosquittoProcess, tmp_path: Path) -> None:
    feed = rss("Wetter", [("w-1", "Starker Regen ab 15 Uhr", "Schirme nicht vergessen")], language="de")
    async with FeedFiles({"/wetter.rss": b"<rss><channel><item>"}) as served:
        settings = FeedSettings(every_s=0.1, rules=[RULE],
                                sources=[FeedSource(name="wetter", url=served.url("/wetter.rss"))])
        async with stack(broker.port, tmp_path, [], feeds=settings) as st, \
                contextlib.AsyncExitStack() as phones:
            svc = st.hq.service
            e = svc.enroll(["offers"], [STORE])
            await svc.publish_bundle(STORE)
            gw = await st.start_gateway()
            phone = await phones.enter_async_context(st.phone(e))
            await phone.link.wait_connected(10)
            st.sim.add_shopper(SimShopper(phone.inbox, phone.token, [("entrance", 1.0), ("produce", 600.0)],
                                          start=time.monotonic(), speed_mps=6.0))
            await until(lambda: phone.inbox in gw.parts.presence.present())
            await until(lambda: st.hq.feeds.stats.skipped.get("malformed_feed", 0) > 0)  # broken XML first
            served.put("/wetter.rss", feed)  # the news breaks
            await until(lambda: st.hq.feeds.stats.proposals == 1)
            approver = bearer(st.token("approver"))
            marketer = bearer(st.token("marketer"))
            async with httpx.AsyncClient(base_url=st.url) as http:
                pending = (await http.get("/api/approvals", headers=marketer)).json()
                assert len(pending) == 1
                cid = pending[0]["campaign"]["id"]
                assert pending[0]["campaign"]["status"] == "draft"
                assert pending[0]["approval"]["submitted_by"] == "feed:wetter"
                assert "Starker Regen" in pending[0]["approval"]["comment"]
                # the draft is stored (positive witness) and the phone has nothing of it yet
                assert svc.get_campaign(cid).status == "draft"
                assert not [o for o in phone.offers.values() if o.campaign == cid]
                seq = gw.parts.bundles.delta_seq
                r = await http.post(f"/api/campaigns/{cid}/approve", json={"comment": "ok, rain"},
                                    headers=approver)
                assert r.status_code == 200, r.text
                await until(lambda: any(o.campaign == cid for o in phone.offers.values()))
                offer = next(o for o in phone.offers.values() if o.campaign == cid)
                assert offer.title == "Schirme -30 %"
                assert gw.parts.bundles.delta_seq > seq
                # a marketer pauses it at once: no approval asked
                r = await http.post(f"/api/campaigns/{cid}/pause", headers=marketer)
                assert r.status_code == 200 and r.json()["status"] == "paused", r.text
                assert svc.get_campaign(cid).status == "paused"
                audit = (await http.get("/api/audit", params={"object": f"campaign:{cid}"},
                                        headers=st.admin)).json()
                assert [a["action"] for a in audit] == ["approval.submit", "approval.approve",
                                                        "campaign.pause"]
                assert audit[1]["after"]["approval"]["decision_comment"] == "ok, rain"
            # the feed again, unchanged: no second proposal
            polls = served.hits[("/wetter.rss", 304)]
            await until(lambda: served.hits[("/wetter.rss", 304)] > polls)
            assert st.hq.feeds.stats.proposals == 1
