"""Frequency caps and budget spend at the gateway, in memory and persisted in SQLite.

Every charge (an offer, or a holdout that *would* have been an offer) is one row in
``cap_charges``, and one more to its lifetime count in ``cap_lifetime``; on start the
ledger replays the rows of today and yesterday and reads the lifetime counts, so caps
hold across restarts. Charges made by the store's *other* gateways arrive as their
``decision`` events on the store's events topics and are applied here too (idempotent by
event id), so caps hold across the gateways of one store within one event batch
interval. Budgets are not shared that way: each gateway spends only HQ's cumulative
grant to it (``Budget.grants``), and its own cumulative spend is persisted here.

Durability (docs/storage.md#caps-and-the-offer-commit): in the gateway the ledger's
writes ride in the group commit of the offers they charge
(:meth:`CapLedger.defer_to_group_commit`, then :meth:`CapLedger.take` from the event
recorder), so a crash keeps both an offer and its charge or neither. Used alone (offline
tools, benches) the ledger writes its charges itself every ``FLUSH_S`` seconds or
``FLUSH_ROWS`` rows.

Pseudonyms (gateway/pseudonyms.py): no row holds an inbox. A charge is keyed by the
shopper's pseudonym of its day and a tag of its visit; only today's and yesterday's day
keys exist, and when a day starts the rows of the day before yesterday are deleted with
its key. The caps read what they need from those two days: per visit and per visit of
all campaigns (a visit may span midnight), per day (today's rows), the cooldown
``min_gap_s`` (the last offer of today or yesterday: a cooldown of up to a day always
holds, a longer one until the end of the next local day). Per-campaign caps ("ever")
read ``cap_lifetime``: one count per campaign and lifetime pseudonym, no time, written
with the charges; a campaign's counts go once it has left the bundle and its end has
passed (:meth:`CapLedger.prune_lifetime`, rules in gateway/campaign_ends.py).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from aislecast.kernel.campaign import Caps
from gateway.campaign_ends import CampaignEnds
from gateway.pseudonyms import Pseudonyms, pseudonyms_for

__all__ = ["FLUSH_ROWS", "FLUSH_S", "VISIT_GAP_S", "CapLedger", "Charge", "PendingWrites"]

log = logging.getLogger("aislecast.gateway.caps")

# Without a group commit to ride in, charges are written in batches of at most
# FLUSH_ROWS rows or FLUSH_S seconds.
FLUSH_ROWS = 256
FLUSH_S = 0.25
# A peer's charge belongs to the shopper's visit here if we saw them this recently.
VISIT_GAP_S = 1800.0

# (shopper pseudonym, campaign, visit tag, key day, ts, offer, source)
_Row = tuple[str, str, str, str, float, int, str]
_INSERT = ("INSERT INTO cap_charges(shopper, campaign, visit, day, ts, offer, source)"
           " VALUES (?, ?, ?, ?, ?, ?, ?)")
_UPSERT_LIFE = ("INSERT INTO cap_lifetime(campaign, shopper, n) VALUES (?, ?, ?)"
                " ON CONFLICT(campaign, shopper) DO UPDATE SET n = excluded.n")
_UPSERT_SPENT = ("INSERT INTO budget_spent(campaign, spent) VALUES (?, ?) ON CONFLICT(campaign)"
                 " DO UPDATE SET spent = excluded.spent")


@dataclass(frozen=True, slots=True)
class Charge:
    inbox: str
    campaign: str
    visit: str
    day: str  # local date of the store (the key day: clamped to yesterday..today)
    ts: float
    offer: bool  # False: a holdout charge (counts for caps, not for budget or gaps)
    source: str = ""  # remote event id, "" when local


@dataclass(slots=True)
class PendingWrites:
    """Charges and budget spends not yet written, taken out of the ledger for one
    transaction (:meth:`write` inside it; :meth:`CapLedger.give_back` if it failed)."""

    charges: list[_Row] = field(default_factory=list)
    spent: dict[str, int] = field(default_factory=dict)  # campaign -> cumulative spend
    # (campaign, lifetime pseudonym) -> cumulative count
    lifetime: dict[tuple[str, str], int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.charges or self.spent or self.lifetime)

    def write(self, cur: sqlite3.Cursor) -> None:
        if self.charges:
            cur.executemany(_INSERT, self.charges)
        if self.spent:
            cur.executemany(_UPSERT_SPENT, list(self.spent.items()))
        if self.lifetime:
            cur.executemany(_UPSERT_LIFE, [(c, s, n) for (c, s), n in self.lifetime.items()])


class CapLedger:
    """Cap counts in memory, keyed by pseudonyms as the rows are (no inbox on disk):
    ``by_visit`` (campaign, visit tag), ``by_day`` (day pseudonym, campaign),
    ``all_visit`` (visit tag), ``last_offer`` (day pseudonym), ``lifetime`` (campaign,
    lifetime pseudonym). ``visit_of`` and the peers' orphan charges are memory only."""

    def __init__(self, conn: sqlite3.Connection, *, clock: Callable[[], float] = time.time,
                 pseudonyms: Pseudonyms | None = None) -> None:
        self._conn = conn  # tables cap_charges, cap_lifetime, budget_spent (gateway.storage)
        self._clock = clock  # wall clock, for tick() without a time and peers before any day
        self.ps = pseudonyms if pseudonyms is not None else pseudonyms_for(conn)
        self.self_flush = True  # False once a group commit takes the writes
        self.by_visit: dict[tuple[str, str], int] = defaultdict(int)
        self.by_day: dict[tuple[str, str], int] = defaultdict(int)
        self.all_visit: dict[str, int] = defaultdict(int)
        self.last_offer: dict[str, float] = {}
        self.lifetime: dict[tuple[str, str], int] = {}
        self.visit_of: dict[str, str] = {}
        self.spent: dict[str, int] = {}
        self._sources: set[str] = set()
        self._pending = PendingWrites()  # local charges, spends and lifetime counts
        self._remote = PendingWrites()  # peers' charges (written by commit_remote)
        self._flushed = time.monotonic()
        self._seen: dict[str, float] = {}  # inbox -> last local trigger
        self._orphans: dict[str, list[tuple[str, float, bool]]] = {}  # peer charges, no visit yet
        self.pruned = 0  # rows deleted with their day keys so far
        self.lifetime_pruned = 0  # lifetime counts deleted with their ended campaigns so far
        self.ends = CampaignEnds(conn)
        self.stale_remote = 0  # peers' charges older than yesterday: no key, ignored
        self._today = self.ps.today
        self._restore()

    def _restore(self) -> None:
        """Delete the rows whose day key is gone (or, with no keys at all, every row:
        nothing could be matched to a shopper again), then count what is kept."""
        if self.ps.today is None:
            n = int(self._conn.execute("DELETE FROM cap_charges").rowcount or 0)
            if n:
                log.warning("cap charges without day keys deleted rows=%d", n)
            self.pruned += n
        else:
            self._drop_old()
        if not self.ps.has_life_key():
            n = int(self._conn.execute("DELETE FROM cap_lifetime").rowcount or 0)
            if n:
                log.warning("lifetime cap counts without their key deleted rows=%d", n)
        self.lifetime = {(str(c), str(s)): int(n) for c, s, n in self._conn.execute(
            "SELECT campaign, shopper, n FROM cap_lifetime")}
        self._recount()
        self.spent = {c: int(n) for c, n in self._conn.execute(
            "SELECT campaign, spent FROM budget_spent")}

    def _drop_old(self) -> int:
        """Delete the charges made under day keys that are gone (before yesterday)."""
        y = self.ps.yesterday
        if y is None:
            return 0
        n = int(self._conn.execute("DELETE FROM cap_charges WHERE day < ?", (y,)).rowcount or 0)
        self.pruned += n
        return n

    def _recount(self) -> None:
        """Counts from the rows kept in SQLite and the charges not yet written (on start,
        and when a day's key went, so memory forgets what the file forgot)."""
        for counts in (self.by_visit, self.by_day, self.all_visit):
            counts.clear()
        self.last_offer.clear()
        self._sources.clear()
        y = self.ps.yesterday or ""
        rows = self._conn.execute(
            "SELECT shopper, campaign, visit, day, ts, offer, source FROM cap_charges ORDER BY ts",
        ).fetchall()
        for r in [*rows, *self._pending.charges, *self._remote.charges]:
            if r[3] >= y:
                self._count(r)

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

    def _count(self, r: _Row) -> None:
        shopper, campaign, vtag, _, ts, offer, source = r
        self.by_visit[campaign, vtag] += 1
        self.by_day[shopper, campaign] += 1
        if offer:
            self.all_visit[vtag] += 1
            if ts > self.last_offer.get(shopper, float("-inf")):
                self.last_offer[shopper] = ts
        if source:
            self._sources.add(source)

    def _count_life(self, inbox: str, campaign: str, into: PendingWrites) -> None:
        if campaign in self.ends.pruned:  # a peer's late charge of a campaign that ended
            return
        k = (campaign, self.ps.lifetime(inbox, campaign))
        n = self.lifetime[k] = self.lifetime.get(k, 0) + 1
        into.lifetime[k] = n

    def _row(self, ch: Charge, kday: str) -> _Row:
        """``ch`` as its row: the shopper's pseudonym and visit tag of ``kday``."""
        if kday == self.ps.today:
            ids = self.ps.ids(ch.inbox, ch.visit)
            shopper, vtag = ids.today, ids.vtag
        else:  # yesterday (created if this is its first charge)
            shopper = self.ps.of(ch.inbox, kday) or ""
            vtag = self.ps.visit_tag(ch.inbox, ch.visit, kday) or ""
        return (shopper, ch.campaign, vtag, kday, ch.ts, int(ch.offer), ch.source)

    def _advance(self, ts: float) -> None:
        """The gateway's clock says ``ts``: at a new day the rows of the day keys that
        went are deleted and the counts rebuilt."""
        self.ps.advance(ts)
        if self.ps.today != self._today:  # advanced here or by the visit book
            self._today = self.ps.today
            self._drop_old()
            self._recount()
            self._forget_before(ts - VISIT_GAP_S)

    def blocked(self, caps: Caps, inbox: str, campaign: str, visit: str, *,
                now: float) -> str | None:
        """The cap that stops another offer of ``campaign`` to ``inbox``, or None."""
        if self.ps.today is None:
            self._advance(now)
        ids = self.ps.ids(inbox, visit)
        n = self.by_visit.get((campaign, ids.vtag), 0)
        if ids.vtag_y is not None:
            n += self.by_visit.get((campaign, ids.vtag_y), 0)
        if n >= caps.per_shopper:
            return "cap_per_visit"
        if caps.per_campaign is not None and self.lifetime.get(
                (campaign, self.ps.lifetime(inbox, campaign)), 0) >= caps.per_campaign:
            return "cap_per_campaign"
        if caps.per_day is not None:
            # the day of ``now`` (today, or yesterday when a day was started early: a
            # time zone learned late); charges of that day are keyed as it
            d = self.ps.day(now)
            shopper = ids.today if d >= (self.ps.today or "") else \
                ids.yesterday if d == self.ps.yesterday else None
            if shopper is not None and self.by_day.get((shopper, campaign), 0) >= caps.per_day:
                return "cap_per_day"
        if caps.per_visit_all is not None:
            n = self.all_visit.get(ids.vtag, 0)
            if ids.vtag_y is not None:
                n += self.all_visit.get(ids.vtag_y, 0)
            if n >= caps.per_visit_all:
                return "cap_all_campaigns_per_visit"
        if caps.min_gap_s > 0:
            last = self.last_offer.get(ids.today, float("-inf"))
            if ids.yesterday is not None:
                last = max(last, self.last_offer.get(ids.yesterday, float("-inf")))
            if now - last < caps.min_gap_s:
                return "cap_min_gap"
        return None

    def charge(self, ch: Charge) -> None:
        """A local charge: keyed under yesterday's key when its day is yesterday, else
        today's (the decision was just made)."""
        if self.ps.today is None or ch.day > self.ps.today:
            self._advance(ch.ts)
        kday = ch.day if ch.day == self.ps.yesterday else self.ps.today or ch.day
        row = self._row(ch, kday)
        self._count(row)
        self._count_life(ch.inbox, ch.campaign, self._pending)
        self.visit_of[ch.inbox] = ch.visit
        self._pending.charges.append(row)
        if self.self_flush:
            now = time.monotonic()
            if len(self._pending.charges) >= FLUSH_ROWS or now - self._flushed >= FLUSH_S:
                self.flush(now)

    def tick(self, now: float | None = None) -> None:
        """Called per decision with its time (the gateway's clock): flush pending charges
        once they are ``FLUSH_S`` old (when no group commit takes them); at a new day,
        drop the rows whose key went. Cheap otherwise."""
        if self.self_flush and (self._pending or self._remote) \
                and time.monotonic() - self._flushed >= FLUSH_S:
            self.flush()
        self._advance(self._clock() if now is None else now)

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
            taken.charges += self._remote.charges
            taken.lifetime = self._remote.lifetime | taken.lifetime
            self._remote = PendingWrites()
        return taken

    def give_back(self, taken: PendingWrites) -> None:
        """``taken`` was not committed: keep it for the next transaction, before anything
        charged meanwhile (spends and lifetime counts: the newer total wins)."""
        self._pending.charges[:0] = taken.charges
        self._pending.spent = taken.spent | self._pending.spent
        self._pending.lifetime = taken.lifetime | self._pending.lifetime

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
            taken, self._remote = self._remote, PendingWrites()
            self._write(taken)

    def seen_visit(self, inbox: str, visit: str, now: float) -> None:
        """A local trigger of ``inbox`` in ``visit``: a new visit adopts the peers'
        charges of the last ``VISIT_GAP_S`` that no local visit claimed yet."""
        if self.visit_of.get(inbox) != visit:
            orphans = self._orphans.pop(inbox, ())
            if orphans:
                if self.ps.today is None:
                    self._advance(now)
                vtag = self.ps.ids(inbox, visit).vtag
                for campaign, ts, offer in orphans:
                    if now - ts <= VISIT_GAP_S:
                        self.by_visit[campaign, vtag] += 1
                        if offer:
                            self.all_visit[vtag] += 1
        self.visit_of[inbox] = visit
        self._seen[inbox] = now

    def charge_remote(self, source: str, inbox: str, campaign: str, *, day: str, ts: float,
                      offer: bool) -> bool:
        """Apply another gateway's charge once (by event id); per-visit counts go to the
        shopper's visit here when it is current, else wait for the next local visit.
        False when already applied, or older than yesterday (no key: ignored, counted)."""
        if source in self._sources:
            return False
        if self.ps.today is None:  # no day yet: the peer's, if not later than ours
            self._advance(min(ts, self._clock()))
        kday = self.ps.clamp(day)
        if kday is None:
            self.stale_remote += 1
            return False
        visit = self.visit_of.get(inbox)
        if visit is None or ts - self._seen.get(inbox, float("-inf")) > VISIT_GAP_S:
            self._orphans.setdefault(inbox, []).append((campaign, ts, offer))
            visit = f"remote:{source}"
        row = self._row(Charge(inbox, campaign, visit, kday, ts, offer, source), kday)
        self._count(row)
        self._count_life(inbox, campaign, self._remote)
        self._remote.charges.append(row)
        return True

    # ---- budget ------------------------------------------------------------------------
    def budget_left(self, campaign: str, allowance: int) -> int:
        return allowance - self.spent.get(campaign, 0)

    def spend(self, campaign: str) -> None:
        """Spend one unit; the new total is written with the charge of the same offer."""
        n = self.spent.get(campaign, 0) + 1
        self.spent[campaign] = n
        self._pending.spent[campaign] = n

    def lifetime_count(self, inbox: str, campaign: str) -> int:
        """Charges of ``campaign`` to ``inbox`` ever (what the per-campaign cap reads)."""
        return self.lifetime.get((campaign, self.ps.lifetime(inbox, campaign)), 0)

    def forget(self, inbox: str) -> int:
        """An erased shopper (gateway.consent): their charges and lifetime counts gone
        from the file, the writes not yet made and the counts; returns the rows deleted.
        Budgets keep their spend (a campaign's, not the shopper's)."""
        mine: set[str] = set()
        if self.ps.today is not None:
            ids = self.ps.ids(inbox)
            mine = {ids.today} | ({ids.yesterday} if ids.yesterday else set())
        life = {(c, self.ps.lifetime(inbox, c)) for c in {c for c, _ in self.lifetime}}
        for w in (self._pending, self._remote):
            w.charges = [c for c in w.charges if c[0] not in mine]
            for k in life:
                w.lifetime.pop(k, None)
        for k in life:
            self.lifetime.pop(k, None)
        self._seen.pop(inbox, None)
        self.visit_of.pop(inbox, None)
        self._orphans.pop(inbox, None)
        n = int(self._conn.executemany("DELETE FROM cap_charges WHERE shopper = ?",
                                       [(s,) for s in mine]).rowcount or 0)
        n += int(self._conn.executemany("DELETE FROM cap_lifetime WHERE campaign = ? AND shopper = ?",
                                        sorted(life)).rowcount or 0)
        self._recount()
        return n

    def prune_lifetime(self, now: float) -> int:
        """Delete the lifetime counts of the campaigns that left the bundle and ended by
        ``now`` (:meth:`gateway.campaign_ends.CampaignEnds.prune`), here too; returns the
        counts deleted. Called by gateway.retention."""
        gone, n = self.ends.prune(now)
        if gone:
            self.lifetime = {k: v for k, v in self.lifetime.items() if k[0] not in gone}
            for w in (self._pending, self._remote):
                w.lifetime = {k: v for k, v in w.lifetime.items() if k[0] not in gone}
            self.lifetime_pruned += n
        return n

    def prune(self, now: float) -> int:
        """Start the day of ``now`` if it is new (its keys: gateway.pseudonyms), delete
        the charges of the day keys that went, and forget the shoppers not seen for
        ``VISIT_GAP_S``; returns the rows deleted. Called by gateway.retention every
        few minutes, so a closed store's rows go at midnight too."""
        before = self.pruned
        self._advance(now)
        if self._drop_old():
            self._recount()
        self._forget_before(now - VISIT_GAP_S)
        return self.pruned - before
