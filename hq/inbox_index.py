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
bulk: ingest's group writer adds the rows past ``events_by_inbox_mark.upto`` once there
are :data:`TAIL_MAX` of them (:func:`catch_up`, inside the group's own transaction, in
its worker thread), one sorted ``INSERT ... SELECT`` that touches each shopper's leaf
once for 65,536 events instead of once a group. A lookup (:func:`of_inbox`) reads the
index and scans the tail past ``upto`` (at most :data:`TAIL_MAX` rows plus what came
since, by rowid range), and checks the row's own ``inbox`` too, so an index row whose
event has changed can never name the wrong shopper. Triggers keep the table true when an
event is deleted (retention) or its inbox changes (erasure takes it off; the till binds
a redemption's event to its shopper later): a row at or below ``upto`` gets its index
row then, one above it is found by the tail scan.

``events`` has no ``INTEGER PRIMARY KEY``, so its rowids are SQLite's to renumber:
``VACUUM`` may, and a dump and restore does (in order, without gaps), and the newest
events all deleted lets rowids be handed out again. The mark therefore also keeps the
``id`` of the event at ``upto`` (``upto_id``): while that event still has that rowid,
no row at or below it has moved (an in-order renumbering that kept it kept everything
before it). Otherwise the index is not trusted: a lookup takes every row as tail (a
whole scan, slow but exact) until the next group writer rebuilds the index (logged).

PostgreSQL keeps the plain index: its WAL records rows, not pages, so a random key costs
it no more than a sequential one.

Like :mod:`hq.rollups`, no runtime import of :mod:`hq.db` (hq.migrations imports this).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from aislecast.kernel.logs import get_logger

if TYPE_CHECKING:
    from hq.db import HqDb

__all__ = ["TAIL_MAX", "catch_up", "m0018_inbox_index", "of_inbox"]

log = get_logger(__name__)

#: events past the index before ingest adds them to it (a lookup scans at most these)
TAIL_MAX: Final = 65_536

_MERGE: Final = ("INSERT INTO events_by_inbox (inbox, event) SELECT inbox, rowid FROM events"
                 " WHERE rowid > ? AND rowid <= ? AND inbox IS NOT NULL ORDER BY inbox, rowid"
                 " ON CONFLICT DO NOTHING")
# the index holds: nothing indexed yet, or the event at upto is still the one marked
_TRUSTED: Final = ("(m.upto = 0 OR (SELECT e.id FROM events e WHERE e.rowid = m.upto)"
                   " IS m.upto_id)")
# a rowid list (the trusted index's rows, then the tail's) that the planner takes as it
# is: an OR of the two let it scan the whole log by events_ts for a query ordered by time.
# The checks of the mark are scalar subqueries of their own: evaluated once a query
_OF_INBOX_SQLITE: Final = (
    "(rowid IN (SELECT event FROM events_by_inbox WHERE inbox = ?"  # noqa: S608 - constants
    f" AND (SELECT {_TRUSTED} FROM events_by_inbox_mark m) UNION ALL"
    " SELECT rowid FROM events WHERE rowid > (SELECT CASE WHEN"
    f" {_TRUSTED} THEN m.upto ELSE 0 END FROM events_by_inbox_mark m)"
    " AND inbox = ?) AND inbox = ?)")


def of_inbox(db: HqDb, inbox: str) -> tuple[str, tuple[str, ...]]:
    """The ``WHERE`` condition on ``events`` that selects ``inbox``'s events (in
    parentheses), and its parameters: ``SELECT ... FROM events WHERE {cond} ...``."""
    if db.dialect == "sqlite":
        return _OF_INBOX_SQLITE, (inbox, inbox, inbox)
    return "(inbox = ?)", (inbox,)


def catch_up(db: HqDb, top_after: int, *, tail_max: int | None = None) -> bool:
    """SQLite, inside a transaction that holds the write lock, off the event loop (it
    may write 65,536 index rows; a rebuild, the whole log's): index the events up to
    rowid ``top_after`` (the highest) once the tail has ``tail_max`` rows (default
    :data:`TAIL_MAX`); rebuild the index first if the rowids it names changed (see
    the module). True when it wrote the index."""
    ((upto, trusted),) = db.query(f"SELECT m.upto, {_TRUSTED} FROM events_by_inbox_mark m")  # noqa: S608
    upto, rebuilt = int(upto), not trusted
    if rebuilt:
        log.warning("the shoppers' index of events is rebuilt: the rowids it named changed"
                    " (VACUUM, a restore, or the newest events deleted)", indexed_up_to=upto)
        db.execute("DELETE FROM events_by_inbox")
        upto = 0
    if top_after - upto < (TAIL_MAX if tail_max is None else tail_max):
        if rebuilt:  # nothing indexed now: every row is tail until the next merge
            db.execute("UPDATE events_by_inbox_mark SET upto = 0, upto_id = NULL")
        return rebuilt
    db.execute(_MERGE, (upto, top_after))
    db.execute("UPDATE events_by_inbox_mark SET upto = ?,"
               " upto_id = (SELECT id FROM events WHERE rowid = ?)", (top_after, top_after))
    return True


def m0018_inbox_index(db: HqDb) -> None:
    """SQLite: ``events_inbox`` becomes the bulk-written ``events_by_inbox`` (see the
    module), filled from the events stored by :func:`catch_up`; PostgreSQL keeps its
    index (nothing to do)."""
    if db.dialect != "sqlite":
        return
    for sql in (
        "CREATE TABLE events_by_inbox (inbox TEXT NOT NULL, event INTEGER NOT NULL,"
        " PRIMARY KEY (inbox, event)) WITHOUT ROWID",
        "CREATE TABLE events_by_inbox_mark (one INTEGER PRIMARY KEY CHECK (one = 1),"
        " upto INTEGER NOT NULL, upto_id TEXT)",
        "INSERT INTO events_by_inbox_mark (one, upto, upto_id) VALUES (1, 0, NULL)",
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
    ((top,),) = db.query("SELECT coalesce(max(rowid), 0) FROM events")
    catch_up(db, top, tail_max=0)  # the events stored so far, as ingest would index them
