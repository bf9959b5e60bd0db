"""Frequency caps and budget spend at the gateway, in memory and persisted in SQLite.

Every charge (an offer, or a holdout that *would* have been an offer) is one row in
``cap_charges``; on start the ledger replays the rows of the last ``keep_days`` days, so
caps hold across restarts. Charges made by the store's *other* gateways arrive as their
``decision`` events on the store's events topics and are applied here too (idempotent by
event id), so caps hold across the gateways of one store within one event batch
interval. Budgets are not shared that way: each gateway spends only HQ's cumulative
grant to it (``Budget.grants``), and its own cumulative spend is persisted here.
"""

from __future__ import annotations

import sqlite3
import time
from collections import defaultdict
from dataclasses import dataclass

from aislecast.kernel.campaign import Caps

__all__ = ["FLUSH_ROWS", "FLUSH_S", "SPEND_BLOCK", "VISIT_GAP_S", "CapLedger", "Charge"]

_DAY_S = 86_400.0
# Charges are written in batches of at most FLUSH_ROWS rows or FLUSH_S seconds: a crash
# forgets at most that much of the cap history (budgets are protected separately).
FLUSH_ROWS = 256
FLUSH_S = 0.25
# A peer's charge belongs to the shopper's visit here if we saw them this recently.
VISIT_GAP_S = 1800.0
# Budget spend is persisted ahead in blocks (hi-lo allocator).
SPEND_BLOCK = 8


@dataclass(frozen=True, slots=True)
class Charge:
    inbox: str
    campaign: str
    visit: str
    day: str  # local date of the store
    ts: float
    offer: bool  # False: a holdout charge (counts for caps, not for budget or gaps)
    source: str = ""  # remote event id, "" when local


class CapLedger:
    def __init__(self, conn: sqlite3.Connection, *, keep_days: float = 35.0) -> None:
        self._conn = conn  # tables cap_charges and budget_spent (gateway.storage)
        self.keep_s = keep_days * _DAY_S
        self.by_visit: dict[tuple[str, str, str], int] = defaultdict(int)
        self.by_campaign: dict[tuple[str, str], int] = defaultdict(int)
        self.by_day: dict[tuple[str, str, str], int] = defaultdict(int)
        self.all_visit: dict[tuple[str, str], int] = defaultdict(int)
        self.last_offer: dict[str, float] = {}
        self.visit_of: dict[str, str] = {}
        self.spent: dict[str, int] = {}
        self._sources: set[str] = set()
        self._pending: list[tuple[str, str, str, str, float, int, str]] = []
        self._flushed = time.monotonic()
        self._mark: dict[str, int] = {}
        self._seen: dict[str, float] = {}  # inbox -> last local trigger
        self._orphans: dict[str, list[tuple[str, float, bool]]] = {}  # peer charges, no visit yet
        self._restore()

    def _restore(self) -> None:
        rows = self._conn.execute(
            "SELECT inbox, campaign, visit, day, ts, offer, source FROM cap_charges"
            " WHERE ts >= (SELECT coalesce(max(ts), 0) FROM cap_charges) - ? ORDER BY ts",
            (self.keep_s,),
        ).fetchall()
        for r in rows:
            self._count(Charge(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6]))
        self.spent = {c: int(n) for c, n in self._conn.execute(
            "SELECT campaign, spent FROM budget_spent")}
        self._mark = dict(self.spent)

    def _count(self, ch: Charge) -> None:
        self.by_visit[ch.inbox, ch.campaign, ch.visit] += 1
        self.by_campaign[ch.inbox, ch.campaign] += 1
        self.by_day[ch.inbox, ch.campaign, ch.day] += 1
        if ch.offer:
            self.all_visit[ch.inbox, ch.visit] += 1
            if ch.ts > self.last_offer.get(ch.inbox, float("-inf")):
                self.last_offer[ch.inbox] = ch.ts
        if ch.source:
            self._sources.add(ch.source)

    def blocked(self, caps: Caps, inbox: str, campaign: str, visit: str, *, day: str,
                now: float) -> str | None:
        """The cap that stops another offer of ``campaign`` to ``inbox``, or None."""
        if self.by_visit.get((inbox, campaign, visit), 0) >= caps.per_shopper:
            return "cap_per_visit"
        if caps.per_campaign is not None and \
                self.by_campaign.get((inbox, campaign), 0) >= caps.per_campaign:
            return "cap_per_campaign"
        if caps.per_day is not None and self.by_day.get((inbox, campaign, day), 0) >= caps.per_day:
            return "cap_per_day"
        if caps.per_visit_all is not None and \
                self.all_visit.get((inbox, visit), 0) >= caps.per_visit_all:
            return "cap_all_campaigns_per_visit"
        if caps.min_gap_s > 0 and now - self.last_offer.get(inbox, float("-inf")) < caps.min_gap_s:
            return "cap_min_gap"
        return None

    def charge(self, ch: Charge) -> None:
        self._count(ch)
        self.visit_of[ch.inbox] = ch.visit
        self._pending.append((ch.inbox, ch.campaign, ch.visit, ch.day, ch.ts, int(ch.offer),
                              ch.source))
        now = time.monotonic()
        if len(self._pending) >= FLUSH_ROWS or now - self._flushed >= FLUSH_S:
            self.flush(now)

    def tick(self) -> None:
        """Flush pending charges once they are ``FLUSH_S`` old (cheap when nothing is)."""
        if self._pending and time.monotonic() - self._flushed >= FLUSH_S:
            self.flush()

    def flush(self, now: float | None = None) -> None:
        """Write pending charges in one transaction (also called on a timer and at exit)."""
        self._flushed = time.monotonic() if now is None else now
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        self._conn.execute("BEGIN")
        try:
            self._conn.executemany(
                "INSERT INTO cap_charges(inbox, campaign, visit, day, ts, offer, source)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def seen_visit(self, inbox: str, visit: str, now: float) -> None:
        """A local trigger of ``inbox`` in ``visit``: a new visit adopts the peers'
        charges of the last ``VISIT_GAP_S`` that no local visit claimed yet."""
        if self.visit_of.get(inbox) != visit:
            for campaign, ts, offer in self._orphans.pop(inbox, ()):
                if now - ts <= VISIT_GAP_S:
                    self.by_visit[inbox, campaign, visit] += 1
                    if offer:
                        self.all_visit[inbox, visit] += 1
        self.visit_of[inbox] = visit
        self._seen[inbox] = now

    def charge_remote(self, source: str, inbox: str, campaign: str, *, day: str, ts: float,
                      offer: bool) -> bool:
        """Apply another gateway's charge once (by event id); per-visit counts go to the
        shopper's visit here when it is current, else wait for the next local visit.
        False when already applied."""
        if source in self._sources:
            return False
        visit = self.visit_of.get(inbox)
        if visit is None or ts - self._seen.get(inbox, float("-inf")) > VISIT_GAP_S:
            self._orphans.setdefault(inbox, []).append((campaign, ts, offer))
            visit = f"remote:{source}"
        self._count(Charge(inbox, campaign, visit, day, ts, offer, source))
        self._pending.append((inbox, campaign, visit, day, ts, int(offer), source))
        return True

    # ---- budget ------------------------------------------------------------------------
    def budget_left(self, campaign: str, allowance: int) -> int:
        return allowance - self.spent.get(campaign, 0)

    def spend(self, campaign: str) -> None:
        """Spend one unit. The persisted mark runs ahead in blocks of ``SPEND_BLOCK``
        (hi-lo): after a crash the gateway resumes from the mark, so it may waste up to
        a block of its grant but can never spend a unit twice."""
        n = self.spent.get(campaign, 0) + 1
        self.spent[campaign] = n
        if n > self._mark.get(campaign, 0):
            self._mark[campaign] = n + SPEND_BLOCK - 1
            self._conn.execute(
                "INSERT INTO budget_spent(campaign, spent) VALUES (?, ?) ON CONFLICT(campaign)"
                " DO UPDATE SET spent = excluded.spent", (campaign, self._mark[campaign]))

    def prune(self, now: float) -> int:
        """Forget charges older than the keep window (called rarely, e.g. daily)."""
        cur = self._conn.execute("DELETE FROM cap_charges WHERE ts < ?", (now - self.keep_s,))
        return int(cur.rowcount or 0)
