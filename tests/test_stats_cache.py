"""The console stats cache (hq.stats_cache): on SQLite and PostgreSQL, the cached
answer of campaign_stats equals the one computed afresh after each kind of change
(a purchase, a decision, a phone's redeemed on a till-code offer, an erasure), and an
unchanged database is answered from the cache (the witness that it caches at all)."""

from __future__ import annotations

import msgspec

from aislecast.kernel.campaign import Attribution, Campaign, Creative
from aislecast.kernel.schema import Event
from hq.analytics import campaign_stats
from hq.db import HqDb
from hq.ingest import Ingest
from hq.rights import _erase_rows
from hq.stats_cache import StatsCache
from tests.purchases import add_purchase


def _decisions(n: int, cid: str, store: str, start: int = 0) -> list[Event]:
    return [Event(id=f"{cid}-d{i}", kind="decision", ts=1000.0 + i, store=store, campaign=cid,
                  inbox=f"i{i}", reason="holdout" if i % 4 == 0 else "offer",
                  variant=None if i % 4 == 0 else "ab"[i % 2], holdout=True if i % 4 == 0 else None)
            for i in range(start, start + n)]


def _till_offer(cid: str, store: str, i: int, *, redeemed: bool) -> list[Event]:
    offer = f"{i:010x}" + "0" * 22
    ev = [Event(id=f"p-{cid}-{i}", kind="offer_published", ts=1000.0 + i, store=store,
                campaign=cid, variant="a", offer=offer, inbox=f"i{i}", reason="till_code")]
    if redeemed:  # the phone says so too: the shopper's claim, not counted again
        ev.append(Event(id=f"r-{cid}-{i}", kind="offer_redeemed", ts=1001.0 + i, store=store,
                        campaign=cid, variant="a", offer=offer, inbox=f"i{i}"))
    return ev


def _same(db: HqDb, cache: StatsCache) -> None:
    fresh = msgspec.to_builtins(campaign_stats(db, cache=False))
    assert msgspec.to_builtins(campaign_stats(db, cache=cache)) == fresh
    assert msgspec.to_builtins(campaign_stats(db, "c1", cache=cache)) == [
        s for s in fresh if s["campaign"] == "c1"]


def test_cached_stats_equal_fresh_ones_after_every_change(db: HqDb) -> None:
    for cid, store in (("c1", "s1"), ("c2", "s2")):
        c = Campaign(id=cid, name=cid, stores=[store], creatives=[Creative("a", "A"), Creative("b", "B")],
                     attribution=Attribution(window_s=7200.0, min_per_arm=10))
        db.execute("INSERT INTO campaigns (id, body, status, updated_at) VALUES (?, ?, 'live', 0)",
                   (cid, msgspec.json.encode(c).decode()))
    ingest = Ingest(db)
    ingest.store_events(_decisions(80, "c1", "s1") + _decisions(60, "c2", "s2")
                        + _till_offer("c1", "s1", 1, redeemed=True)
                        + _till_offer("c1", "s1", 2, redeemed=False))
    for i in range(0, 80, 3):
        add_purchase(db, store="s1", inbox=f"i{i}", ts=1000.0 + i + 60, value_cents=300)
    cache = StatsCache()
    _same(db, cache)
    [c1] = campaign_stats(db, "c1", cache=cache)
    assert c1.lift_status == "ok" and c1.redemptions == 0  # the phone's claim taken off
    misses = cache.stats.misses
    _same(db, cache)  # nothing changed: answered from the cache
    assert cache.stats.misses == misses and cache.stats.hits > 0
    # a purchase at s1: c1's lift recomputed, c2's (store s2) kept
    add_purchase(db, store="s1", inbox="i1", ts=1061.0, value_cents=500)
    _same(db, cache)
    # a new decision of c2, a phone's redeemed on c1's second till-code offer
    late = Event(id="r-late", kind="offer_redeemed", ts=1003.0, store="s1", campaign="c1",
                 variant="a", offer=f"{2:010x}" + "0" * 22, inbox="i2")
    ingest.store_events([*_decisions(1, "c2", "s2", start=60), late])
    _same(db, cache)
    # an erasure: inboxes nulled, no count changes; the tombstone invalidates
    db.execute("INSERT INTO shoppers (inbox, identity_key, consents, created_at)"
               " VALUES ('i3', 'k', '{}', 0)")
    before = msgspec.to_builtins(campaign_stats(db, "c1", cache=cache))
    _erase_rows(db, "i3")
    _same(db, cache)
    assert msgspec.to_builtins(campaign_stats(db, "c1", cache=cache)) != before
