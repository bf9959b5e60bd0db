"""Retention at HQ: what happened longer ago than ``[retention] events_days`` is deleted.

:class:`EventRetention` runs as the leader's named task ``hq-retention`` (one worker
deletes; followers do not race it). Every ``every_s`` it deletes, table by table
(:data:`PURGES`), the rows older than the window in batches of ``batch`` rows, each
batch its own short transaction and one hop off the event loop, so ingest on the same
database never waits long for the write lock; it logs progress per run and counts rows
in ``/metrics`` (``aislecast_retention_*``, per table). The clock is a parameter, so
tests move time instead of waiting for it. ``events_days = 0`` turns it off.

Purged: the event log, the till's refused codes, purchase lines and redemptions (a
redemption only once its code has expired too, so a code is never redeemable twice),
lead forms, and the shoppers' reach rows (:mod:`hq.reach`: each with the newest event
it counts, so reach stays the distinct shoppers of the events kept). Every other table
whose rows carry a time is kept on purpose, for the reason in :data:`KEPT` (consent
proof, erasure tombstones, the audit trail, anonymous rollups, feed de-duplication); a
test checks that each such table is named in one of the two. See docs/architecture.md#consent-and-data-rights.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from aislecast.kernel.counters import by, count
from aislecast.kernel.logs import get_logger
from hq.db import HqDb

__all__ = ["EVENTS_DAYS", "KEPT", "PURGES", "RETENTION_EVERY_S", "EventRetention", "Purge",
           "RetentionStats", "purge_events", "purge_rows"]

log = get_logger(__name__)

#: The default window: a year and a bit, so a year-on-year comparison has its year.
EVENTS_DAYS: Final = 400.0
RETENTION_EVERY_S: Final = 3600.0
_BATCH: Final = 5_000
_DAY_S: Final = 86_400.0


@dataclass(frozen=True, slots=True)
class Purge:
    """Rows of ``table`` matching ``where`` (each ``?`` is the cutoff) are deleted, a
    batch at a time, chosen by ``key`` (a primary key, or ``ts`` for a table without
    one: a batch then also takes the rows sharing its last ``ts``)."""

    table: str
    key: str
    where: str

    def sql(self) -> str:
        t, k, w = self.table, self.key, self.where
        return (f"DELETE FROM {t} WHERE {w} AND {k} IN"  # noqa: S608 - constants (PURGES)
                f" (SELECT {k} FROM {t} WHERE {w} LIMIT ?)")

    def params(self, cutoff: float, batch: int) -> tuple[float | int, ...]:
        n = self.where.count("?")
        return (*(cutoff,) * n, *(cutoff,) * n, batch)


#: What retention deletes, in this order (each indexed on its time, steps m0014, m0017).
PURGES: Final = (
    Purge("events", "id", "ts < ?"),
    Purge("code_refusals", "ts", "ts < ?"),
    Purge("purchases", "id", "ts < ?"),
    # a redeemed code's row is what refuses it as `used`; once expired it is refused as
    # `expired` without the row, so the row may go
    Purge("redemptions", "code", "ts < ? AND expires_at < ?"),
    Purge("leads", "id", "ts < ?"),
    # a shopper's reach row goes with the newest event it counts (hq.reach)
    Purge("reach", "ts", "ts < ?"),
)

#: Tables with a time column that retention keeps, and why (docs/architecture.md).
KEPT: Final = {
    "consent_history": "proof of consent: kept while the shopper is, deleted by erasure",
    "erasures": "anonymous tombstones: the proof that an erasure was done",
    "audit": "who changed what and when: the security record",
    "rollup_campaign_hours": "anonymous counts: the funnel does not change when events go",
    "rollup_hours": "anonymous counts: the funnel does not change when events go",
    "feed_items": "items already seen: a feed that still carries one must not propose it again",
}


def purge_rows(db: HqDb, purge: Purge, before: float, *, batch: int = _BATCH) -> int:
    """Delete one batch of ``purge.table`` older than ``before``; returns how many went."""
    return db.execute(purge.sql(), purge.params(before, batch))


def purge_events(db: HqDb, before: float, *, batch: int = _BATCH) -> int:
    """Delete one batch of events with ``ts < before``; returns how many went."""
    return purge_rows(db, PURGES[0], before, batch=batch)


@dataclass(slots=True)
class RetentionStats:
    runs: int = count("retention rounds run by the leader")
    events_deleted: int = count("events deleted as older than [retention] events_days")
    deleted: dict[str, int] = by("table", "rows deleted as older than [retention] events_days")


class EventRetention:
    def __init__(self, db: HqDb, *, events_days: float = EVENTS_DAYS,
                 every_s: float = RETENTION_EVERY_S, batch: int = _BATCH,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.keep_s = events_days * _DAY_S
        self.every_s = every_s
        self.batch = batch
        self.clock = clock
        self.stats = RetentionStats()

    async def purge(self) -> int:
        """One round: every batch older than the window, every table; returns the rows
        deleted."""
        if self.keep_s <= 0:
            return 0
        cutoff, total = self.clock() - self.keep_s, 0
        for p in PURGES:
            total += await self._purge_table(p, cutoff)
        self.stats.runs += 1
        return total

    async def _purge_table(self, p: Purge, cutoff: float) -> int:
        total = 0
        while True:
            n = await asyncio.to_thread(purge_rows, self.db, p, cutoff, batch=self.batch)
            total += n
            if n:
                self.stats.deleted[p.table] = self.stats.deleted.get(p.table, 0) + n
            if p.table == "events":
                self.stats.events_deleted += n
            if n < self.batch:
                break
            log.info("retention: deleting old rows", table=p.table, deleted=total)
        if total:
            log.info("retention: old rows deleted", table=p.table, deleted=total, before=cutoff)
        return total

    async def run(self) -> None:
        while True:
            try:
                await self.purge()
            except Exception:  # the database may be busy or away: next round
                log.exception("retention round failed")
            await asyncio.sleep(self.every_s)
