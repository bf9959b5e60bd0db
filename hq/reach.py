"""Reach: how many *different* shoppers each stage of a campaign's funnel reached, exactly.

The rollups (:mod:`hq.rollup_schema`) count events; a marketer also asks how many
shoppers were delivered an offer, opened, clicked, redeemed or submitted a lead. Those
distinct counts come from one table kept at ingest, ``reach``: a row per (campaign,
grain, stage, shopper), whatever the number of events, so it is bounded by shoppers x
campaigns x stages x (1 + stores + variants each shopper met), not by the event log:

======================  =================================================================
``store = variant = ''``  the whole campaign: one row per stage and shopper
``store`` set             per store (``variant`` ``''``)
``variant`` set           per variant (``store`` ``''``; an event without one has no row)
======================  =================================================================

``kind`` is the stage's event kind (:data:`STAGES`), ``inbox`` the shopper, ``ts`` the
newest such event (what retention ages the row by, :mod:`hq.retention`). The primary key
puts a campaign's rows of a grain side by side, so each count is ``count(*)`` over an
index range. Counted: the stage events that carry an inbox and a campaign. The events of
a shopper who does not grant ``analytics`` are stored without their inbox
(:mod:`hq.purposes`), so they are in the funnel's event counts and in no shopper count;
nor is a phone's ``offer_redeemed`` on an offer published with a till code (the till's
redemption is the one that counts, as in :func:`hq.analytics.campaign_stats`).

The rows always equal what :func:`rebuild` computes from ``events``: ingest adds the new
events' rows in their batch's transaction with the same SQL (:func:`upsert_sql`: on
SQLite one statement per batch, on PostgreSQL a CTE of the batch's one statement,
:mod:`hq.rollups`), erasure deletes the shopper's rows (:mod:`hq.rights`) as it takes
the inbox off their events, and retention deletes a row once its newest event is past
the window, as it deletes the events. Conversions (a till purchase after the offer) are
lift's (:mod:`hq.lift`): ``converted_treated``, per campaign and variant.

Like :mod:`hq.rollups`, no runtime import of :mod:`hq.db` (hq.migrations imports this).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

import msgspec

if TYPE_CHECKING:
    from hq.db import HqDb

__all__ = ["STAGES", "Reach", "counted", "m0017_reach", "reach_by", "reach_of",
           "rebuild", "upsert_sql"]

#: Each stage's event kind -> its count's name (the funnel's name for the event count).
STAGES: Final = {"offer_delivered": "deliveries", "offer_opened": "opens",
                 "offer_clicked": "clicks", "offer_redeemed": "redemptions",
                 "lead_submitted": "leads"}
_KEY: Final = ("campaign", "store", "variant", "kind", "inbox")
_KINDS: Final = ", ".join(f"'{k}'" for k in STAGES)


class Reach(msgspec.Struct):
    """Different shoppers per stage (each at most the stage's event count)."""

    deliveries: int = 0
    opens: int = 0
    clicks: int = 0
    redemptions: int = 0
    leads: int = 0


def _select(source: str, where: str) -> str:
    """The reach rows of ``source``'s events (``events`` or a CTE of the same columns),
    one per key with its newest ``ts``, in key order (two workers adding the same rows
    queue instead of deadlocking)."""
    grain = "CASE g.k WHEN 1 THEN e.store ELSE '' END, CASE g.k WHEN 2 THEN e.variant ELSE '' END"
    return (
        f"SELECT e.campaign, {grain}, e.kind, e.inbox, max(e.ts)"  # noqa: S608 - constants
        f" FROM {source} e CROSS JOIN (SELECT 0 AS k UNION ALL SELECT 1 UNION ALL SELECT 2) g"
        f" WHERE e.kind IN ({_KINDS}) AND e.inbox <> '' AND e.campaign <> ''"
        " AND (g.k = 0 OR (CASE g.k WHEN 1 THEN e.store ELSE e.variant END) <> '')"
        # a phone's claim on a till-code offer: the till's redemption is what counts
        " AND NOT (e.kind = 'offer_redeemed' AND e.reason IS NULL AND EXISTS (SELECT 1"
        " FROM events p WHERE p.offer = e.offer AND p.kind = 'offer_published'"
        f" AND p.reason = 'till_code')){where} GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5")


def upsert_sql(source: str, where: str = "") -> str:
    """Add the reach rows of ``source``'s events (``where``: more conditions on ``e``);
    a row already there keeps the newer ``ts``. The same SQL on both databases."""
    cols = ", ".join(_KEY)
    return (f"INSERT INTO reach ({cols}, ts) {_select(source, where)}"
            f" ON CONFLICT ({cols}) DO UPDATE SET ts = excluded.ts WHERE excluded.ts > reach.ts")


def counted(kind: str, inbox: str | None, campaign: str | None) -> bool:
    """Whether an event may add a reach row (:func:`upsert_sql` decides the rest)."""
    return kind in STAGES and bool(inbox) and bool(campaign)


def rebuild(db: HqDb) -> None:
    """Every reach row from ``events``, replacing what the table held."""
    db.execute("DELETE FROM reach")
    db.execute(upsert_sql("events"))


def m0017_reach(db: HqDb) -> None:
    """Distinct shoppers per campaign and stage (hq.reach), backfilled from the events;
    indexed by shopper for erasure and by time for retention."""
    key = ", ".join(_KEY)
    tail = " WITHOUT ROWID" if db.dialect == "sqlite" else ""
    db.execute("CREATE TABLE reach (campaign TEXT NOT NULL, store TEXT NOT NULL,"
               " variant TEXT NOT NULL, kind TEXT NOT NULL, inbox TEXT NOT NULL,"
               f" ts DOUBLE PRECISION NOT NULL, PRIMARY KEY ({key})){tail}")
    db.execute("CREATE INDEX reach_inbox ON reach (inbox)")
    db.execute("CREATE INDEX reach_ts ON reach (ts)")
    rebuild(db)


def _tally(rows: Iterable[tuple[Any, ...]]) -> dict[str, Reach]:
    """(group, kind, n) rows -> group -> its :class:`Reach`."""
    out: dict[str, Reach] = {}
    for group, kind, n in rows:
        setattr(out.setdefault(str(group), Reach()), STAGES[str(kind)], int(n))
    return out


def reach_of(db: HqDb, campaign: str, stores: Iterable[str] | None = None) -> Reach:
    """``campaign``'s different shoppers per stage, in all (or in ``stores``: a shopper
    met in two of them is one)."""
    if stores is None:
        rows = db.query("SELECT '', kind, count(*) FROM reach WHERE campaign = ? AND store = ''"
                        " AND variant = '' GROUP BY kind", (campaign,))
    else:
        chosen = sorted(set(stores))
        if not chosen:
            return Reach()
        rows = db.query("SELECT '', kind, count(DISTINCT inbox) FROM reach"  # noqa: S608 - marks
                        f" WHERE campaign = ? AND store IN ({', '.join('?' * len(chosen))})"
                        " GROUP BY kind", (campaign, *chosen))
    return _tally(rows).get("", Reach())


def reach_by(db: HqDb, campaign: str, column: str, stores: Iterable[str] | None = None
             ) -> dict[str, Reach]:
    """``campaign``'s different shoppers per stage and ``column`` value (``store`` or
    ``variant``; per store only ``stores`` when given)."""
    # ranges of the primary key, grouped in its order (no sort): ``> ''`` and the
    # store rows' constant variant ``''`` in the GROUP BY are what let the planner see it
    if column == "variant":
        return _tally(db.query("SELECT variant, kind, count(*) FROM reach WHERE campaign = ?"
                               " AND store = '' AND variant > '' GROUP BY variant, kind",
                               (campaign,)))
    if column != "store":
        raise ValueError(f"no reach by {column!r}")
    only, params = "", [campaign]
    if stores is not None:
        chosen = sorted(set(stores))
        only, params = f" AND store IN ({', '.join('?' * len(chosen))})", [campaign, *chosen]
        if not chosen:
            return {}
    return _tally(db.query("SELECT store, kind, count(*) FROM reach"  # noqa: S608 - marks
                           f" WHERE campaign = ? AND store > ''{only}"
                           " GROUP BY store, variant, kind", params))
