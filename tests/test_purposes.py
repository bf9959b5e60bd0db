"""What ``personalisation`` and ``analytics`` do (hq.purposes, gateway.consent): a real
broker and gateway for personalisation, each database for analytics at ingest."""

from __future__ import annotations

import functools
import time
import uuid
from pathlib import Path

import httpx
import msgspec
import pytest

from aislecast.kernel import topics
from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.campaign import Audience, Campaign, Caps, Creative, Trigger
from aislecast.kernel.schema import Event, Feedback, Store
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from gateway.app import Gateway
from gateway.decisions import TriggerEvent
from hq.consent import record_consent
from hq.db import HqDb
from hq.ingest import Ingest
from hq.learning import profiles, set_profile, train
from hq.ownership import delivered_to
from hq.service import HqService
from tests.harness import STORE, bearer, stack, until

_until = functools.partial(until, timeout=15.0)


def _campaign(cid: str, segments: list[str], priority: int) -> Campaign:
    return Campaign(id=cid, name=cid, stores=[STORE], trigger=Trigger(kind="enter", zones=["produce"]),
                    validity_s=600, creatives=[Creative(id="a", title=cid)], caps=Caps(per_shopper=100),
                    audience=Audience(segments=segments), priority=priority)


def _decide(gw: Gateway, inbox: str) -> tuple[str, str | None]:
    d = gw.parts.decider.decide(TriggerEvent("enter", inbox, "produce", time.time(),
                                             visit=uuid.uuid4().hex))
    return d.reason, d.campaign


def _decision(inbox: str, offer: str) -> Event:
    return Event(id=uuid.uuid4().hex, kind="decision", ts=time.time(), store=STORE, gateway="gw-1",
                 inbox=inbox, zone="produce", campaign="c-vip", variant="a", offer=offer,
                 reason="offer")


@pytest.mark.xdist_group("realtime")
async def test_withdrawing_personalisation_unprofiles_the_shopper_in_seconds(
        broker: MosquittoProcess, tmp_path: Path) -> None:
    async with stack(broker.port, tmp_path, [_campaign("c-vip", ["vip"], 10),
                                             _campaign("c-all", [], 0)]) as st:
        svc = st.hq.service
        async with httpx.AsyncClient(base_url=st.url, headers=bearer(st.token("wallet"))) as http:
            r = await http.post("/api/enroll", json={
                "consents": ["offers", "personalisation", "analytics"], "home_stores": [STORE]})
            assert r.status_code == 201, r.text
        e = r.json()
        inbox = e["inbox"]
        set_profile(svc, inbox, ["vip"])
        st.hq.ingest.store_events([_decision(inbox, f"o{i}") for i in range(3)])
        assert train(svc).samples == 3 and inbox in svc.model.profiles  # type: ignore[union-attr]
        await svc.publish_bundle(STORE)
        gw = await st.start_gateway("gw-1")
        ranker = gw.parts.decider.ranker
        await _until(lambda: ranker.profile(inbox) is not None)  # the witness: profiled before
        assert _decide(gw, inbox) == ("offer", "c-vip")
        gw.parts.decider.decide(TriggerEvent("dwell", inbox, "produce", time.time(), dwell_s=60.0))
        assert ranker.boosted() >= 1
        old = svc.build_bundle(STORE)  # built before the withdrawal, sent after it
        assert inbox in old.model.profiles  # type: ignore[union-attr]
        async with httpx.AsyncClient(base_url=st.url, headers=bearer(e["api_token"])) as me:
            asked = time.monotonic()
            r = await me.post(f"/api/shoppers/{inbox}/consent",
                              json={"purpose": "personalisation", "granted": False})
            assert r.status_code == 200 and r.json()["unpublished_stores"] == [], r.text
            await _until(lambda: gw.parts.consent.stats.unprofiled == 1)
            took = time.monotonic() - asked
            assert gw.parts.consent.stats.profiles_dropped == 1
            assert ranker.profile(inbox) is None and ranker.boosted() == 0
            # the audience-targeted campaign no longer matches them; the untargeted one does
            assert _decide(gw, inbox) == ("offer", "c-all")
            # the older bundle arrives late: its profile does not come back
            applied = gw.parts.bundles.version
            await st.hq.link.publish(topics.bundle(STORE), svc.signer.sign("bundle", old),
                                     qos=1, retain=True)
            await _until(lambda: gw.parts.bundles.version > applied)
            assert gw.parts.consent.stats.reapplied >= 1 and ranker.profile(inbox) is None
            # HQ: no profile in the next bundle, nor in the model; their offers not learnt from
            assert inbox not in svc.build_bundle(STORE).model.profiles  # type: ignore[union-attr]
            m = train(svc)
            assert inbox not in m.profiles and m.samples == 0
            # granted again: the profile comes back by delta
            r = await me.post(f"/api/shoppers/{inbox}/consent",
                              json={"purpose": "personalisation", "granted": True})
            assert r.status_code == 200 and r.json()["changed"], r.text
            await _until(lambda: ranker.profile(inbox) is not None)
            assert _decide(gw, inbox) == ("offer", "c-vip")
            assert train(svc).samples == 3
        print(f"personalisation withdrawn -> profile gone at the gateway in {took * 1000:.0f} ms")


def _service(db: HqDb, tmp_path: Path) -> HqService:
    svc = HqService(db, Signer(load_or_create_signing_key(tmp_path / "k.pem")))
    svc.upsert_store(Store(STORE, STORE))
    return svc


def _event(inbox: str, kind: str = "zone_enter", **kw: object) -> Event:
    return Event(id=uuid.uuid4().hex, kind=kind, ts=time.time(), store=STORE,  # type: ignore[arg-type]
                 gateway="gw-1", inbox=inbox, zone="produce", **kw)  # type: ignore[arg-type]


def _totals(db: HqDb, kind: str) -> int:
    row = db.one("SELECT coalesce(sum(n), 0) FROM rollup_totals WHERE kind = ?", (kind,))
    return int(row[0]) if row else 0


async def test_withdrawn_analytics_stores_later_events_without_the_inbox(db: HqDb,
                                                                        tmp_path: Path) -> None:
    svc = _service(db, tmp_path)
    inbox = svc.enroll(["offers", "personalisation", "analytics"], [STORE]).inbox
    ingest = Ingest(db)
    before = _event(inbox)
    assert ingest.store_events([before]) == 1
    assert record_consent(db, inbox, "analytics", False, source="api") is not None
    after = _event(inbox)
    published = _event(inbox, "offer_published", campaign="c", offer="o-1")
    assert await ingest.astore_events([after, published]) == 2
    rows = dict(db.query("SELECT id, inbox FROM events WHERE kind = 'zone_enter'"))
    assert rows == {before.id: inbox, after.id: None}  # the later row exists, without inbox
    body = db.one("SELECT body FROM events WHERE id = ?", (after.id,))
    assert body is not None and inbox not in str(body[0])
    assert ingest.stats.anonymised == 2 and ingest.stats.events_ingested == 3
    assert _totals(db, "zone_enter") == 2  # rollups count both
    # still seen in the store (what keeps offers reaching them), and their feedback is theirs
    assert db.one("SELECT last_seen FROM shopper_stores WHERE inbox = ?", (inbox,)) is not None
    fb = Feedback(v=1, id="f1", offer="o-1", campaign="c", kind="clicked", store=STORE, inbox=inbox,
                  ts=time.time())
    assert delivered_to(db, fb) is not None and not isinstance(delivered_to(db, fb), str)
    other = svc.enroll(["offers", "analytics"], [STORE]).inbox
    assert delivered_to(db, Feedback(v=1, id="f2", offer="o-1", campaign="c", kind="clicked",
                                     store=STORE, inbox=other, ts=time.time())) == "not_delivered_to_inbox"


def test_learning_and_bundles_leave_out_a_shopper_without_personalisation(db: HqDb,
                                                                         tmp_path: Path) -> None:
    svc = _service(db, tmp_path)
    svc.upsert_campaign(_campaign("c-vip", ["vip"], 10))
    kept = svc.enroll(["offers", "personalisation", "analytics"], [STORE]).inbox
    gone = svc.enroll(["offers", "personalisation", "analytics"], [STORE]).inbox
    for who in (kept, gone):
        set_profile(svc, who, ["vip"])
    Ingest(db).store_events([_decision(who, f"o-{who}-{i}") for who in (kept, gone) for i in range(2)])
    m = train(svc)
    assert set(m.profiles) == {kept, gone} and m.samples == 4  # the witness
    assert record_consent(db, gone, "personalisation", False, source="api") is not None
    m = train(svc)
    assert set(m.profiles) == {kept} and m.samples == 2
    assert profiles(svc, only=gone) == {} and set(profiles(svc, only=kept)) == {kept}
    assert svc.shopper_profiles([kept, gone]).keys() == {kept}
    svc.model = msgspec.structs.replace(m, profiles={**m.profiles, gone: m.profiles[kept]})  # stale
    bundle = svc.build_bundle(STORE)
    assert bundle.model is not None and set(bundle.model.profiles) == {kept}
    assert {i for t in bundle.token_tables for i in t.tokens.values()} == {kept, gone}  # offers stay
