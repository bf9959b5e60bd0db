"""Finding a shopper's events on SQLite: an inbox index written in bulk, not per event.

A shopper's events are looked up by inbox for an export, an erasure and the profile
built when a shopper grants ``personalisation`` (:mod:`hq.rights`, :mod:`hq.learning`).
A plain index on ``events (inbox)`` serves those, but it is the dearest part of SQLite
ingest: inboxes are random keys, so a group of 3,200 events from a thousand shoppers
dirties a leaf page per shopper, and SQLite's WAL writes (and checkpoints) every dirty
page whole at each commit. At 1.2 M events that index was 40 % of a group's time
(storing straight into the database: 40k events/s with it, 68k with this instead).

So on SQLite the index is a table, ``events_by_inbox (inbox, event)`` (``event`` is
the row's rowid), ``WITHOUT ROWID`` so it is stored in key order, and it is written in
bulk: ingest adds the rows past ``events_by_inbox_mark.upto`` once there are
:data:`TAIL_MAX` of them (:func:`catch_up`, inside the group's own transaction), one
sorted ``INSERT ... SELECT`` that touches each shopper's leaf once for 65,536 events
instead of once a group. A lookup (:func:`of_inbox`) reads the index and scans the
tail past ``upto`` (at most :data:`TAIL_MAX` rows plus a group, by rowid range), and
checks the row's own ``inbox`` too, so an index row whose event has changed can never
name the wrong shopper. Triggers keep the table true when an event is deleted
(retention) or its inbox changes (erasure takes it off; the till binds a redemption's
event to its shopper later): a row at or below ``upto`` gets its index row then, one
above it is found by the tail scan. Should the newest events all go (retention on an
idle database), rowids below ``upto`` could be handed out again: :func:`catch_up`
lowers ``upto`` to the highest rowid before each insert, so those rows count as tail.

PostgreSQL keeps the plain index: its WAL records rows, not pages, so a random key costs
it no more than a sequential one.

Like :mod:`hq.rollups`, no runtime import of :mod:`hq.db` (hq.migrations imports this).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from hq.db import HqDb

__all__ = ["TAIL_MAX", "catch_up", "m0018_inbox_index", "of_inbox"]

#: events past the index before ingest adds them to it (a lookup scans at most these)
TAIL_MAX: Final = 65_536

_MERGE: Final = ("INSERT INTO events_by_inbox (inbox, event) SELECT inbox, rowid FROM events"
                 " WHERE rowid > ? AND rowid <= ? AND inbox IS NOT NULL ORDER BY inbox, rowid"
                 " ON CONFLICT DO NOTHING")
# a rowid list (the index's rows, then the tail's) that the planner takes as it is: an
# OR of the two let it scan the whole log by events_ts for a query ordered by time
_OF_INBOX_SQLITE: Final = ("rowid IN (SELECT event FROM events_by_inbox WHERE inbox = ? UNION ALL"
                           " SELECT rowid FROM events WHERE rowid > (SELECT upto FROM"
                           " events_by_inbox_mark) AND inbox = ?) AND inbox = ?")


def of_inbox(db: HqDb, inbox: str) -> tuple[str, tuple[str, ...]]:
    """The ``WHERE`` condition on ``events`` that selects ``inbox``'s events, and its
    parameters: ``SELECT ... FROM events WHERE {cond} ...`` (no table alias)."""
    if db.dialect == "sqlite":
        return _OF_INBOX_SQLITE, (inbox, inbox, inbox)
    return "inbox = ?", (inbox,)


def catch_up(db: HqDb, top_before: int, top_after: int, *, tail_max: int | None = None) -> bool:
    """SQLite, inside the transaction that inserted the events with rowids
    ``top_before < rowid <= top_after``: index the tail when it has grown to ``tail_max``
    rows (default :data:`TAIL_MAX`); True when it did."""
    ((upto,),) = db.query("SELECT upto FROM events_by_inbox_mark")
    if top_before < int(upto):  # the newest rows went: their rowids may come again
        upto = top_before
        db.execute("UPDATE events_by_inbox_mark SET upto = ?", (upto,))
    if top_after - int(upto) < (TAIL_MAX if tail_max is None else tail_max):
        return False
    db.execute(_MERGE, (upto, top_after))
    db.execute("UPDATE events_by_inbox_mark SET upto = ?", (top_after,))
    return True


def m0018_inbox_index(db: HqDb) -> None:
    """SQLite: ``events_inbox`` becomes the bulk-written ``events_by_inbox`` (see the
    module), filled from the events stored; PostgreSQL keeps its index (nothing to do)."""
    if db.dialect != "sqlite":
        return
    for sql in (
        "CREATE TABLE events_by_inbox (inbox TEXT NOT NULL, event INTEGER NOT NULL,"
        " PRIMARY KEY (inbox, event)) WITHOUT ROWID",
        "CREATE TABLE events_by_inbox_mark (one INTEGER PRIMARY KEY CHECK (one = 1),"
        " upto INTEGER NOT NULL)",
        "INSERT INTO events_by_inbox (inbox, event) SELECT inbox, rowid FROM events"
        " WHERE inbox IS NOT NULL ORDER BY inbox, rowid",
        "INSERT INTO events_by_inbox_mark (one, upto)"
        " SELECT 1, coalesce(max(rowid), 0) FROM events",
        "CREATE TRIGGER events_by_inbox_delete AFTER DELETE ON events"
        " WHEN old.inbox IS NOT NULL BEGIN"
        " DELETE FROM events_by_inbox WHERE inbox = old.inbox AND event = old.rowid; END",
        "CREATE TRIGGER events_by_inbox_update AFTER UPDATE OF inbox ON events"
        " WHEN old.inbox IS NOT new.inbox BEGIN"
        " DELETE FROM events_by_inbox WHERE inbox = old.inbox AND event = old.rowid;"
        " INSERT INTO events_by_inbox (inbox, event) SELECT new.inbox, new.rowid"
        " WHERE new.inbox IS NOT NULL"
        " AND new.rowid <= (SELECT upto FROM events_by_inbox_mark)"
        " ON CONFLICT DO NOTHING; END",
        "DROP INDEX events_inbox",
    ):
        db.execute(sql)
