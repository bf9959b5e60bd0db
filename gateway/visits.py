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
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Final

from aislecast.kernel.ids import new_id

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
    __slots__ = ("id", "last_seen", "stored_seen", "zoned")

    def __init__(self, vid: str, last_seen: float, zoned: bool) -> None:
        self.id, self.last_seen, self.zoned = vid, last_seen, zoned
        self.stored_seen = float("-inf")  # last_seen as written to the file


_UPSERT: Final = (
    "INSERT INTO visits(inbox, visit, last_seen, zoned) VALUES (?, ?, ?, ?)"
    " ON CONFLICT(inbox) DO UPDATE SET visit = excluded.visit,"
    " last_seen = excluded.last_seen, zoned = excluded.zoned")


class NewVisits:
    """Visits started since the last write, taken out for one transaction."""

    __slots__ = ("visits",)

    def __init__(self, visits: dict[str, _Visit]) -> None:
        self.visits = visits

    def __bool__(self) -> bool:
        return bool(self.visits)

    def write(self, cur: sqlite3.Cursor) -> None:
        cur.executemany(_UPSERT, [(inbox, v.id, v.last_seen, int(v.zoned))
                                  for inbox, v in self.visits.items()])


class VisitBook:
    """Open visits in memory, mirrored in the ``visits`` and ``visit_meta`` tables of
    ``conn`` (autocommit; a database opened by :func:`gateway.storage.open_db`)."""

    def __init__(self, conn: sqlite3.Connection, *, absence_s: float, now: float,
                 idle_s: float = VISIT_IDLE_S, max_down_s: float = VISIT_MAX_DOWN_S,
                 sync_s: float = VISIT_SYNC_S) -> None:
        self._conn = conn
        self.absence_s = absence_s + sync_s
        self.idle_s = idle_s
        self.max_down_s = max_down_s
        self.sync_s = sync_s
        self._open: dict[str, _Visit] = {}
        self._new: dict[str, _Visit] = {}  # started since the last write
        self._ended: set[str] = set()  # ended since the last write
        self._synced = float("-inf")
        self.resumed = 0  # visits restored from the file at start
        self.downtime_s = 0.0
        self._restore(now)

    def _window(self, v: _Visit) -> float:
        return self.absence_s if v.zoned else self.idle_s

    def _restore(self, now: float) -> None:
        row = self._conn.execute(
            "SELECT value FROM visit_meta WHERE key = 'watched_until'").fetchone()
        down = None if row is None else now - float(row[0])
        if down is None or not 0 <= down <= self.max_down_s:
            # never ran, down too long, or the clock went back: start afresh
            self._conn.execute("DELETE FROM visits")
            self._heartbeat(now)
            return
        self.downtime_s = down
        gone: list[tuple[str]] = []
        for inbox, vid, last_seen, zoned in self._conn.execute(
                "SELECT inbox, visit, last_seen, zoned FROM visits").fetchall():
            v = _Visit(str(vid), float(last_seen) + down, bool(zoned))
            v.stored_seen = float(last_seen)
            if now - v.last_seen > self._window(v):
                gone.append((inbox,))
            else:
                self._open[str(inbox)] = v
        self.resumed = len(self._open)
        self._write(now, gone)

    # ---- per trigger ------------------------------------------------------------------
    def visit(self, inbox: str, now: float) -> str:
        """The shopper's open visit id (marked seen now), or a new one."""
        v = self._open.get(inbox)
        if v is not None and now - v.last_seen <= self._window(v):
            v.last_seen = now
            return v.id
        v = self._open[inbox] = self._new[inbox] = _Visit(
            new_id(), now, v.zoned if v else False)
        self._ended.discard(inbox)
        return v.id

    def current(self, inbox: str) -> str | None:
        v = self._open.get(inbox)
        return None if v is None else v.id

    def end(self, inbox: str) -> None:
        """Presence saw the shopper leave their last zone: the visit is over."""
        if self._open.pop(inbox, None) is not None:
            self._new.pop(inbox, None)
            self._ended.add(inbox)

    def __len__(self) -> int:
        return len(self._open)

    def forget(self, inbox: str) -> int:
        """An erased shopper (gateway.consent): their visit gone from memory and the file;
        returns the rows deleted."""
        self._open.pop(inbox, None)
        self._new.pop(inbox, None)
        self._ended.discard(inbox)
        return int(self._conn.execute("DELETE FROM visits WHERE inbox = ?", (inbox,)).rowcount or 0)

    # ---- group commit -----------------------------------------------------------------
    def take_new(self) -> NewVisits:
        """The visits started since the last write, for the caller's transaction."""
        taken = {inbox: v for inbox, v in self._new.items() if inbox in self._open}
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
        here = set(present)
        gone: list[tuple[str]] = []
        for inbox, v in list(self._open.items()):
            if inbox in here:
                v.last_seen, v.zoned = now, True
            elif now - v.last_seen > self._window(v):
                del self._open[inbox]
                gone.append((inbox,))
            else:
                v.zoned = False
        self._write(now, gone)
        return True

    def _write(self, now: float, gone: list[tuple[str]]) -> None:
        self._synced = now
        gone = gone + [(inbox,) for inbox in self._ended]
        new = [(inbox, v.id, v.last_seen, int(v.zoned)) for inbox, v in self._new.items()
               if inbox in self._open]
        stale = [(inbox, v) for inbox, v in self._open.items() if inbox not in self._new
                 and v.last_seen - v.stored_seen > self._window(v) / 2]
        rows = [(v.last_seen, int(v.zoned), inbox) for inbox, v in stale]
        self._conn.execute("BEGIN")
        try:
            self._conn.executemany("DELETE FROM visits WHERE inbox = ?", gone)
            self._conn.executemany(_UPSERT, new)
            self._conn.executemany("UPDATE visits SET last_seen = ?, zoned = ? WHERE inbox = ?",
                                   rows)
            self._heartbeat(now)
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        for _, v in stale:
            v.stored_seen = v.last_seen
        for v in self._new.values():
            v.stored_seen = v.last_seen
        self._new.clear()
        self._ended.clear()

    def _heartbeat(self, now: float) -> None:
        self._conn.execute(
            "INSERT INTO visit_meta(key, value) VALUES ('watched_until', ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value", (now,))
