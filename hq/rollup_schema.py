"""The rollup tables: what they key on, their DDL, and the backfill from ``events``.

Three tables count events per key, from coarse to fine; every key also holds the
event's ``kind`` and ``reason`` (a decision's outcome, a tap's ``tap``/``scan``), and
the value ``n`` is a count of events, not of distinct shoppers (those are
:mod:`hq.reach`'s: a row per shopper, campaign, stage and store or variant, bounded by
the shoppers and campaigns rather than by the events; an hour or zone per shopper as
well would grow with the visits, so reach has no such breakdown):

=========================  ============================================================
``rollup_totals``          campaign, store: the console's per-campaign funnel, by store
``rollup_campaign_hours``  campaign, hour: a campaign's hourly series
``rollup_hours``           campaign, hour, store, zone, variant, trigger_kind: the rest
=========================  ============================================================

A missing value is ``''`` in a key (PostgreSQL's primary keys refuse NULL, and
SQLite's would let each NULL be a new row). ``hour`` is the start of the UTC hour in
epoch seconds; an event whose time is outside 0..1e12 s is counted in hour 0.

This module and :mod:`hq.rollups` (which maintains the tables at ingest, and holds the
migration step) have no runtime import of :mod:`hq.db`: hq.migrations imports them,
and hq.db imports hq.migrations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from aislecast.kernel.campaign import TRIGGER_KINDS

if TYPE_CHECKING:
    from hq.db import HqDb

__all__ = ["DIMENSIONS", "ROLLUPS", "Rollup", "cover_hours", "create", "fill_columns", "hour_of",
           "key_sql", "rebuild", "trigger_sql"]

#: Every key column an event can be counted under, in primary-key order.
DIMENSIONS: Final = ("campaign", "hour", "store", "zone", "variant", "trigger_kind")
_MAX_TS: Final = 1e12


@dataclass(frozen=True, slots=True)
class Rollup:
    table: str
    dims: tuple[str, ...]  # key columns before kind and reason, a prefix-ordered subset

    @property
    def key(self) -> tuple[str, ...]:
        return (*self.dims, "kind", "reason")

    def ddl(self, dialect: str) -> str:
        cols = ", ".join(f"{c} {'BIGINT' if c == 'hour' else 'TEXT'} NOT NULL" for c in self.key)
        tail = " WITHOUT ROWID" if dialect == "sqlite" else ""
        return (f"CREATE TABLE {self.table} ({cols}, n BIGINT NOT NULL,"
                f" PRIMARY KEY ({', '.join(self.key)})){tail}")


#: Coarsest first: a query reads the first one holding every column it needs.
ROLLUPS: Final = (
    Rollup("rollup_totals", ("campaign", "store")),
    Rollup("rollup_campaign_hours", ("campaign", "hour")),
    Rollup("rollup_hours", DIMENSIONS),
)


def hour_of(ts: float) -> int:
    """The UTC hour bucket of ``ts`` (0 for a time that is not finite or not in 0..1e12)."""
    if not (math.isfinite(ts) and 0 <= ts < _MAX_TS):
        return 0
    return int(ts // 3600) * 3600


def _hour_sql(dialect: str) -> str:
    # floor for ts >= 0: SQLite's CAST truncates, PostgreSQL's rounds (so floor() there)
    whole = ("CAST(floor(ts / 3600) AS BIGINT)" if dialect == "postgresql"
             else "CAST(ts / 3600 AS INTEGER)")
    return f"(CASE WHEN ts >= 0 AND ts < {_MAX_TS:.0f} THEN {whole} * 3600 ELSE 0 END)"


def trigger_sql() -> str:
    """``trigger_kind`` of the events whose kind says it (as :func:`hq.rollups.trigger_of`)."""
    return ("CASE kind WHEN 'zone_enter' THEN 'enter' WHEN 'zone_dwell' THEN 'dwell'"
            " WHEN 'zone_exit' THEN 'exit'"
            " WHEN 'tap' THEN CASE WHEN reason = 'scan' THEN 'scan' ELSE 'tap' END END")


def key_sql(r: Rollup, dialect: str) -> str:
    """``r``'s key computed from an events row (``''`` for NULL), as ingest computes it."""
    return ", ".join(_hour_sql(dialect) if c == "hour" else f"COALESCE({c}, '')" for c in r.key)


def _select(db: HqDb, r: Rollup) -> str:
    cols = key_sql(r, db.dialect)
    return f"SELECT {cols}, count(*) FROM events GROUP BY {cols}"  # noqa: S608 - constants


_OFFER_KINDS: Final = ("'offer_published', 'offer_delivered', 'offer_opened', 'offer_clicked',"
                      " 'offer_redeemed', 'offer_dismissed'")


def _said_trigger(dialect: str) -> str:
    if dialect == "postgresql":
        return "(CAST(body AS json) -> 'detail' ->> 'trigger')"
    return "json_extract(body, '$.detail.trigger')"


def fill_columns(db: HqDb) -> None:
    """Fill ``trigger_kind`` where the events say it, and an offer's feedback's variant,
    zone and trigger from its decision and publication (as :func:`hq.rollups.fill`)."""
    db.execute(f"UPDATE events SET trigger_kind = {trigger_sql()}"  # noqa: S608 - constant
               " WHERE trigger_kind IS NULL AND kind IN ('zone_enter', 'zone_dwell',"
               " 'zone_exit', 'tap')")
    said = _said_trigger(db.dialect)
    kinds = ", ".join(f"'{k}'" for k in sorted(TRIGGER_KINDS))
    db.execute(f"UPDATE events SET trigger_kind = {said} WHERE trigger_kind IS NULL"  # noqa: S608
               f" AND kind = 'decision' AND {said} IN ({kinds})")
    db.execute("UPDATE events SET trigger_kind = (SELECT d.trigger_kind FROM events d"  # noqa: S608
               " WHERE d.offer = events.offer AND d.kind = 'decision'"
               " AND d.trigger_kind IS NOT NULL LIMIT 1) WHERE trigger_kind IS NULL"
               f" AND offer IS NOT NULL AND kind IN ({_OFFER_KINDS})")
    for col in ("variant", "zone"):  # phones send neither: from the offer's publication
        db.execute(f"UPDATE events SET {col} = (SELECT p.{col} FROM events p"  # noqa: S608
                   " WHERE p.offer = events.offer AND p.kind = 'offer_published'"
                   f" AND p.{col} IS NOT NULL LIMIT 1) WHERE {col} IS NULL"
                   f" AND offer IS NOT NULL AND kind IN ({_OFFER_KINDS})")


def rebuild(db: HqDb) -> None:
    """Every rollup from ``events``, replacing what it held."""
    for r in ROLLUPS:
        db.execute(f"DELETE FROM {r.table}")  # noqa: S608 - a constant
        db.execute(f"INSERT INTO {r.table} ({', '.join(r.key)}, n) {_select(db, r)}")


def create(db: HqDb) -> None:
    """The ``trigger_kind`` column and the rollup tables, empty."""
    db.execute("ALTER TABLE events ADD COLUMN trigger_kind TEXT")
    for r in ROLLUPS:
        db.execute(r.ddl(db.dialect))


def cover_hours(db: HqDb) -> None:
    """PostgreSQL: a covering index for a campaign's hourly series, so the 90-day series
    is an index-only scan of one contiguous stretch of the index (~120 pages at 10 M
    events) instead of a heap read scattered over ~3,800 pages: PostgreSQL's tables are
    heaps in insertion order, and a campaign's hours are upserted all through its life.
    SQLite needs none: its rollup tables are ``WITHOUT ROWID``, stored in key order."""
    if db.dialect == "postgresql":
        db.execute("CREATE INDEX rollup_campaign_hours_cover ON rollup_campaign_hours"
                   " (campaign, hour) INCLUDE (kind, reason, n)")
