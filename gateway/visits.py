"""Visit ids per shopper, kept in the gateway's SQLite so per-visit caps survive a restart.

Caps "per visit" (:mod:`gateway.caps`) count charges within a visit id; before this
module the ids lived only in memory, so a gateway restarted mid-visit gave every shopper
in the store a fresh visit and the capped offer again. The rules:

* A visit starts at a shopper's first trigger (zone entry, dwell, tap, scan, flash,
  schedule tick) when no visit is open, with a random 12-hex id.
* It ends when presence says the shopper left (the exit from their last zone:
  :meth:`VisitBook.end`), or when the shopper has not been seen for the visit's
  *window*: ``absence_s`` (+ one sync interval of slack) for a shopper who was in a zone
  at the last sync, ``idle_s`` for one known only from taps, scans or flashes, whom
  presence never exits.
* Each open visit is a row ``visits(inbox, visit, last_seen, zoned)``. A new visit is
  written in the group commit of the decisions made in it (:meth:`VisitBook.take_new`
  from the event recorder, the transaction that also holds their offers and cap
  charges), so a crash never keeps an offer charged to a visit the restarted gateway
  does not know. Ended visits, and ``last_seen`` of shoppers whose stored value is older
  than half their window, are written in one transaction every ``sync_s`` by the
  gateway's ticker, together with a heartbeat ``watched_until`` (per-trigger autocommits
  cost ~40 µs per offer at 1,500 offers/s).
* A restart does not count as absence: the gateway could not see anyone leave while it
  was down, so on start every row's ``last_seen`` moves forward by the downtime
  (``now - watched_until``). A shopper seen again within the window of *watched* time
  continues the same visit, exactly as if the gateway had never stopped. A downtime
  longer than ``max_down_s`` ends every visit (the store may have closed meanwhile).
* Rows whose window has passed are pruned on start and at each sync.
* No row holds the inbox (gateway/pseudonyms.py): a visit's row is keyed by the shopper's
  pseudonym of the day the visit started, with that day; when the day before yesterday's
  key is destroyed, visits still open under it end and their rows go. A visit restored
  at start is matched to its shopper by their pseudonyms of today and yesterday at the
  shopper's next trigger or presence sync.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Final

from aislecast.kernel.ids import new_id
from gateway.pseudonyms import Pseudonyms, pseudonyms_for

__all__ = ["VISIT_IDLE_S", "VISIT_MAX_DOWN_S", "VISIT_SYNC_S", "NewVisits", "VisitBook"]

# A shopper known only from taps/scans (no presence) is on the same visit while their
# interactions are at most this far apart: caps.VISIT_GAP_S uses the same 30 minutes
# for peers' charges, and a supermarket trip rarely pauses longer.
VISIT_IDLE_S: Final = 1800.0
# A gateway down longer than this (a reboot takes ~1 min on a Pi) ends all visits.
VISIT_MAX_DOWN_S: Final = 900.0
# last_seen of present shoppers and the heartbeat are written this often (one small
# WAL transaction); it is also the slack added to the absence window.
VISIT_SYNC_S: Final = 1.0


class _Visit:
    __slots__ = ("day", "id", "key", "last_seen", "stored_seen", "zoned")

    def __init__(self, vid: str, last_seen: float, zoned: bool, key: str, day: str) -> None:
        self.id, self.last_seen, self.zoned = vid, last_seen, zoned
        self.key, self.day = key, day  # the row: the shopper's pseudonym of ``day``
        self.stored_seen = float("-inf")  # last_seen as written to the file


_UPSERT: Final = (
    "INSERT INTO visits(shopper, day, visit, last_seen, zoned) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT(shopper) DO UPDATE SET day = excluded.day, visit = excluded.visit,"
    " last_seen = excluded.last_seen, zoned = excluded.zoned")


def _row(v: _Visit) -> tuple[str, str, str, float, int]:
    return (v.key, v.day, v.id, v.last_seen, int(v.zoned))


class NewVisits:
    """Visits started since the last write, taken out for one transaction."""

    __slots__ = ("visits",)

    def __init__(self, visits: dict[str, _Visit]) -> None:
        self.visits = visits

    def __bool__(self) -> bool:
        return bool(self.visits)

    def write(self, cur: sqlite3.Cursor) -> None:
        cur.executemany(_UPSERT, [_row(v) for v in self.visits.values()])


class VisitBook:
    """Open visits in memory, mirrored in the ``visits`` and ``visit_meta`` tables of
    ``conn`` (autocommit; a database opened by :func:`gateway.storage.open_db`)."""

    def __init__(self, conn: sqlite3.Connection, *, absence_s: float, now: float,
                 idle_s: float = VISIT_IDLE_S, max_down_s: float = VISIT_MAX_DOWN_S,
                 sync_s: float = VISIT_SYNC_S, pseudonyms: Pseudonyms | None = None) -> None:
        self._conn = conn
        self.ps = pseudonyms if pseudonyms is not None else pseudonyms_for(conn)
        self.absence_s = absence_s + sync_s
        self.idle_s = idle_s
        self.max_down_s = max_down_s
        self.sync_s = sync_s
        self._open: dict[str, _Visit] = {}  # inbox -> visit (memory only)
        self._restored: dict[str, _Visit] = {}  # pseudonym -> visit not yet matched
        self._new: dict[str, _Visit] = {}  # started since the last write
        self._ended: set[str] = set()  # row keys of visits ended since the last write
        self._synced = float("-inf")
        self._today = self.ps.today
        self.resumed = 0  # visits restored from the file at start
        self.downtime_s = 0.0
        self._restore(now)

    def _window(self, v: _Visit) -> float:
        return self.absence_s if v.zoned else self.idle_s

    def _restore(self, now: float) -> None:
        row = self._conn.execute(
            "SELECT value FROM visit_meta WHERE key = 'watched_until'").fetchone()
        down = None if row is None else now - float(row[0])
        y = self.ps.yesterday
        if down is None or not 0 <= down <= self.max_down_s or y is None:
            # never ran, down too long, the clock went back, or no day keys: start afresh
            self._conn.execute("DELETE FROM visits")
            self._heartbeat(now)
            return
        self.downtime_s = down
        gone: list[tuple[str]] = []
        for key, day, vid, last_seen, zoned in self._conn.execute(
                "SELECT shopper, day, visit, last_seen, zoned FROM visits").fetchall():
            v = _Visit(str(vid), float(last_seen) + down, bool(zoned), str(key), str(day))
            v.stored_seen = float(last_seen)
            if now - v.last_seen > self._window(v) or v.day < y:
                gone.append((v.key,))
            else:
                self._restored[v.key] = v
        self.resumed = len(self._restored)
        self._write(now, gone)

    def _advance(self, now: float) -> None:
        """A new day: visits still open under a day key that went end here."""
        self.ps.advance(now)
        if self.ps.today == self._today:
            return
        self._today = self.ps.today
        y = self.ps.yesterday or ""
        for inbox, v in list(self._open.items()):
            if v.day < y:
                self.end(inbox)
        for key, v in list(self._restored.items()):
            if v.day < y:
                del self._restored[key]
                self._ended.add(key)

    def _claim(self, inbox: str) -> _Visit | None:
        """The shopper's visit restored from the file, matched by their pseudonyms."""
        if not self._restored or self.ps.today is None:
            return None
        ids = self.ps.ids(inbox)
        v = self._restored.pop(ids.today, None)
        if v is None and ids.yesterday is not None:
            v = self._restored.pop(ids.yesterday, None)
        if v is not None:
            self._open[inbox] = v
        return v

    # ---- per trigger ------------------------------------------------------------------
    def visit(self, inbox: str, now: float) -> str:
        """The shopper's open visit id (marked seen now), or a new one."""
        self._advance(now)
        v = self._open.get(inbox) or self._claim(inbox)
        if v is not None and now - v.last_seen <= self._window(v):
            v.last_seen = now
            return v.id
        if v is not None and v.key != self.ps.ids(inbox).today:
            self._ended.add(v.key)  # yesterday's row: the new visit is today's
        today = self.ps.today or ""
        v = self._open[inbox] = self._new[inbox] = _Visit(
            new_id(), now, v.zoned if v else False, self.ps.ids(inbox).today, today)
        self._ended.discard(v.key)
        return v.id

    def current(self, inbox: str) -> str | None:
        v = self._open.get(inbox) or self._claim(inbox)
        return None if v is None else v.id

    def end(self, inbox: str) -> None:
        """Presence saw the shopper leave their last zone: the visit is over."""
        v = self._open.pop(inbox, None) or self._claim(inbox)
        if v is not None:
            self._open.pop(inbox, None)
            self._new.pop(inbox, None)
            self._ended.add(v.key)

    def __len__(self) -> int:
        return len(self._open) + len(self._restored)

    def forget(self, inbox: str) -> int:
        """An erased shopper (gateway.consent): their visit gone from memory and the file;
        returns the rows deleted."""
        keys: set[str] = set()
        v = self._open.pop(inbox, None)
        if v is not None:
            keys.add(v.key)
        self._new.pop(inbox, None)
        if self.ps.today is not None:
            ids = self.ps.ids(inbox)
            keys |= {ids.today} | ({ids.yesterday} if ids.yesterday else set())
        for k in keys:
            self._restored.pop(k, None)
            self._ended.discard(k)
        return int(self._conn.executemany("DELETE FROM visits WHERE shopper = ?",
                                          [(k,) for k in sorted(keys)]).rowcount or 0)

    # ---- group commit -----------------------------------------------------------------
    def take_new(self) -> NewVisits:
        """The visits started since the last write, for the caller's transaction."""
        taken = {inbox: v for inbox, v in self._new.items() if self._open.get(inbox) is v}
        self._new = {}
        # Written as they are now, maybe not yet flagged as in a zone (the next sync
        # flags them); rewritten only when stale, as any other row. A crash in that
        # first second resumes the visit within the longer idle window: stricter caps.
        for v in taken.values():
            v.stored_seen = v.last_seen
        return NewVisits(taken)

    def give_back(self, taken: NewVisits) -> None:
        """``taken`` was not committed: the next write takes the visits still open."""
        for inbox, v in taken.visits.items():
            if self._open.get(inbox) is v:
                v.stored_seen = float("-inf")
                self._new.setdefault(inbox, v)

    # ---- periodic ---------------------------------------------------------------------
    def sync(self, now: float, present: Iterable[str], *, force: bool = False) -> bool:
        """Refresh ``last_seen`` of shoppers ``present`` in a zone, expire visits whose
        window passed, write the heartbeat; at most once per ``sync_s`` unless forced."""
        if not force and now - self._synced < self.sync_s:
            return False
        self._advance(now)
        here = set(present)
        if self._restored:
            for inbox in here:
                if inbox not in self._open:
                    self._claim(inbox)
        gone: list[tuple[str]] = []
        for inbox, v in list(self._open.items()):
            if inbox in here:
                v.last_seen, v.zoned = now, True
            elif now - v.last_seen > self._window(v):
                del self._open[inbox]
                gone.append((v.key,))
            else:
                v.zoned = False
        for key, v in list(self._restored.items()):
            if now - v.last_seen > self._window(v):
                del self._restored[key]
                gone.append((key,))
        self._write(now, gone)
        return True

    def _write(self, now: float, gone: list[tuple[str]]) -> None:
        self._synced = now
        gone = gone + [(key,) for key in self._ended]
        new = [_row(v) for inbox, v in self._new.items() if self._open.get(inbox) is v]
        stale = [v for inbox, v in self._open.items() if inbox not in self._new
                 and v.last_seen - v.stored_seen > self._window(v) / 2]
        rows = [(v.last_seen, int(v.zoned), v.key) for v in stale]
        self._conn.execute("BEGIN")
        try:
            self._conn.executemany("DELETE FROM visits WHERE shopper = ?", gone)
            self._conn.executemany(_UPSERT, new)
            self._conn.executemany("UPDATE visits SET last_seen = ?, zoned = ? WHERE shopper = ?",
                                   rows)
            self._heartbeat(now)
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        for v in stale:
            v.stored_seen = v.last_seen
        for v in self._new.values():
            v.stored_seen = v.last_seen
        self._new.clear()
        self._ended.clear()

    def _heartbeat(self, now: float) -> None:
        self._conn.execute(
            "INSERT INTO visit_meta(key, value) VALUES ('watched_until', ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value", (now,))
