"""Reach (hq.reach): the different shoppers per campaign and stage, per store and per
variant, kept at ingest on SQLite and PostgreSQL, equal to a tally of the raw events
sent; shoppers without analytics consent not among them; erasure and retention take
their rows as they take the events' inbox or the events."""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

import httpx

from aislecast.kernel.schema import Event, Store
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from hq.analytics import campaign_stats
from hq.api import create_app
from hq.consent import record_consent
from hq.db import HqDb
from hq.funnel import funnel
from hq.ingest import Ingest
from hq.reach import STAGES, Reach, reach_by, reach_of, rebuild
from hq.retention import EventRetention
from hq.service import HqService
from tests.fakeclock import FakeClock
from tests.harness import bearer, token_for

STORES = ("s1", "s2", "s3")
_DAY = 86_400.0
Tally = dict[tuple[str, ...], set[str]]  # (campaign, grain value, kind) -> inboxes


def _service(db: HqDb, tmp_path: Path) -> HqService:
    svc = HqService(db, Signer(load_or_create_signing_key(tmp_path / "k.pem")))
    for s in STORES:
        svc.upsert_store(Store(s, s.upper()))
    return svc


def _offers(rng: random.Random, shoppers: list[str], n: int, tag: str = ""
            ) -> tuple[list[Event], list[Event]]:
    """(the gateways' decisions and publications, the feedback and till redemptions
    that follow): each shopper meets several campaigns, stores and variants; every
    seventh offer carries a till code."""
    gateway: list[Event] = []
    after: list[Event] = []
    for i in range(n):
        inbox, camp = rng.choice(shoppers), rng.choice(("c1", "c2"))
        store, variant, ts, offer = rng.choice(STORES), rng.choice("AB"), 1_764_000_000.0 + i, f"o{tag}{i}"
        till = i % 7 == 0
        gateway += [Event(id=f"d{tag}{i}", kind="decision", ts=ts, store=store, gateway="g",
                          inbox=inbox, campaign=camp, variant=variant, offer=offer,
                          reason="offer", detail={"trigger": "enter"}),
                    Event(id=f"p{tag}{i}", kind="offer_published", ts=ts, store=store, gateway="g",
                          inbox=inbox, campaign=camp, variant=variant, offer=offer,
                          reason="till_code" if till else None)]
        # feedback as HQ stores it: no variant (ingest finds it from the publication)
        for kind, p in (("offer_delivered", 0.9), ("offer_opened", 0.6), ("offer_clicked", 0.3),
                        ("offer_redeemed", 0.3), ("lead_submitted", 0.1)):
            if rng.random() < p:
                after.append(Event(id=f"f{tag}{i}-{kind}", kind=kind, ts=ts + 60,  # type: ignore[arg-type]
                                   store=store, campaign=camp, offer=offer, inbox=inbox))
        if till and rng.random() < 0.5:  # the till's redemption of the code
            after.append(Event(id=f"t{tag}{i}", kind="offer_redeemed", ts=ts + 90, store=store,
                               campaign=camp, variant=variant, offer=offer, inbox=inbox,
                               reason="till"))
    return gateway, after


def _tally(gateway: list[Event], after: list[Event], counted: set[str]) -> dict[str, Tally]:
    """What reach must say, from the events as sent: grain -> key -> inboxes."""
    published = {e.offer: e for e in gateway if e.kind == "offer_published"}
    out: dict[str, Tally] = {"whole": defaultdict(set), "store": defaultdict(set),
                             "variant": defaultdict(set)}
    for e in after:
        pub = published[e.offer]
        if e.inbox not in counted or (e.kind == "offer_redeemed" and e.reason is None
                                      and pub.reason == "till_code"):
            continue  # anonymous, or a phone's claim on a till-code offer
        assert e.campaign is not None and e.inbox is not None
        out["whole"][(e.campaign, "", e.kind)].add(e.inbox)
        out["store"][(e.campaign, e.store, e.kind)].add(e.inbox)
        out["variant"][(e.campaign, str(pub.variant), e.kind)].add(e.inbox)
    return out


def _reach(t: Tally, campaign: str, value: str) -> Reach:
    r = Reach()
    for kind, name in STAGES.items():
        setattr(r, name, len(t.get((campaign, value, kind), ())))
    return r


def _rows(db: HqDb) -> list[tuple[object, ...]]:
    return sorted(db.query("SELECT campaign, store, variant, kind, inbox, ts FROM reach"))


async def test_reach_equals_a_tally_of_the_events_and_leaves_out_the_anonymous(
        db: HqDb, tmp_path: Path) -> None:
    svc = _service(db, tmp_path)
    counted = [svc.enroll(["offers", "analytics"], ["s1"]).inbox for _ in range(12)]
    anonymous = [svc.enroll(["offers"], ["s1"]).inbox for _ in range(4)]
    gateway, after = _offers(random.Random(7), counted + anonymous, 240)
    ingest = Ingest(db)
    for i in range(0, len(gateway), 50):  # gateway batches, then feedback one by one
        ingest.store_events(gateway[i:i + 50])
    for e in after:
        assert await ingest.astore_events([e]) == 1
    stored = _rows(db)
    ingest.store_events(gateway[:50])  # a resend, and feedback again: nothing changes
    assert await ingest.astore_events(after[:20]) == 0
    assert _rows(db) == stored
    want = _tally(gateway, after, set(counted))
    assert not set(anonymous) & {r[4] for r in stored}
    for c in ("c1", "c2"):
        whole = _reach(want["whole"], c, "")
        assert reach_of(db, c) == whole and whole.deliveries > 0 and whole.leads > 0
        assert reach_by(db, c, "store") == {s: _reach(want["store"], c, s) for s in STORES}
        assert reach_by(db, c, "variant") == {v: _reach(want["variant"], c, v) for v in "AB"}
        two = {i for (cc, s, k), ins in want["store"].items()
               if cc == c and s in ("s1", "s2") and k == "offer_opened" for i in ins}
        assert reach_of(db, c, ["s1", "s2"]).opens == len(two)
        # the funnel's rows carry them; its event counts still hold the anonymous ones
        [total] = funnel(db, c)
        assert total.shoppers == whole
        assert total.deliveries == sum(1 for e in after if e.campaign == c
                                       and e.kind == "offer_delivered")
        assert total.deliveries > sum(1 for e in after if e.campaign == c and
                                      e.kind == "offer_delivered" and e.inbox in counted)
        by_store = {r.key: r.shoppers for r in funnel(db, c, by="store")}
        assert by_store == {s: _reach(want["store"], c, s) for s in STORES}
        assert [r.shoppers for r in funnel(db, c, by="hour")] == [None]  # not kept by hour
        assert [r.shoppers for r in funnel(db, c, since=1_764_000_000.0)] == [None]
        for cache in (None, False):
            [stats] = campaign_stats(db, c, cache=cache)  # type: ignore[arg-type]
            assert stats.shoppers == whole
    # a phone's claim on a till-code offer is not a redemption; the till's is
    who = counted[0]
    pub = Event(id="p-till", kind="offer_published", ts=1_764_100_000.0, store="s1",
                inbox=who, campaign="c-till", variant="A", offer="o-till", reason="till_code")
    claim = Event(id="f-claim", kind="offer_redeemed", ts=pub.ts + 5, store="s1",
                  campaign="c-till", offer="o-till", inbox=who)
    ingest.store_events([pub])
    await ingest.astore_events([claim])
    assert funnel(db, "c-till")[0].redemptions == 1 and reach_of(db, "c-till").redemptions == 0
    await ingest.astore_events([Event(id="t-till", kind="offer_redeemed", ts=pub.ts + 9,
                                      store="s1", campaign="c-till", variant="A",
                                      offer="o-till", inbox=who, reason="till")])
    assert reach_of(db, "c-till").redemptions == 1
    stored = _rows(db)
    rebuild(db)  # the migration's backfill gives what ingest kept
    assert _rows(db) == stored


async def test_erasure_and_withdrawn_analytics(db: HqDb, tmp_path: Path) -> None:
    svc = _service(db, tmp_path)
    gone, kept, withdrawn = (svc.enroll(["offers", "analytics"], ["s1"]).inbox for _ in range(3))
    ingest = Ingest(db)
    for n, who in enumerate((gone, kept, withdrawn)):
        gateway, after = _offers(random.Random(n), [who], 8, tag=f"-{n}-")
        ingest.store_events([*gateway, *after])
    assert {r[4] for r in _rows(db)} == {gone, kept, withdrawn}
    before = {c: reach_of(db, c) for c in ("c1", "c2")}
    theirs = {c: sum(1 for r in _rows(db) if r[:3] == (c, "", "") and r[4] == gone)
              for c in ("c1", "c2")}
    assert sum(theirs.values()) > 0
    # analytics withdrawn: the shopper's later events count as events, not as a shopper
    assert record_consent(db, withdrawn, "analytics", False, source="api") is not None
    late = Event(id="late", kind="offer_delivered", ts=1_765_000_000.0, store="s1",
                 campaign="c-late", offer="o-late", inbox=withdrawn)
    witness = Event(id="late-2", kind="offer_delivered", ts=1_765_000_000.0, store="s1",
                    campaign="c-late", offer="o-late-2", inbox=kept)
    ingest.store_events([late, witness])
    assert reach_of(db, "c-late").deliveries == 1 and funnel(db, "c-late")[0].deliveries == 2
    admin = bearer(token_for(db, "admin"))
    app = create_app(svc, Ingest(db))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://hq") as c:
        exported = (await c.get(f"/api/shoppers/{gone}/export", headers=admin)).json()["reach"]
        assert sorted((x["campaign"], x["store"], x["variant"], x["kind"], x["ts"])
                      for x in exported) == [r[:4] + r[5:] for r in _rows(db) if r[4] == gone]
        r = await c.delete(f"/api/shoppers/{gone}", headers=admin)
        assert r.status_code == 200, r.text
    rows = _rows(db)
    assert gone not in {r[4] for r in rows} and {kept, withdrawn} <= {r[4] for r in rows}
    for c in ("c1", "c2"):  # one shopper fewer at each stage they had reached
        less = sum(getattr(before[c], f) - getattr(reach_of(db, c), f) for f in STAGES.values())
        assert less == theirs[c]
    rebuild(db)  # the same as counting the events that still name a shopper
    assert _rows(db) == rows


async def test_retention_keeps_a_shopper_reached_within_the_window(db: HqDb) -> None:
    clock = FakeClock()
    now = clock.time()
    ingest = Ingest(db)

    def delivered(eid: str, inbox: str, days: float) -> Event:
        return Event(id=eid, kind="offer_delivered", ts=now - days * _DAY, store="s1",
                     campaign="c1", offer=f"o-{eid}", inbox=inbox)

    # newest first for "both": a later, older event must not age the row
    ingest.store_events([delivered("b-new", "both", 10), delivered("c", "recent", 10)])
    ingest.store_events([delivered("b-old", "both", 500), delivered("a", "old", 500)])
    assert reach_of(db, "c1").deliveries == 3
    assert await EventRetention(db, events_days=400, batch=2, clock=clock.time).purge() == 2 + 2
    assert reach_of(db, "c1").deliveries == 2
    assert {r[4] for r in _rows(db) if r[1] == ""} == {"both", "recent"}
    rows = _rows(db)
    rebuild(db)
    assert _rows(db) == rows
