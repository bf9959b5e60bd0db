"""Per-campaign numbers: the funnel a marketer watches live (from the rollups that ingest
keeps, hq.funnel), its different shoppers per stage (``shoppers``, hq.reach), and lift
(from the event log).

Lift (:mod:`hq.lift`) compares the till purchases of shoppers who were offered the
campaign with those of the holdout shoppers the gateways logged but never messaged,
within the campaign's attribution window, with Newcombe's hybrid score interval; it
is given only once both arms have the campaign's minimum of shoppers (``lift_status``
``ok``), else ``not_enough_data`` with the counts. ``offer_redeemed`` events (the
phone's report) count in the funnel only: holdout shoppers have no offer to redeem.
"""

from __future__ import annotations

from functools import partial
from typing import Final, Literal

import msgspec

from aislecast.kernel.campaign import Attribution, Campaign
from aislecast.kernel.schema import decode
from hq.db import HqDb
from hq.funnel import copy_counts, finish, funnel_totals
from hq.lift import ArmLift, campaign_lift
from hq.reach import Reach, reach_of
from hq.stats_cache import StatsCache, cache_of, lift_inputs

__all__ = ["CampaignStats", "campaign_stats"]


class CampaignStats(msgspec.Struct):
    campaign: str
    decisions: int = 0  # decisions naming this campaign (offer, holdout or a stop rule)
    offered: int = 0
    holdout: int = 0
    impressions: int = 0  # offers published by a gateway
    deliveries: int = 0
    opens: int = 0
    clicks: int = 0
    redemptions: int = 0
    dismissals: int = 0
    taps: int = 0  # NFC taps and QR scans attributed to the campaign (hq.rollups)
    scans: int = 0
    leads: int = 0  # lead forms submitted (hq.leads)
    shoppers: Reach = msgspec.field(default_factory=Reach)  # different shoppers (hq.reach)
    ctr: float = 0.0  # clicks per delivery
    open_rate: float = 0.0
    stopped: dict[str, int] = msgspec.field(default_factory=dict)  # reason -> decisions
    # lift (hq.lift): shoppers by their first decision, purchases in the window; the
    # flat fields for a glance, `overall` with the counts and incremental numbers
    treated: int = 0  # shoppers offered
    control: int = 0  # holdout shoppers
    conv_treated: float = 0.0  # conversion rates
    conv_control: float = 0.0
    lift_status: str = "not_enough_data"  # or "ok": both arms have min_per_arm shoppers
    min_per_arm: int = 0
    attribution_s: float = 0.0
    lift: float | None = None  # conv_treated - conv_control, only when lift_status is ok
    lift_lo: float | None = None
    lift_hi: float | None = None
    overall: ArmLift | None = None
    variants: list[ArmLift] = msgspec.field(default_factory=list)  # each vs the shared holdout




_CORRECTION: Final = (
    "SELECT r.campaign, count(*) FROM events r WHERE r.kind = 'offer_redeemed'"
    " AND r.reason IS NULL AND r.campaign IS NOT NULL{only} AND EXISTS (SELECT 1 FROM events p"
    " WHERE p.offer = r.offer AND p.kind = 'offer_published' AND p.reason = 'till_code')"
    " GROUP BY r.campaign")


def campaign_stats(db: HqDb, campaign: str | None = None, *,
                   cache: StatsCache | Literal[False] | None = None) -> list[CampaignStats]:
    """Every campaign's numbers (or ``campaign``'s only). Lift and the till-code
    correction come from ``cache`` (default: ``db``'s, :mod:`hq.stats_cache`), recomputed
    when their inputs changed; ``cache=False`` computes everything afresh."""
    out: dict[str, CampaignStats] = {}
    for cid, counts in funnel_totals(db).items():  # the funnel: from the rollups
        copy_counts(out.setdefault(cid, CampaignStats(cid)), counts)
    # a saved campaign that no event names yet has its zeros, in the list as alone
    saved = (db.query("SELECT id FROM campaigns") if campaign is None
             else db.query("SELECT id FROM campaigns WHERE id = ?", (campaign,)))
    for (cid,) in saved:
        out.setdefault(str(cid), CampaignStats(str(cid)))
    store = cache_of(db) if cache is None else cache or None
    inputs = None if store is None else lift_inputs(db)
    for cid, s in out.items():  # distinct shoppers per stage (hq.reach)
        if campaign is None or cid == campaign:
            s.shoppers = _reach(db, cid, s, store, inputs)
    # a till code's redemption is the till's (hq.till); a phone's "redeemed" on an offer
    # that carries one is the shopper's claim, not counted again
    if store is None:
        for cid, n in db.query(_CORRECTION.format(only="")):
            out[cid].redemptions -= n
    else:
        for cid, s in out.items():
            s.redemptions -= store.get("correction", cid, (s.impressions, s.redemptions),
                                       partial(_correction, db, cid))
    settings = _settings(db)
    for cid, s in out.items():
        if campaign is None or cid == campaign:
            a = settings.get(cid, Attribution())
            if store is None or inputs is None:
                lift = campaign_lift(db, cid, a)
            else:
                decided, bought, erased = inputs
                mine = decided.get(cid, ())
                sig = (mine, tuple(bought.get(st, (0, 0.0)) for st, _ in mine), erased,
                       a.window_s, a.min_per_arm, tuple(a.products), tuple(a.categories))
                lift = store.get("lift", cid, sig, partial(campaign_lift, db, cid, a))
            _fill_lift(s, lift, a)
    for s in out.values():
        finish(s)
    stats = sorted(out.values(), key=lambda s: s.campaign)
    return stats if campaign is None else [s for s in stats if s.campaign == campaign]


def _reach(db: HqDb, cid: str, s: CampaignStats, store: StatsCache | None,
           inputs: tuple[object, object, tuple[int, float]] | None) -> Reach:
    """Reach changes only with a stage event (its count in the rollups moves), an
    erasure (the tombstones) or retention (the cache's age limit)."""
    if store is None or inputs is None:
        return reach_of(db, cid)
    sig = (s.deliveries, s.opens, s.clicks, s.redemptions, s.leads, inputs[2])
    got: Reach = store.get("reach", cid, sig, partial(reach_of, db, cid))
    return msgspec.structs.replace(got)


def _correction(db: HqDb, cid: str) -> int:
    row = db.one(_CORRECTION.format(only=" AND r.campaign = ?"), (cid,))
    return 0 if row is None else int(row[1])


def _settings(db: HqDb) -> dict[str, Attribution]:
    return {c.id: c.attribution for c in (decode(body, Campaign) for (body,) in
                                          db.query("SELECT body FROM campaigns"))}


def _fill_lift(s: CampaignStats, lift: tuple[ArmLift, list[ArmLift]], a: Attribution) -> None:
    o, variants = lift
    s.overall, s.variants = msgspec.structs.replace(o), [msgspec.structs.replace(v)
                                                          for v in variants]
    s.treated, s.control, s.conv_treated, s.conv_control = (o.treated, o.control, o.rate_treated,
                                                            o.rate_control)
    s.lift_status, s.min_per_arm, s.attribution_s = o.status, a.min_per_arm, a.window_s
    s.lift, s.lift_lo, s.lift_hi = o.lift, o.lift_lo, o.lift_hi
