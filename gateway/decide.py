"""Campaign decisions at the gateway (DESIGN §8), skeleton form.

trigger -> eligible campaigns (status, schedule, trigger kind, zone, consent) -> cap
-> deterministic holdout -> rank by priority -> offer with expiry. Every decision,
including "no offer", comes back with its reason so it can be logged as an event.
Cap counters live in SQLite, so they hold across gateway restarts.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

import sqlite_utils

from aislecast.schema import SCHEMA_VERSION, Campaign, Offer

__all__ = ["Decision", "DecisionEngine", "TriggerEvent", "in_holdout"]


@dataclass(frozen=True, slots=True)
class TriggerEvent:
    kind: str  # enter, dwell, exit, tap, scan, flash
    inbox: str
    zone: str | None
    unix_ts: float
    dwell_s: float = 0.0
    visit: str = ""  # visit id: caps "per visit" count within it


@dataclass(frozen=True, slots=True)
class Decision:
    trigger: TriggerEvent
    reason: str  # "offer", "holdout", or the rule that stopped the best candidate
    campaign: str | None = None
    variant: str | None = None
    offer: Offer | None = None

    @property
    def holdout(self) -> bool:
        return self.reason == "holdout"


def in_holdout(inbox: str, campaign: str, pct: float) -> bool:
    """Deterministic control-group membership: the same shopper+campaign always agrees."""
    if pct <= 0:
        return False
    h = int.from_bytes(hashlib.sha256(f"{inbox}|{campaign}".encode()).digest()[:8], "big")
    return (h / 2**64) * 100 < pct


class DecisionEngine:
    def __init__(self, db: sqlite_utils.Database, store: str) -> None:
        self.store = store
        self._conn = db.conn
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS caps (inbox TEXT, campaign TEXT, visit TEXT,"
            " n INTEGER, PRIMARY KEY (inbox, campaign, visit))"
        )
        self._campaigns: list[Campaign] = []
        self._opted_out: set[str] = set()
        self.decisions = 0
        self.offers = 0

    def load(self, campaigns: list[Campaign], opt_outs: list[str]) -> None:
        self._campaigns = sorted(
            (c for c in campaigns if self.store in c.stores), key=lambda c: -c.priority
        )
        self._opted_out = set(opt_outs)

    def opt_out(self, inboxes: list[str]) -> None:
        self._opted_out.update(inboxes)

    def upsert(self, campaigns: list[Campaign]) -> None:
        """Add or replace campaigns (deltas: flash campaigns and live edits)."""
        ids = {c.id for c in campaigns}
        keep = [c for c in self._campaigns if c.id not in ids]
        self._campaigns = sorted(keep + [c for c in campaigns if self.store in c.stores],
                                 key=lambda c: -c.priority)

    def pause(self, campaign_ids: list[str]) -> None:
        ids = set(campaign_ids)
        self._campaigns = [c for c in self._campaigns if c.id not in ids]

    def _count(self, inbox: str, campaign: str, visit: str) -> int:
        row = self._conn.execute(
            "SELECT n FROM caps WHERE inbox = ? AND campaign = ? AND visit = ?",
            (inbox, campaign, visit),
        ).fetchone()
        return int(row[0]) if row else 0

    def _charge(self, inbox: str, campaign: str, visit: str) -> None:
        self._conn.execute(
            "INSERT INTO caps(inbox, campaign, visit, n) VALUES (?, ?, ?, 1)"
            " ON CONFLICT(inbox, campaign, visit) DO UPDATE SET n = n + 1",
            (inbox, campaign, visit),
        )

    def decide(self, t: TriggerEvent) -> Decision:
        self.decisions += 1
        if t.inbox in self._opted_out:
            return Decision(t, "no_consent")
        reason = "no_campaign"
        for c in self._campaigns:
            if c.status != "live" or c.trigger.kind != t.kind:
                continue
            if c.trigger.zones and t.zone not in c.trigger.zones:
                continue
            if t.kind == "dwell" and t.dwell_s < c.trigger.min_dwell_s:
                reason = "dwell_too_short"
                continue
            s = c.schedule
            if (s.start is not None and t.unix_ts < s.start) or (s.end is not None and t.unix_ts >= s.end):
                reason = "outside_schedule"
                continue
            if self._count(t.inbox, c.id, t.visit) >= c.caps.per_shopper:
                reason = "cap_per_shopper"
                continue
            self._charge(t.inbox, c.id, t.visit)
            if in_holdout(t.inbox, c.id, c.holdout_pct):
                return Decision(t, "holdout", c.id)
            cr = c.creatives[0]
            offer = Offer(
                v=SCHEMA_VERSION,
                id=uuid.uuid4().hex,
                campaign=c.id,
                variant=cr.id,
                store=self.store,
                inbox=t.inbox,
                issued_at=t.unix_ts,
                expires_at=t.unix_ts + c.validity_s,
                title=cr.title,
                body=cr.body,
                format=cr.format,
                cta=cr.cta,
                url=cr.url,
                image_url=cr.image_url,
                coupon_code=cr.coupon_code,
                zone=t.zone,
            )
            self.offers += 1
            return Decision(t, "offer", c.id, cr.id, offer)
        return Decision(t, reason)
