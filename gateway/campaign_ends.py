"""Which campaigns a gateway holds, and when the ones it held end: what tells
:meth:`gateway.caps.CapLedger.prune_lifetime` that a campaign's lifetime counts can go.

``cap_lifetime`` has one row per shopper and campaign charged, with no time (a "once
ever" cap must hold for as long as the campaign runs). A campaign's rows go once both
hold: it is no longer in the gateway's bundle (nor in a delta since), and its
``schedule.end`` has passed. Its end time is known from the last bundle or delta that
named it, kept in ``cap_campaigns`` (campaign id and end, nothing about shoppers), so
it holds across restarts.

Kept on purpose:

* a campaign still in the bundle, ended or not (HQ still sends it);
* a campaign that left the bundle before its end (paused: it may come back, and its
  "ever" cap must still hold then);
* a campaign with no end (``schedule.end`` unset): nothing says it will not come back;
* a campaign this gateway never saw in a bundle or delta (a peer's charge for a
  campaign of a newer bundle, or rows older than ``cap_campaigns``): no end is known.

A campaign that comes back after its rows went (HQ moved its end later and sent it
again) counts from zero: its "ever" cap holds from its return.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from aislecast.kernel.campaign import Campaign

__all__ = ["CampaignEnds"]

_UPSERT = ("INSERT INTO cap_campaigns(campaign, ends_at) VALUES (?, ?)"
           " ON CONFLICT(campaign) DO UPDATE SET ends_at = excluded.ends_at")


class CampaignEnds:
    """``held``: the campaigns of the bundle and the deltas since; ``ends``: the end time
    (``None``: open) of each campaign held since its rows were last pruned, as in
    ``cap_campaigns``; ``pruned``: campaigns whose rows went in this process (a late
    peer charge of one is not counted again)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn  # table cap_campaigns (gateway.storage, step m0004)
        self.held: set[str] = set()
        self.pruned: set[str] = set()
        self.ends: dict[str, float | None] = {
            str(c): None if e is None else float(e)
            for c, e in conn.execute("SELECT campaign, ends_at FROM cap_campaigns")}

    def hold(self, campaigns: Iterable[Campaign], *, replace: bool) -> None:
        """The campaigns of a bundle (``replace``: they are all the gateway holds now) or
        of a delta (added to them); their end times are written when new or moved."""
        ends = {c.id: c.schedule.end for c in campaigns}
        self.held = set(ends) if replace else self.held | set(ends)
        self.pruned -= set(ends)
        changed = [(c, e) for c, e in ends.items() if c not in self.ends or self.ends[c] != e]
        if not changed:
            return
        if self._conn.in_transaction:  # rides in the caller's transaction
            self._conn.executemany(_UPSERT, changed)
        else:
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany(_UPSERT, changed)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        self.ends.update(changed)

    def ended(self, now: float) -> list[str]:
        """The campaigns not held any more whose end is at or before ``now``."""
        return sorted(c for c, end in self.ends.items()
                      if c not in self.held and end is not None and end <= now)

    def prune(self, now: float) -> tuple[frozenset[str], int]:
        """Delete the ``cap_lifetime`` rows of the campaigns :meth:`ended` by ``now``, and
        their ``cap_campaigns`` rows, in one transaction; returns those campaigns and the
        rows deleted."""
        gone = self.ended(now)
        if not gone:
            return frozenset(), 0
        keys = [(c,) for c in gone]
        self._conn.execute("BEGIN")
        try:
            n = int(self._conn.executemany("DELETE FROM cap_lifetime WHERE campaign = ?",
                                           keys).rowcount or 0)
            self._conn.executemany("DELETE FROM cap_campaigns WHERE campaign = ?", keys)
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")
        for c in gone:
            del self.ends[c]
        self.pruned.update(gone)
        return frozenset(gone), n
