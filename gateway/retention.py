"""Retention at the gateway: history older than a day goes, on a schedule.

A gateway is no archive: HQ keeps what it needs. :class:`EdgeRetention` runs from the
gateway's ticker every :data:`RETENTION_EVERY_S` (and once at the first tick), whether or
not anyone is deciding offers:

* outbox events (sightings, presence, decisions) older than :data:`EDGE_HISTORY_S`
  (24 h) that HQ never took, deleted: after a day offline they would skew HQ's live
  numbers more than they add;
* visit rows not seen for :data:`EDGE_HISTORY_S` (visits end after minutes; this is
  the backstop for a file whose heartbeat was lost);
* the cap ledger pruned (:meth:`gateway.caps.CapLedger.prune`): at a new local day the
  day key of the day before yesterday is destroyed (gateway.pseudonyms) and the charges
  made under it are deleted, even when nobody is deciding (a closed store at midnight);
* lifetime counts (``cap_lifetime``: no time, no day) of the campaigns that are no
  longer in the bundle and whose end has passed, deleted
  (:meth:`gateway.caps.CapLedger.prune_lifetime`; what is kept, and why, in
  gateway/campaign_ends.py: a paused campaign, one with no end, one never seen here);
* visit rows under a destroyed day key, deleted (the visit book ends those visits at
  its next sync; this is the backstop).

See docs/architecture.md#consent-and-data-rights.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Final

from gateway.caps import CapLedger
from gateway.outbox import Outbox

__all__ = ["EDGE_HISTORY_S", "RETENTION_EVERY_S", "EdgeRetention"]

EDGE_HISTORY_S: Final = 86_400.0
RETENTION_EVERY_S: Final = 600.0


@dataclass(slots=True)
class EdgeRetention:
    conn: sqlite3.Connection
    outbox: Outbox
    ledger: CapLedger
    history_s: float = EDGE_HISTORY_S
    every_s: float = RETENTION_EVERY_S
    next_at: float = float("-inf")
    runs: int = 0
    events_purged: int = 0
    visits_purged: int = 0
    charges_purged: int = 0
    lifetime_purged: int = 0

    def tick(self, now: float) -> bool:
        """Run :meth:`purge` if it is due (wall clock ``now``); True when it ran."""
        if now < self.next_at:
            return False
        self.next_at = now + self.every_s
        self.purge(now)
        return True

    def purge(self, now: float) -> None:
        cutoff = now - self.history_s
        self.events_purged += self.outbox.purge_events_before(cutoff)
        self.charges_purged += self.ledger.prune(now)  # first: it may start a new day
        self.lifetime_purged += self.ledger.prune_lifetime(now)
        cur = self.conn.execute("DELETE FROM visits WHERE last_seen < ? OR day < ?",
                                (cutoff, self.ledger.ps.yesterday or ""))
        self.visits_purged += int(cur.rowcount or 0)
        self.runs += 1
