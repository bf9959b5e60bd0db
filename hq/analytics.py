"""Per-campaign numbers: the funnel a marketer watches live (from the rollups that ingest
keeps, hq.funnel), and lift (from the event log).

Lift compares the conversion rate of shoppers who were offered the campaign with the
holdout (control) shoppers the gateways logged but never messaged, per shopper. A
treated shopper converts when one of their offers of the campaign is redeemed; a
control shopper converts when the till reports the campaign's product bought by them
(an ``offer_redeemed`` event with ``holdout: true``, from the POS feed or the
simulator). The 95 % interval is the normal (Wald) interval of a difference of two
proportions; lift is reported only when both groups have shoppers.
"""

from __future__ import annotations

import math

import msgspec

from hq.db import HqDb
from hq.funnel import copy_counts, finish, funnel_totals

__all__ = ["CampaignStats", "campaign_stats", "lift_ci"]


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
    ctr: float = 0.0  # clicks per delivery
    open_rate: float = 0.0
    stopped: dict[str, int] = msgspec.field(default_factory=dict)  # reason -> decisions
    treated: int = 0  # shoppers offered
    control: int = 0  # holdout shoppers
    conv_treated: float = 0.0
    conv_control: float = 0.0
    lift: float | None = None
    lift_lo: float | None = None
    lift_hi: float | None = None


def lift_ci(n_t: int, x_t: int, n_c: int, x_c: int, z: float = 1.96
            ) -> tuple[float, float, float]:
    """Difference of conversion rates (treated - control) with its Wald interval."""
    p_t, p_c = x_t / n_t, x_c / n_c
    se = math.sqrt(p_t * (1 - p_t) / n_t + p_c * (1 - p_c) / n_c)
    d = p_t - p_c
    return d, d - z * se, d + z * se


def _groups(db: HqDb) -> dict[str, tuple[int, int, int, int]]:
    """campaign -> (treated shoppers, treated converted, control, control converted)."""
    q = {
        "t": "SELECT campaign, count(DISTINCT inbox) FROM events WHERE kind = 'decision'"
             " AND reason = 'offer' GROUP BY campaign",
        "c": "SELECT campaign, count(DISTINCT inbox) FROM events WHERE kind = 'decision'"
             " AND reason = 'holdout' GROUP BY campaign",
        "xt": "SELECT campaign, count(DISTINCT inbox) FROM events WHERE kind = 'offer_redeemed'"
              " AND (holdout IS NULL OR holdout = 0) GROUP BY campaign",
        "xc": "SELECT campaign, count(DISTINCT inbox) FROM events WHERE kind = 'offer_redeemed'"
              " AND holdout = 1 GROUP BY campaign",
    }
    got = {k: {str(c): int(n) for c, n in db.query(sql) if c} for k, sql in q.items()}
    ids = set().union(*got.values())
    return {c: (got["t"].get(c, 0), got["xt"].get(c, 0), got["c"].get(c, 0),
                got["xc"].get(c, 0)) for c in ids}


def campaign_stats(db: HqDb, campaign: str | None = None) -> list[CampaignStats]:
    out: dict[str, CampaignStats] = {}
    for cid, counts in funnel_totals(db).items():  # the funnel: from the rollups
        copy_counts(out.setdefault(cid, CampaignStats(cid)), counts)
    for cid, (n_t, x_t, n_c, x_c) in _groups(db).items():
        s = out.setdefault(cid, CampaignStats(cid))
        s.treated, s.control = n_t, n_c
        s.conv_treated = round(x_t / n_t, 4) if n_t else 0.0
        s.conv_control = round(x_c / n_c, 4) if n_c else 0.0
        if n_t and n_c:
            d, lo, hi = lift_ci(n_t, x_t, n_c, x_c)
            s.lift, s.lift_lo, s.lift_hi = round(d, 4), round(lo, 4), round(hi, 4)
    for s in out.values():
        finish(s)
    stats = sorted(out.values(), key=lambda s: s.campaign)
    return stats if campaign is None else [s for s in stats if s.campaign == campaign]
