"""A shopper's lead score: how likely they are to act, 0..1 (docs/architecture.md#leads).

``1 - exp(-z)`` with ``z`` the sum of what the event log shows of them:

* visits after the first (0.25 each) and dwell (1 per 300 s), as before leads existed;
* engagement with offers, weighted by how far along the funnel it is: an open 0.1, a
  click 0.3, a redemption 0.7, a submitted lead form 1.0, all scaled by the recency of
  the latest one (``exp(-age / 30 days)``), so a shopper who engaged last year fades.

The learner (:func:`hq.learning.profiles`) stores the score in each ``Profile.lead``,
which rides in the bundle and is the ranking model's ``lead`` feature at the gateways
(:mod:`gateway.ranking`: one multiply per candidate); :func:`lead_score_of` gives one
shopper's for the export.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Final

from hq.inbox_index import of_inbox

if TYPE_CHECKING:
    from hq.db import HqDb

__all__ = ["ENGAGEMENT_WEIGHTS", "RECENCY_S", "engagement", "lead_score", "lead_score_of",
           "visits_and_dwell"]

ENGAGEMENT_WEIGHTS: Final = {"offer_opened": 0.1, "offer_clicked": 0.3,
                             "offer_redeemed": 0.7, "lead_submitted": 1.0}
RECENCY_S: Final = 30 * 86_400.0
_KINDS: Final = ", ".join(f"'{k}'" for k in ENGAGEMENT_WEIGHTS)
_SESSION_S: Final = 1800.0  # zone events further apart than this start a new visit
_DWELL_EVERY_S: Final = 5.0  # one zone_dwell event per this many seconds (PRESENCE_DWELL_S)


def lead_score(visits: int, dwell_s: float, engaged: float = 0.0) -> float:
    """``engaged``: the recency-weighted engagement sum of :func:`engagement`."""
    return 1.0 - math.exp(-(0.25 * max(visits - 1, 0) + dwell_s / 300.0 + engaged))


def _one(db: HqDb, inbox: str | None) -> tuple[str, tuple[str, ...]]:
    """The condition (and its parameters) that narrows a query to ``inbox``'s events."""
    if inbox is None:
        return "", ()
    cond, params = of_inbox(db, inbox)
    return f"AND {cond}", params


def engagement(db: HqDb, *, inbox: str | None = None,
               now: float | None = None) -> dict[str, float]:
    """inbox -> weighted count of opens, clicks, redemptions and leads, times recency."""
    now = time.time() if now is None else now
    where, params = _one(db, inbox)
    total: dict[str, float] = defaultdict(float)
    last: dict[str, float] = {}
    for who, kind, n, ts in db.query(
            f"SELECT inbox, kind, count(*), max(ts) FROM events WHERE kind IN ({_KINDS})"  # noqa: S608
            f" AND inbox IS NOT NULL {where} GROUP BY inbox, kind", params):
        total[who] += ENGAGEMENT_WEIGHTS[kind] * int(n)
        last[who] = max(last.get(who, 0.0), float(ts))
    return {who: s * math.exp(-max(now - last[who], 0.0) / RECENCY_S) for who, s in total.items()}


def visits_and_dwell(db: HqDb, *, inbox: str | None = None) -> tuple[dict[str, int], dict[str, float]]:
    """inbox -> visits (zone events further apart than 30 min start one), and dwell s."""
    where, params = _one(db, inbox)
    visits: dict[str, int] = defaultdict(int)
    dwell: dict[str, float] = defaultdict(float)
    last: dict[str, float] = {}
    for who, kind, ts in db.query(
            "SELECT inbox, kind, ts FROM events WHERE kind IN ('zone_enter', 'zone_dwell')"  # noqa: S608
            f" AND inbox IS NOT NULL {where} ORDER BY ts", params):
        if ts - last.get(who, -1e18) > _SESSION_S:
            visits[who] += 1
        last[who] = ts
        if kind == "zone_dwell":
            dwell[who] += _DWELL_EVERY_S
    return visits, dwell


def lead_score_of(db: HqDb, inbox: str, *, now: float | None = None) -> float:
    visits, dwell = visits_and_dwell(db, inbox=inbox)
    eng = engagement(db, inbox=inbox, now=now)
    return round(lead_score(visits[inbox], dwell[inbox], eng.get(inbox, 0.0)), 4)
