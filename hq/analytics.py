"""Per-campaign numbers from the event log: the funnel a marketer watches live."""

from __future__ import annotations

import msgspec

from hq.db import HqDb

__all__ = ["CampaignStats", "campaign_stats"]


class CampaignStats(msgspec.Struct):
    campaign: str
    decisions: int = 0
    holdout: int = 0
    impressions: int = 0  # offers published by a gateway
    deliveries: int = 0
    opens: int = 0
    clicks: int = 0
    redemptions: int = 0
    dismissals: int = 0
    ctr: float = 0.0  # clicks per delivery
    open_rate: float = 0.0


_KIND_FIELD = {
    "offer_published": "impressions",
    "offer_delivered": "deliveries",
    "offer_opened": "opens",
    "offer_clicked": "clicks",
    "offer_redeemed": "redemptions",
    "offer_dismissed": "dismissals",
}


def campaign_stats(db: HqDb) -> list[CampaignStats]:
    out: dict[str, CampaignStats] = {}
    rows = db.query(
        "SELECT campaign, kind, reason, count(*) FROM events WHERE campaign IS NOT NULL"
        " GROUP BY campaign, kind, reason"
    )
    for campaign, kind, reason, n in rows:
        s = out.setdefault(campaign, CampaignStats(campaign))
        if kind == "decision":
            s.decisions += n
            if reason == "holdout":
                s.holdout += n
        elif kind in _KIND_FIELD:
            name = _KIND_FIELD[kind]
            setattr(s, name, getattr(s, name) + n)
    for s in out.values():
        s.ctr = round(s.clicks / s.deliveries, 4) if s.deliveries else 0.0
        s.open_rate = round(s.opens / s.deliveries, 4) if s.deliveries else 0.0
    return sorted(out.values(), key=lambda s: s.campaign)
