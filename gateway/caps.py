"""Frequency caps and budget spend at the gateway, in memory and persisted in SQLite.

Every charge (an offer, or a holdout that *would* have been an offer) is one row in
``cap_charges``; on start the ledger replays the rows of the last ``keep_days`` days, so
caps hold across restarts. Charges made by the store's *other* gateways arrive as their
``decision`` events on the store's events topics and are applied here too (idempotent by
event id), so caps hold across the gateways of one store within one event batch
interval. Budgets are not shared that way: each gateway spends only HQ's cumulative
grant to it (``Budget.grants``), and its own cumulative spend is persisted here.

Durability (docs/storage.md#caps-and-the-offer-commit): in the gateway the ledger's
writes ride in the group commit of the offers they charge
(:meth:`CapLedger.defer_to_group_commit`, then :meth:`CapLedger.take` from the event
recorder), so a crash keeps both an offer and its charge or neither. Used alone (offline
tools, benches) the ledger writes its charges itself every ``FLUSH_S`` seconds or
``FLUSH_ROWS`` rows. Rows older than the keep window are deleted on start and every
``PRUNE_EVERY_S`` seconds after.
"""

from __future__ import annotations

import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from aislecast.kernel.campaign import Caps

__all__ = ["FLUSH_ROWS", "FLUSH_S", "PRUNE_EVERY_S", "VISIT_GAP_S", "CapLedger", "Charge",
           "PendingWrites"]

_DAY_S = 86_400.0
# Without a group commit to ride in, charges are written in batches of at most
# FLUSH_ROWS rows or FLUSH_S seconds.
FLUSH_ROWS = 256
FLUSH_S = 0.25
# A peer's charge belongs to the shopper's visit here if we saw them this recently.
VISIT_GAP_S = 1800.0
# Expired charges are deleted on start and then this often (a DELETE on the ts index).
PRUNE_EVERY_S = 3600.0

_Row = tuple[str, str, str, str, float, int, str]
_INSERT = ("INSERT INTO cap_charges(inbox, campaign, visit, day, ts, offer, source)"
           " VALUES (?, ?, ?, ?, ?, ?, ?)")
_UPSERT_SPENT = ("INSERT INTO budget_spent(campaign, spent) VALUES (?, ?) ON CONFLICT(campaign)"
                 " DO UPDATE SET spent = excluded.spent")


@dataclass(frozen=True, slots=True)
class Charge:
    inbox: str
    campaign: str
    visit: str
    day: str  # local date of the store
    ts: float
    offer: bool  # False: a holdout charge (counts for caps, not for budget or gaps)
    source: str = ""  # remote event id, "" when local


@dataclass(slots=True)
class PendingWrites:
    """Charges and budget spends not yet written, taken out of the ledger for one
    transaction (:meth:`write` inside it; :meth:`CapLedger.give_back` if it failed)."""

    charges: list[_Row] = field(default_factory=list)
    spent: dict[str, int] = field(default_factory=dict)  # campaign -> cumulative spend

    def __bool__(self) -> bool:
        return bool(self.charges or self.spent)

    def write(self, cur: sqlite3.Cursor) -> None:
        if self.charges:
            cur.executemany(_INSERT, self.charges)
        if self.spent:
            cur.executemany(_UPSERT_SPENT, list(self.spent.items()))


class CapLedger:
    def __init__(self, conn: sqlite3.Connection, *, keep_days: float = 35.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._conn = conn  # tables cap_charges and budget_spent (gateway.storage)
        self.keep_s = keep_days * _DAY_S
        self._clock = clock  # wall clock, for pruning (charges carry unix times)
        self.self_flush = True  # False once a group commit takes the writes
        self.by_visit: dict[tuple[str, str, str], int] = defaultdict(int)
        self.by_campaign: dict[tuple[str, str], int] = defaultdict(int)
        self.by_day: dict[tuple[str, str, str], int] = defaultdict(int)
        self.all_visit: dict[tuple[str, str], int] = defaultdict(int)
        self.last_offer: dict[str, float] = {}
        self.visit_of: dict[str, str] = {}
        self.spent: dict[str, int] = {}
        self._sources: set[str] = set()
        self._pending = PendingWrites()  # local charges and spends
        self._remote: list[_Row] = []  # peers' charges (written by commit_remote)
        self._flushed = time.monotonic()
        self._seen: dict[str, float] = {}  # inbox -> last local trigger
        self._orphans: dict[str, list[tuple[str, float, bool]]] = {}  # peer charges, no visit yet
        self.pruned = 0  # rows deleted by prune so far
        self._next_prune = clock() + PRUNE_EVERY_S
        self._restore()

    def _restore(self) -> None:
        """Replay the keep window before the newest charge (not before now: a gateway
        switched off for weeks still knows its caps), after deleting what is older."""
        newest = self._conn.execute("SELECT max(ts) FROM cap_charges").fetchone()[0]
        if newest is not None:
            self.prune(float(newest))
        self._recount()
        self.spent = {c: int(n) for c, n in self._conn.execute(
            "SELECT campaign, spent FROM budget_spent")}

    def _recount(self) -> None:
        """Counts from the rows kept in SQLite and the charges not yet written (on start,
        and after a prune deleted rows, so memory forgets what the file forgot)."""
        for counts in (self.by_visit, self.by_campaign, self.by_day, self.all_visit):
            counts.clear()
        self.last_offer.clear()
        self._sources.clear()
        rows = self._conn.execute(
            "SELECT inbox, campaign, visit, day, ts, offer, source FROM cap_charges ORDER BY ts",
        ).fetchall()
        for r in [*rows, *self._pending.charges, *self._remote]:
            self._count(Charge(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6]))

    def _forget_before(self, cutoff: float) -> None:
        """Drop the shoppers last seen before ``cutoff`` and peers' charges made before
        it that no visit adopted (a visit adopts only those of the last VISIT_GAP_S)."""
        for inbox in [i for i, ts in self._seen.items() if ts < cutoff]:
            del self._seen[inbox]
            self.visit_of.pop(inbox, None)
        for inbox, orphans in list(self._orphans.items()):
            kept = [o for o in orphans if o[1] >= cutoff]
            if kept:
                self._orphans[inbox] = kept
            else:
                del self._orphans[inbox]

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
        self._pending.charges.append((ch.inbox, ch.campaign, ch.visit, ch.day, ch.ts,
                                      int(ch.offer), ch.source))
        if self.self_flush:
            now = time.monotonic()
            if len(self._pending.charges) >= FLUSH_ROWS or now - self._flushed >= FLUSH_S:
                self.flush(now)

    def tick(self) -> None:
        """Called per decision: flush pending charges once they are ``FLUSH_S`` old (when
        no group commit takes them) and prune every ``PRUNE_EVERY_S``; cheap otherwise."""
        if self.self_flush and (self._pending or self._remote) \
                and time.monotonic() - self._flushed >= FLUSH_S:
            self.flush()
        now = self._clock()
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY_S
            self.prune(now)

    # ---- writes ----------------------------------------------------------------------
    def defer_to_group_commit(self) -> None:
        """From now on the caller writes the local charges and spends, inside the same
        transaction as the offers they charge (:meth:`take`); the ledger no longer
        flushes them by itself."""
        self.self_flush = False

    def take(self) -> PendingWrites:
        """The local charges and spends not yet written (peers' ones too), now owned by
        the caller's transaction."""
        taken, self._pending = self._pending, PendingWrites()
        if self._remote:
            taken.charges += self._remote
            self._remote = []
        return taken

    def give_back(self, taken: PendingWrites) -> None:
        """``taken`` was not committed: keep it for the next transaction, before anything
        charged meanwhile (spends: the newer total wins)."""
        self._pending.charges[:0] = taken.charges
        self._pending.spent = taken.spent | self._pending.spent

    def _write(self, taken: PendingWrites) -> None:
        if not taken:
            return
        self._conn.execute("BEGIN")
        try:
            taken.write(self._conn.cursor())
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            self.give_back(taken)
            raise

    def flush(self, now: float | None = None) -> None:
        """Write everything pending in one transaction (on a timer, and at exit)."""
        self._flushed = time.monotonic() if now is None else now
        self._write(self.take())

    def commit_remote(self) -> None:
        """Write the peers' charges applied since the last write (after a peer batch)."""
        if self._remote:
            rows, self._remote = self._remote, []
            self._write(PendingWrites(charges=rows))

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
        self._remote.append((inbox, campaign, visit, day, ts, int(offer), source))
        return True

    # ---- budget ------------------------------------------------------------------------
    def budget_left(self, campaign: str, allowance: int) -> int:
        return allowance - self.spent.get(campaign, 0)

    def spend(self, campaign: str) -> None:
        """Spend one unit; the new total is written with the charge of the same offer."""
        n = self.spent.get(campaign, 0) + 1
        self.spent[campaign] = n
        self._pending.spent[campaign] = n

    def forget(self, inbox: str) -> int:
        """An erased shopper (gateway.consent): their charges gone from the file, the
        writes not yet made and the counts; returns the rows deleted. Budgets keep
        their spend (a campaign's, not the shopper's)."""
        self._pending.charges = [c for c in self._pending.charges if c[0] != inbox]
        self._remote = [r for r in self._remote if r[0] != inbox]
        self._seen.pop(inbox, None)
        self.visit_of.pop(inbox, None)
        self._orphans.pop(inbox, None)
        self.last_offer.pop(inbox, None)
        n = int(self._conn.execute("DELETE FROM cap_charges WHERE inbox = ?", (inbox,)).rowcount or 0)
        self._recount()
        return n

    def prune(self, now: float) -> int:
        """Delete charges older than the keep window (on start, then every
        ``PRUNE_EVERY_S`` from :meth:`tick`); returns the rows deleted. When rows went,
        the counts in memory are rebuilt from what is kept (plus what is not yet written),
        so a gateway running for months holds only the keep window's counts."""
        cutoff = now - self.keep_s
        cur = self._conn.execute("DELETE FROM cap_charges WHERE ts < ?", (cutoff,))
        n = int(cur.rowcount or 0)
        self.pruned += n
        if n:
            self._recount()
        self._forget_before(min(cutoff, now - VISIT_GAP_S))
        return n
