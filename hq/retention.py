"""Retention at HQ: events older than ``[retention] events_days`` are deleted.

:class:`EventRetention` runs as the leader's named task ``hq-retention`` (one worker
deletes; followers do not race it). Every ``every_s`` it deletes the events older than
the window in batches of ``batch`` rows, each batch its own short transaction and one
hop off the event loop, so ingest on the same database never waits long for the
write lock; it logs progress per run and counts rows in ``/metrics``
(``aislecast_retention_*``). The clock is a parameter, so tests move time instead of
waiting for it. ``events_days = 0`` turns it off.

See docs/architecture.md#consent-and-data-rights.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from aislecast.kernel.counters import count
from aislecast.kernel.logs import get_logger
from hq.db import HqDb

__all__ = ["EVENTS_DAYS", "RETENTION_EVERY_S", "EventRetention", "RetentionStats", "purge_events"]

log = get_logger(__name__)

#: The default window: a year and a bit, so a year-on-year comparison has its year.
EVENTS_DAYS: Final = 400.0
RETENTION_EVERY_S: Final = 3600.0
_BATCH: Final = 5_000
_DAY_S: Final = 86_400.0


def purge_events(db: HqDb, before: float, *, batch: int = _BATCH) -> int:
    """Delete one batch of events with ``ts < before``; returns how many went."""
    return db.execute("DELETE FROM events WHERE id IN (SELECT id FROM events WHERE ts < ?"
                      " LIMIT ?)", (before, batch))


@dataclass(slots=True)
class RetentionStats:
    runs: int = count("retention rounds run by the leader")
    events_deleted: int = count("events deleted as older than [retention] events_days")


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
        """One round: every batch older than the window; returns the rows deleted."""
        if self.keep_s <= 0:
            return 0
        cutoff, total = self.clock() - self.keep_s, 0
        while True:
            n = await asyncio.to_thread(purge_events, self.db, cutoff, batch=self.batch)
            total += n
            self.stats.events_deleted += n
            if n < self.batch:
                break
            log.info("retention: deleting old events", deleted=total)
        self.stats.runs += 1
        if total:
            log.info("retention: old events deleted", deleted=total, before=cutoff)
        return total

    async def run(self) -> None:
        while True:
            try:
                await self.purge()
            except Exception:  # the database may be busy or away: next round
                log.exception("retention round failed")
            await asyncio.sleep(self.every_s)
