"""The gateway's SQLite file: opened with the pragmas the outbox relies on, then migrated.

Every table of the gateway (outbox, bundle and deltas, pinned HQ keys, cap charges,
lifetime counts and budget spend, visits) is created here by numbered migrations. Each
applied step is recorded in ``_sqlite_migrations`` under the set name
``aislecast-gateway``: the table, columns, index and rows that sqlite-utils'
``Migrations`` writes, which earlier releases used, so their files stay valid; this
module writes them itself with :mod:`sqlite3` so that the gateway does not load
sqlite-utils (and click, dateutil, pluggy: ~3 MiB of its RSS).
The modules that use the tables (:mod:`gateway.outbox`, :mod:`gateway.bundles`,
:mod:`gateway.caps`, :mod:`gateway.visits`) assume a migrated database and create
nothing themselves.

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

import datetime
import logging
import re
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from aislecast.kernel.errors import SchemaVersionError
from gateway.pseudonyms import pseudonyms_for

__all__ = ["MIGRATION_SET", "STEPS", "Step", "applied", "m0001_initial", "m0002_pinned_keys",
           "m0003_pseudonyms", "m0004_campaign_ends",
           "migrate", "open_db", "schema_version"]

log = logging.getLogger("aislecast.gateway.storage")

MIGRATION_SET: Final = "aislecast-gateway"
Step = Callable[[sqlite3.Connection], None]

#: The record, exactly as sqlite-utils' ``Migrations.ensure_migrations_table`` creates it.
_RECORD: Final = "_sqlite_migrations"  # spelled out in the SQL below (no f-strings in SQL)
_RECORD_DDL: Final = (
    'CREATE TABLE "_sqlite_migrations" (\n   "id" INTEGER PRIMARY KEY,\n'
    '   "migration_set" TEXT,\n   "name" TEXT,\n   "applied_at" TEXT\n)',
    'CREATE UNIQUE INDEX "idx__sqlite_migrations_migration_set_name"\n'
    '    ON "_sqlite_migrations" ("migration_set", "name")',
)

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


def m0001_initial(db: sqlite3.Connection) -> None:
    """The pre-migration schema (``IF NOT EXISTS``, so an existing file is adopted)."""
    for stmt in _V1:
        db.execute(stmt)


def m0002_pinned_keys(db: sqlite3.Connection) -> None:
    """HQ signing keys learned from signed announcements, and retired ones (gateway.keys)."""
    db.execute("CREATE TABLE pinned_keys (kid TEXT PRIMARY KEY, public_key TEXT,"
               " retired INTEGER NOT NULL, changed_at REAL NOT NULL)")


_V3: Final = (
    # rows keyed by day pseudonyms (gateway.pseudonyms): no inbox; `day` is the key's day
    "CREATE TABLE cap_charges (shopper TEXT NOT NULL, campaign TEXT NOT NULL,"
    " visit TEXT NOT NULL, day TEXT NOT NULL, ts REAL NOT NULL, offer INTEGER NOT NULL,"
    " source TEXT NOT NULL DEFAULT '')",
    "CREATE INDEX cap_charges_day ON cap_charges (day)",
    # lifetime counts per campaign: a timestamp-free pseudonym and a count, nothing else
    "CREATE TABLE cap_lifetime (campaign TEXT NOT NULL, shopper TEXT NOT NULL,"
    " n INTEGER NOT NULL, PRIMARY KEY (campaign, shopper)) WITHOUT ROWID",
    "CREATE TABLE visits (shopper TEXT PRIMARY KEY, day TEXT NOT NULL,"
    " visit TEXT NOT NULL, last_seen REAL NOT NULL, zoned INTEGER NOT NULL)",
)


def m0003_pseudonyms(db: sqlite3.Connection) -> None:
    """Cap charges and visits keyed by pseudonyms instead of the inbox in clear.

    Every old charge becomes a lifetime count (``cap_lifetime``, so a "once ever" cap
    still holds); the charges of the newest day in the file and the day before are
    re-keyed with those days' keys (the per-visit, per-day caps and cooldowns of an
    upgrade made mid-day still hold); older charges are dropped (their day keys would be
    destroyed at once) and counted in the log. Open visits are re-keyed under the
    newest day. The old tables are dropped (``secure_delete`` zeroes their pages).
    """
    old = db.execute("SELECT inbox, campaign, visit, day, ts, offer, source FROM cap_charges"
                     " ORDER BY ts").fetchall()
    visits = db.execute("SELECT inbox, visit, last_seen, zoned FROM visits").fetchall()
    db.execute("DROP TABLE cap_charges")
    db.execute("DROP TABLE visits")
    for stmt in _V3:
        db.execute(stmt)
    if not old and not visits:
        return
    ps = pseudonyms_for(db)
    days = sorted({str(r[3]) for r in old if _is_day(str(r[3]))})
    newest = days[-1] if days else datetime.datetime.fromtimestamp(
        max([float(r[4]) for r in old] + [float(v[2]) for v in visits]),
        datetime.UTC).date().isoformat()
    ps.advance_day(newest)
    life: dict[tuple[str, str], int] = {}
    rows, dropped = [], 0
    for inbox, campaign, visit, day, ts, offer, source in old:
        key = (str(campaign), ps.lifetime(str(inbox), str(campaign)))
        life[key] = life.get(key, 0) + 1
        kday = ps.clamp(str(day)) if _is_day(str(day)) else None
        if kday is None or kday != str(day):
            dropped += 1
            continue
        rows.append((ps.of(str(inbox), kday), campaign, ps.visit_tag(str(inbox), str(visit), kday),
                     kday, ts, offer, source))
    db.executemany("INSERT INTO cap_charges VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    db.executemany("INSERT INTO cap_lifetime VALUES (?, ?, ?)",
                   [(c, s, n) for (c, s), n in life.items()])
    db.executemany("INSERT INTO visits VALUES (?, ?, ?, ?, ?)",
                   [(ps.of(str(i), newest), newest, v, seen, z) for i, v, seen, z in visits])
    log.info("cap charges and visits re-keyed by pseudonyms charges=%d rekeyed=%d dropped=%d"
             " lifetime=%d visits=%d", len(old), len(rows), dropped, len(life), len(visits))


def _is_day(day: str) -> bool:
    try:
        datetime.date.fromisoformat(day)
    except ValueError:
        return False
    return len(day) == 10


def m0004_campaign_ends(db: sqlite3.Connection) -> None:
    """The end time of each campaign the gateway held (gateway.campaign_ends): a campaign
    that left the bundle and ended has its ``cap_lifetime`` rows deleted. No shopper data;
    ``ends_at`` NULL: the campaign has no end. Rows from before this step have no entry
    and are kept."""
    db.execute("CREATE TABLE cap_campaigns (campaign TEXT PRIMARY KEY, ends_at REAL) WITHOUT ROWID")


STEPS: Final[tuple[Step, ...]] = (m0001_initial, m0002_pinned_keys, m0003_pseudonyms,
                                  m0004_campaign_ends)


def _number(name: str) -> int | None:
    m = _NAME_RE.fullmatch(name)
    return int(m.group(1)) if m else None


def _check_names(steps: Sequence[Step]) -> None:
    for i, step in enumerate(steps, start=1):
        if _number(step.__name__) != i:
            raise ValueError(f"migration {step.__name__} must be named m{i:04d}_<what>")


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    row = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                     (name,)).fetchone()
    return row is not None


def applied(db: sqlite3.Connection) -> list[str]:
    """Names of the steps recorded in ``db``, in the order they were applied."""
    if not _has_table(db, _RECORD):
        return []
    rows = db.execute("SELECT name FROM _sqlite_migrations WHERE migration_set = ? ORDER BY rowid",
                      (MIGRATION_SET,)).fetchall()
    return [str(name) for (name,) in rows]


def schema_version(db: sqlite3.Connection, steps: Sequence[Step] = STEPS) -> int:
    """The version recorded in ``db`` (0: none). A step name this code does not know
    counts as one past the newest it knows, whatever its number."""
    _check_names(steps)
    known = {s.__name__ for s in steps}
    found = 0
    for name in applied(db):
        n = _number(name)
        if name not in known:
            n = max(n or 0, len(steps) + 1)
        found = max(found, n or 0)
    return found


def _apply(db: sqlite3.Connection, step: Step) -> None:
    """Run ``step`` and record it in one transaction (rolled back if the step raises)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        step(db)
        db.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at)"
                   " VALUES (?, ?, ?)",
                   (MIGRATION_SET, step.__name__, str(datetime.datetime.now(datetime.UTC))))
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def migrate(db: sqlite3.Connection, *, path: str = "", steps: Sequence[Step] = STEPS) -> int:
    """Bring ``db`` (an autocommit connection) to the newest version of ``steps``;
    returns that version.

    Raises :class:`SchemaVersionError` (and writes nothing) for a file from a newer
    aislecast.
    """
    found = schema_version(db, steps)
    if found > len(steps):
        raise SchemaVersionError(path or "(gateway database)", found, len(steps))
    if found == 0 and any(_has_table(db, t) for t in _V1_TABLES):
        log.info("adopting a gateway database made before migrations as version 1 path=%s", path)
    if not _has_table(db, _RECORD):
        for stmt in _RECORD_DDL:
            db.execute(stmt)
    done = set(applied(db))
    pending = [s for s in steps if s.__name__ not in done]
    for step in pending:
        _apply(db, step)
    if pending:
        log.info("gateway database migrated path=%s from=%d to=%d steps=%s", path, found,
                 len(steps), ",".join(s.__name__ for s in pending))
    return len(steps)


def open_db(path: Path | str, *, steps: Sequence[Step] = STEPS) -> sqlite3.Connection:
    """Open (or create) the gateway's SQLite file in WAL mode and migrate it.

    The connection is in autocommit mode (``isolation_level=None``) and may be used from
    worker threads (``check_same_thread=False``); the caller closes it.

    Raises :class:`SchemaVersionError` for a file written by a newer aislecast (the
    connection is closed again, the file untouched).
    """
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=5000")
    # deleted rows (pruned charges, ended visits) are zeroed, not left in free pages
    conn.execute("PRAGMA secure_delete=ON")
    # No checkpoint (and its fsync, tens of ms on an SD card) inside a commit on the event
    # loop: Outbox.checkpoint() runs them from a worker thread instead.
    conn.execute("PRAGMA wal_autocheckpoint=0")
    try:
        migrate(conn, path=str(path), steps=steps)
    except BaseException:
        conn.close()
        raise
    return conn
