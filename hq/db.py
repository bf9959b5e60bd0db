"""HQ storage: one small SQL layer over SQLite (default) or PostgreSQL (``postgresql://``).

Callers write standard SQL with ``?`` placeholders (``INSERT ... ON CONFLICT``, no
vendor functions); for PostgreSQL the placeholders are translated once per statement
(``?`` becomes ``%s`` and a literal ``%`` becomes ``%%``, outside quoted strings).

Event loop safety (HQ runs on asyncio): the main connection serves short statements
from the loop thread: primary-key lookups, upserts, and one batch insert per MQTT
batch (about a millisecond, see ``benchmarks/bench_ingest.py``). Queries that scan the
event log (analytics, the console) go through :meth:`HqDb.offload`, which runs them in
a worker thread on a second connection, so a slow aggregate never stalls ingest and
never waits for the loop's connection (SQLite in WAL mode lets that reader run beside
the writer; PostgreSQL connections are independent anyway).

A PostgreSQL connection that the server dropped is reopened before the next statement;
the failing statement itself raises (it may or may not have committed, and only the
caller knows whether repeating it is safe: event inserts are, by id).
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

__all__ = ["SCHEMA", "HqDb", "translate"]

P = ParamSpec("P")
R = TypeVar("R")

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS stores (id TEXT PRIMARY KEY, name TEXT NOT NULL, tz TEXT NOT NULL,"
    " bundle_version INTEGER NOT NULL DEFAULT 0, delta_seq INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS zones (store TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL,"
    " PRIMARY KEY (store, id))",
    "CREATE TABLE IF NOT EXISTS beacons (store TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL,"
    " PRIMARY KEY (store, id))",
    "CREATE TABLE IF NOT EXISTS campaigns (id TEXT PRIMARY KEY, body TEXT NOT NULL,"
    " status TEXT NOT NULL, updated_at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS shoppers (inbox TEXT PRIMARY KEY, identity_key TEXT NOT NULL,"
    " consents TEXT NOT NULL, opted_out INTEGER NOT NULL DEFAULT 0,"
    " created_at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, kind TEXT NOT NULL,"
    " ts DOUBLE PRECISION NOT NULL, store TEXT, gateway TEXT, campaign TEXT, variant TEXT,"
    " offer TEXT, inbox TEXT, zone TEXT, reason TEXT, holdout INTEGER, body TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS events_campaign ON events (campaign, kind)",
    "CREATE TABLE IF NOT EXISTS shortlinks (code TEXT PRIMARY KEY, url TEXT NOT NULL,"
    " store TEXT, tag TEXT, campaign TEXT)",
]

# Several HQ workers may start at once on one PostgreSQL database; concurrent
# CREATE TABLE IF NOT EXISTS can still collide in the catalog, so the schema is
# created under a transaction-scoped advisory lock (any constant key of our own).
_SCHEMA_LOCK_KEY = 0x61_69_73_6C  # "aisl"


@functools.lru_cache(maxsize=512)
def translate(sql: str) -> str:
    """``?`` placeholders to psycopg's ``%s`` (and ``%`` to ``%%``), outside quotes."""
    out: list[str] = []
    quote = ""
    for ch in sql:
        if quote:
            if ch == quote:
                quote = ""
            out.append("%%" if ch == "%" else ch)
        elif ch in {"'", '"'}:
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        else:
            out.append("%%" if ch == "%" else ch)
    return "".join(out)


def _is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


class HqDb:
    """``HqDb("sqlite:///path")``, ``HqDb(":memory:")`` or ``HqDb("postgresql://...")``."""

    def __init__(self, url: str, *, create_schema: bool = True) -> None:
        self.url = url
        self.dialect = "postgresql" if _is_postgres(url) else "sqlite"
        self._path = "" if self.dialect == "postgresql" else (
            url.removeprefix("sqlite:///").removeprefix("sqlite://") or ":memory:")
        self._lock = threading.Lock()
        self._reader: HqDb | None = None
        self._reader_lock = threading.Lock()
        self._conn: Any = self._connect()
        if create_schema:
            self._create_schema()

    def _connect(self) -> Any:  # a sqlite3 or a psycopg connection
        if self.dialect == "postgresql":
            import psycopg  # noqa: PLC0415 - optional dependency (extra "postgres")

            return psycopg.connect(self.url, autocommit=True)
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: every use holds self._lock, and offload() runs the
        # reader connection in worker threads
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

    def _create_schema(self) -> None:
        if self.dialect == "postgresql":
            with self._lock, self._conn.transaction():
                self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
                for stmt in SCHEMA:
                    self._conn.execute(stmt)
            return
        for stmt in SCHEMA:
            self.execute(stmt)

    def _sql(self, sql: str) -> str:
        return translate(sql) if self.dialect == "postgresql" else sql

    def _live(self) -> Any:
        """The connection, reopened first if PostgreSQL dropped it (call under the lock)."""
        if self.dialect == "postgresql" and self._conn.closed:
            self._conn = self._connect()
        return self._conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns the rows it changed."""
        with self._lock:
            cur = self._live().execute(self._sql(sql), tuple(params))
            return int(cur.rowcount if cur.rowcount and cur.rowcount > 0 else 0)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """Run ``sql`` for every row in one transaction; returns rows changed."""
        rows = [tuple(r) for r in rows]
        if not rows:
            return 0
        with self._lock:
            conn = self._live()
            if self.dialect == "postgresql":
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(self._sql(sql), rows)
                    return int(max(cur.rowcount, 0))
            before = conn.total_changes
            conn.execute("BEGIN")
            try:
                conn.executemany(sql, rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return int(conn.total_changes - before)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            cur = self._live().execute(self._sql(sql), tuple(params))
            return [tuple(r) for r in cur.fetchall()]

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    # ---- off the event loop ---------------------------------------------------------
    def _reader_db(self) -> HqDb:
        if self._path == ":memory:":
            return self  # a second connection would see another, empty database
        if self._reader is None:
            self._reader = HqDb(self.url, create_schema=False)
        return self._reader

    async def offload(self, fn: Callable[Concatenate[HqDb, P], R], *args: P.args,
                      **kwargs: P.kwargs) -> R:
        """``await db.offload(campaign_stats)``: run ``fn(db, ...)`` in a worker thread on
        the read connection, for queries that scan many rows."""

        def job() -> R:
            with self._reader_lock:
                return fn(self._reader_db(), *args, **kwargs)

        return await asyncio.to_thread(job)

    def close(self) -> None:
        with self._reader_lock:
            if self._reader is not None and self._reader is not self:
                self._reader.close()
            self._reader = None
        with self._lock:
            self._conn.close()
