"""Which shoppers each store receives: home stores and recent visits (``shopper_stores``).

A store's bundle carries the token tables and profiles of *its* shoppers only, never
the whole chain's (a stolen gateway resolves only them; bundles grow with the store, not
the chain). A store's shoppers are those who chose it as a home store
(``shoppers.home_stores``, set at enrolment) and those seen in it in the last
:data:`SEEN_DAYS` days. A shopper with no home store is received by a store only once
first seen there: its gateway reports the token it cannot resolve and HQ admits the
shopper there (:mod:`hq.first_visit`). See docs/architecture.md#store-scoped-identity.

One row per (inbox, store): ``home`` (1: a home store) and ``last_seen`` (unix seconds
HQ last marked the shopper seen there, NULL: never). :class:`SeenBook` marks visits from
the events ingest stores, written at most once an hour per pair (an in-memory map of
what it last wrote), so a busy store costs a few upserts an hour, not one per event.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final

from aislecast.kernel.schema import Event

if TYPE_CHECKING:
    from hq.db import HqDb

__all__ = [
    "SEEN_DAYS",
    "SEEN_S",
    "SEEN_WRITE_S",
    "SeenBook",
    "by_store",
    "keys_of_store",
    "m0012_shopper_stores",
    "mark_seen",
    "opted_out_of",
    "set_homes",
    "shoppers_of",
    "store_rows",
    "stores_of",
]

#: A store keeps receiving a shopper (without it as a home store) this long after the
#: shopper was last seen there.
SEEN_DAYS: Final = 30
SEEN_S: Final = SEEN_DAYS * 86_400.0
#: A pair's ``last_seen`` is rewritten at most this often (a day-long window would do;
#: an hour keeps the 30 days exact to the hour).
SEEN_WRITE_S: Final = 3_600.0
# the in-memory map of pairs written is cleared of old entries when it holds this many
_SEEN_MAP_MAX: Final = 200_000
_NEVER: Final = float("-inf")


def m0012_shopper_stores(db: HqDb) -> None:
    """The stores each shopper is received by (hq.scope), backfilled from
    ``shoppers.home_stores`` and from the events (the latest per shopper and store): a
    shopper with neither is in no store until first seen."""
    db.execute("CREATE TABLE shopper_stores (inbox TEXT NOT NULL, store TEXT NOT NULL,"
               " home INTEGER NOT NULL DEFAULT 0, last_seen DOUBLE PRECISION,"
               " PRIMARY KEY (inbox, store))")
    db.execute("CREATE INDEX shopper_stores_store ON shopper_stores (store, home, last_seen)")
    rows: list[tuple[str, str]] = []
    for inbox, homes in db.query("SELECT inbox, home_stores FROM shoppers"):
        try:
            stores = json.loads(homes)
        except ValueError:
            continue
        if isinstance(stores, list):
            rows += [(str(inbox), s) for s in sorted(set(stores)) if isinstance(s, str)]
    db.pipelined([("INSERT INTO shopper_stores (inbox, store, home) VALUES (?, ?, 1)", rows)])
    # and where each was seen (its latest event there), so an upgraded HQ's stores keep
    # receiving their recent shoppers without waiting for a first visit
    db.execute("INSERT INTO shopper_stores (inbox, store, home, last_seen)"
               " SELECT e.inbox, e.store, 0, max(e.ts) FROM events e"
               " JOIN shoppers s ON s.inbox = e.inbox WHERE e.store IS NOT NULL"
               " GROUP BY e.inbox, e.store"
               " ON CONFLICT (inbox, store) DO UPDATE SET last_seen = excluded.last_seen")


def set_homes(db: HqDb, inbox: str, stores: Sequence[str]) -> None:
    """``inbox``'s home stores are now ``stores`` (inside the caller's transaction, or
    alone): stores dropped keep the shopper only while a visit there is recent."""
    db.execute("UPDATE shopper_stores SET home = 0 WHERE inbox = ?", (inbox,))
    for s in sorted(set(stores)):
        db.execute("INSERT INTO shopper_stores (inbox, store, home) VALUES (?, ?, 1)"
                   " ON CONFLICT (inbox, store) DO UPDATE SET home = 1", (inbox, s))
    db.execute("DELETE FROM shopper_stores WHERE inbox = ? AND home = 0 AND last_seen IS NULL",
               (inbox,))


_SEEN_SQL: Final = (
    "INSERT INTO shopper_stores (inbox, store, home, last_seen)"
    " SELECT ?, ?, 0, ? WHERE EXISTS (SELECT 1 FROM shoppers WHERE inbox = ?)"
    " ON CONFLICT (inbox, store) DO UPDATE SET last_seen = CASE"
    " WHEN shopper_stores.last_seen IS NULL OR shopper_stores.last_seen < excluded.last_seen"
    " THEN excluded.last_seen ELSE shopper_stores.last_seen END")


def mark_seen(db: HqDb, seen: Sequence[tuple[str, str, float]]) -> None:
    """Each ``(inbox, store, ts)``: the shopper was seen in the store at ``ts`` (only a
    later time moves ``last_seen``; an inbox HQ does not have gets no row)."""
    if seen:
        with db.transaction():
            db.pipelined([(_SEEN_SQL, [(i, s, ts, i) for i, s, ts in seen])])


def stores_of(db: HqDb, inbox: str, now: float | None = None) -> list[str]:
    """The stores that receive ``inbox`` now (home stores and recent visits), sorted."""
    since = (time.time() if now is None else now) - SEEN_S
    return [str(r[0]) for r in db.query(
        "SELECT store FROM shopper_stores WHERE inbox = ? AND (home = 1 OR last_seen >= ?)"
        " ORDER BY store", (inbox, since))]


def shoppers_of(db: HqDb, store: str, now: float | None = None) -> list[str]:
    """The inboxes ``store`` receives at ``now``, sorted (opted-out ones included: the
    bundle lists those apart)."""
    since = (time.time() if now is None else now) - SEEN_S
    return [str(r[0]) for r in db.query(
        "SELECT inbox FROM shopper_stores WHERE store = ? AND (home = 1 OR last_seen >= ?)"
        " ORDER BY inbox", (store, since))]


def keys_of_store(db: HqDb, store: str, now: float) -> list[tuple[str, str, str]]:
    """``(inbox, identity key hex, consents)`` of the opted-in shoppers ``store``
    receives at ``now``: what its bundle's token tables are made of."""
    return [(str(r[0]), str(r[1]), str(r[2])) for r in db.query(
        "SELECT s.inbox, s.identity_key, s.consents FROM shopper_stores ss"
        " JOIN shoppers s ON s.inbox = ss.inbox"
        " WHERE ss.store = ? AND s.opted_out = 0 AND (ss.home = 1 OR ss.last_seen >= ?)"
        " ORDER BY s.inbox",
        (store, now - SEEN_S))]


def by_store(db: HqDb, now: float) -> tuple[dict[str, list[tuple[str, str, str]]],
                                             dict[str, list[str]]]:
    """:func:`keys_of_store` and :func:`opted_out_of` of every store at once, in one pass
    over the chain's shoppers (what a round of bundles for every store reads, instead of
    two queries per store; one join, not one each: the join is most of their time); a
    store that receives nobody, or has no opted-out shopper, is absent from that map."""
    keys: dict[str, list[tuple[str, str, str]]] = {}
    outs: dict[str, list[str]] = {}
    for store, inbox, key, consents, opted_out, receives in db.query(
            "SELECT ss.store, s.inbox, s.identity_key, s.consents, s.opted_out,"
            " CASE WHEN ss.home = 1 OR ss.last_seen >= ? THEN 1 ELSE 0 END"
            " FROM shopper_stores ss JOIN shoppers s ON s.inbox = ss.inbox", (now - SEEN_S,)):
        if opted_out:
            outs.setdefault(str(store), []).append(str(inbox))
        elif receives:
            keys.setdefault(str(store), []).append((str(inbox), str(key), str(consents)))
    for rows in keys.values():  # by inbox, as keys_of_store; sorted here: SQLite's ORDER BY
        rows.sort()  # over the join was a third of the query's time (100,000 rows)
    for inboxes in outs.values():
        inboxes.sort()
    return keys, outs


def opted_out_of(db: HqDb, store: str) -> list[str]:
    """The opted-out shoppers ``store`` has ever received (a row, however old): the only
    ones its gateways can hold tokens of; the bundle's opt-out list, sorted."""
    return [str(r[0]) for r in db.query(
        "SELECT s.inbox FROM shopper_stores ss JOIN shoppers s ON s.inbox = ss.inbox"
        " WHERE ss.store = ? AND s.opted_out = 1 ORDER BY s.inbox", (store,))]


def store_rows(db: HqDb, inbox: str) -> list[dict[str, object]]:
    """``inbox``'s rows, for the shopper's data export (hq.rights)."""
    return [{"store": r[0], "home": bool(r[1]), "last_seen": None if r[2] is None else float(r[2])}
            for r in db.query("SELECT store, home, last_seen FROM shopper_stores WHERE inbox = ?"
                              " ORDER BY store", (inbox,))]


class SeenBook:
    """Marks shoppers seen in stores from the events HQ stores, each (inbox, store) at
    most every :data:`SEEN_WRITE_S`. Called from ingest's worker thread or the loop."""

    def __init__(self, db: HqDb, *, every_s: float = SEEN_WRITE_S) -> None:
        self.db = db
        self.every_s = every_s
        self.written = 0  # pairs written (HQ metrics: ingest.seen_marked)
        self._last: dict[tuple[str, str], float] = {}  # pair -> when this worker wrote it
        self._lock = threading.Lock()

    def _due(self, pairs: Iterable[tuple[str, str, float]], now: float) -> list[tuple[str, str, float]]:
        out: dict[tuple[str, str], float] = {}
        with self._lock:
            last = self._last
            for inbox, store, ts in pairs:
                key = (inbox, store)
                if now - last.get(key, float("-inf")) >= self.every_s:
                    out[key] = max(out.get(key, ts), ts)
            if len(last) + len(out) > _SEEN_MAP_MAX:
                self._last = {k: t for k, t in last.items() if now - t < self.every_s}
            for key in out:  # claimed now: a concurrent call does not write it again
                self._last[key] = now
        return [(i, s, ts) for (i, s), ts in out.items()]

    def seen(self, inbox: str, store: str, ts: float, *, now: float | None = None) -> bool:
        """Mark one visit (unless written within the hour); True if written."""
        return self.note([(inbox, store, ts)], now=now) > 0

    def note(self, pairs: Iterable[tuple[str, str, float]], *, now: float | None = None) -> int:
        """Mark ``(inbox, store, ts)`` visits (a time ahead of ``now`` is taken as ``now``:
        a gateway's clock is not trusted); returns the pairs written."""
        now = time.time() if now is None else now
        due = self._due(((i, s, min(ts, now)) for i, s, ts in pairs), now)
        if not due:
            return 0
        try:
            mark_seen(self.db, due)
        except BaseException:
            with self._lock:  # not written: the next event tries again
                for i, s, _ in due:
                    self._last.pop((i, s), None)
            raise
        self.written += len(due)
        return len(due)

    def events(self, events: Iterable[Event], *, now: float | None = None) -> int:
        """Mark the shoppers of stored events seen in the events' stores. The events of
        a pair written within the hour are passed over here, without the lock (it is
        checked again under it), so a batch costs a dict lookup an event."""
        now = time.time() if now is None else now
        last, every = self._last, self.every_s
        latest: dict[tuple[str, str], float] = {}
        for e in events:
            if e.inbox and e.store and now - last.get(key := (e.inbox, e.store), _NEVER) >= every:
                ts = min(e.ts, now)
                if latest.get(key, _NEVER) < ts:
                    latest[key] = ts
        return self.note([(i, s, ts) for (i, s), ts in latest.items()], now=now) if latest else 0
