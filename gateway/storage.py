"""The gateway's SQLite file: opened with the pragmas the outbox relies on, then migrated.

Every table of the gateway (outbox, bundle and deltas, cap charges and budget spend,
visits) is created here by numbered migrations, run with sqlite-utils' migrations
(``sqlite_utils.Migrations``), which records each applied step in ``_sqlite_migrations``
under the set name ``aislecast-gateway``. The modules that use the tables
(:mod:`gateway.outbox`, :mod:`gateway.bundles`, :mod:`gateway.caps`,
:mod:`gateway.visits`) assume a migrated database and create nothing themselves.

* Step ``m0001_initial`` is exactly the schema of the releases before migrations existed,
  written with ``IF NOT EXISTS``: a file made by them has the tables but no record, is
  *adopted* (the step creates whatever table that gateway had not used yet, and is
  recorded as applied) and then gets the later steps, in place.
* A file whose record names a step this code does not know was written by a newer
  aislecast: :func:`open_db` refuses it with :class:`SchemaVersionError` and changes
  nothing.
* Adding a step: append ``m000N_what(db)`` to :data:`STEPS` (the next number, never
  renumber or edit a released step). Each step runs in one transaction with its record.
  See docs/storage.md.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import sqlite_utils

from aislecast.kernel.errors import SchemaVersionError

__all__ = ["MIGRATION_SET", "STEPS", "Step", "migrate", "open_db", "schema_version"]

log = logging.getLogger("aislecast.gateway.storage")

MIGRATION_SET: Final = "aislecast-gateway"
Step = Callable[[sqlite_utils.Database], None]

_NAME_RE: Final = re.compile(r"m(\d{4})_\w+")

# The schema as the releases before migrations created it, table by table.
_V1: Final = (
    # AUTOINCREMENT: a sequence number is never reused after a delete, so the publisher
    # can read new rows with a cursor (seq > last seen).
    "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " id TEXT NOT NULL, kind TEXT NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL,"
    " expires_at REAL, created_at REAL NOT NULL, attempts INTEGER NOT NULL)",
    "CREATE UNIQUE INDEX IF NOT EXISTS outbox_id ON outbox (id)",
    "CREATE INDEX IF NOT EXISTS outbox_kind_seq ON outbox (kind, seq)",
    # the last good bundle, so a gateway restarted offline works with it
    "CREATE TABLE IF NOT EXISTS bundle (id INTEGER PRIMARY KEY CHECK (id = 1),"
    " version INTEGER NOT NULL, envelope BLOB NOT NULL)",
    # deltas applied since the current bundle (pauses, edits, opt-outs): replayed on
    # start, or a restart would revive a paused campaign until HQ's next bundle
    "CREATE TABLE IF NOT EXISTS deltas (seq INTEGER PRIMARY KEY,"
    " issued_at REAL NOT NULL, envelope BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS cap_charges (inbox TEXT NOT NULL, campaign TEXT NOT NULL,"
    " visit TEXT NOT NULL, day TEXT NOT NULL, ts REAL NOT NULL, offer INTEGER NOT NULL,"
    " source TEXT NOT NULL DEFAULT '')",
    "CREATE INDEX IF NOT EXISTS cap_charges_ts ON cap_charges (ts)",
    "CREATE TABLE IF NOT EXISTS budget_spent (campaign TEXT PRIMARY KEY, spent INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS visits (inbox TEXT PRIMARY KEY,"
    " visit TEXT NOT NULL, last_seen REAL NOT NULL, zoned INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS visit_meta (key TEXT PRIMARY KEY, value REAL NOT NULL)",
)
_V1_TABLES: Final = ("outbox", "bundle", "deltas", "cap_charges", "budget_spent", "visits",
                     "visit_meta")


def m0001_initial(db: sqlite_utils.Database) -> None:
    """The pre-migration schema (``IF NOT EXISTS``, so an existing file is adopted)."""
    for stmt in _V1:
        db.execute(stmt)


STEPS: Final[tuple[Step, ...]] = (m0001_initial,)


def _number(name: str) -> int | None:
    m = _NAME_RE.fullmatch(name)
    return int(m.group(1)) if m else None


def _migration_set(steps: Sequence[Step]) -> sqlite_utils.Migrations:
    migrations = sqlite_utils.Migrations(MIGRATION_SET)
    for i, step in enumerate(steps, start=1):
        if _number(step.__name__) != i:
            raise ValueError(f"migration {step.__name__} must be named m{i:04d}_<what>")
        migrations()(step)
    return migrations


def schema_version(db: sqlite_utils.Database, steps: Sequence[Step] = STEPS) -> int:
    """The version recorded in ``db`` (0: none). A step name this code does not know
    counts as one past the newest it knows, whatever its number."""
    known = {s.__name__ for s in steps}
    found = 0
    for applied in _migration_set(steps).applied(db):
        n = _number(applied.name)
        if applied.name not in known:
            n = max(n or 0, len(steps) + 1)
        found = max(found, n or 0)
    return found


def migrate(db: sqlite_utils.Database, *, path: str = "", steps: Sequence[Step] = STEPS) -> int:
    """Bring ``db`` to the newest version of ``steps``; returns that version.

    Raises :class:`SchemaVersionError` (and writes nothing) for a file from a newer
    aislecast.
    """
    found = schema_version(db, steps)
    if found > len(steps):
        raise SchemaVersionError(path or "(gateway database)", found, len(steps))
    if found == 0 and any(db[t].exists() for t in _V1_TABLES):
        log.info("adopting a gateway database made before migrations as version 1 path=%s", path)
    migrations = _migration_set(steps)
    pending = [m.name for m in migrations.pending(db)]
    migrations.apply(db)
    if pending:
        log.info("gateway database migrated path=%s from=%d to=%d steps=%s", path, found,
                 len(steps), ",".join(pending))
    return len(steps)


def open_db(path: Path | str, *, steps: Sequence[Step] = STEPS) -> sqlite_utils.Database:
    """Open (or create) the gateway's SQLite file in WAL mode and migrate it.

    Raises :class:`SchemaVersionError` for a file written by a newer aislecast (the
    connection is closed again, the file untouched).
    """
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    db = sqlite_utils.Database(conn)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=5000")
    # No checkpoint (and its fsync, tens of ms on an SD card) inside a commit on the event
    # loop: Outbox.checkpoint() runs them from a worker thread instead.
    conn.execute("PRAGMA wal_autocheckpoint=0")
    try:
        migrate(db, path=str(path), steps=steps)
    except BaseException:
        conn.close()
        raise
    return db
