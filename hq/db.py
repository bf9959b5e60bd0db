"""HQ storage: one small SQL layer over SQLite (default) or PostgreSQL (``postgresql://``).

Callers write standard SQL with ``?`` placeholders (``INSERT ... ON CONFLICT``, no
vendor functions); for PostgreSQL the placeholders are translated once per statement
(``?`` becomes ``%s`` and a literal ``%`` becomes ``%%``, outside quoted strings).

Event loop safety (HQ runs on asyncio): the main connection serves short statements
from the loop thread: primary-key lookups and upserts; ingest stores its groups of MQTT
batches from a worker thread on it (:meth:`hq.ingest.Ingest.on_events_many`, holding the
connection's lock for the group's transaction: up to ~60 ms on SQLite). Queries that scan the
event log (analytics, the console) go through :meth:`HqDb.offload`, which runs them in
a worker thread on a second connection, so a slow aggregate never stalls ingest and
never waits for the loop's connection (SQLite in WAL mode lets that reader run beside
the writer; PostgreSQL connections are independent anyway).

The schema is created and upgraded by :mod:`hq.migrations` when an ``HqDb`` opens
(``create_schema=False`` skips that, for a second connection to a migrated database).

A PostgreSQL connection that the server dropped is reopened before the next statement;
the failing statement itself raises (it may or may not have committed, and only the
caller knows whether repeating it is safe: event inserts are, by id).
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Concatenate, Final, ParamSpec, TypeVar
from urllib.parse import urlsplit, urlunsplit

from hq.migrations import migrate

__all__ = ["HqDb", "marks", "redact", "translate"]

P = ParamSpec("P")
R = TypeVar("R")


@functools.lru_cache(maxsize=512)
def marks(n: int) -> str:
    """``n`` SQL placeholders for an ``IN (...)`` list (the values are bound, never
    formatted in)."""
    return ", ".join("?" * n)


# rows per multi-row INSERT (HqDb.insert_rows), the largest first; those whose bound
# parameters pass the connection's limit (32,766 by default since SQLite 3.32, 999
# before) are skipped: 1,024 rows of events' 14 columns fit the newer one
_VALUES_CHUNKS: Final = (1024, 256, 64, 16, 4, 1)


@functools.lru_cache(maxsize=64)
def _values_sql(head: str, tail: str, width: int, n: int) -> str:
    row = f"({marks(width)})"
    return f"{head} VALUES {', '.join([row] * n)} {tail}"


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


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


class HqDb:
    """``HqDb("sqlite:///path")``, ``HqDb(":memory:")`` or ``HqDb("postgresql://...")``."""

    def __init__(self, url: str, *, create_schema: bool = True) -> None:
        self.url = url
        self.safe_url = redact(url)  # for messages and logs
        self.dialect = "postgresql" if _is_postgres(url) else "sqlite"
        self._path = self.sqlite_path(url) or ""
        # re-entrant: statements run under it inside transaction(), which holds it too
        self._lock = threading.RLock()
        self._reader: HqDb | None = None
        self._reader_lock = threading.Lock()
        self._conn: Any = self._connect()
        if create_schema:
            try:
                migrate(self)
            except BaseException:
                self.close()
                raise

    @staticmethod
    def sqlite_path(url: str) -> str | None:
        """The SQLite file of ``url`` (``":memory:"`` for none); None for PostgreSQL."""
        if _is_postgres(url):
            return None
        return url.removeprefix("sqlite:///").removeprefix("sqlite://") or ":memory:"

    def _connect(self) -> Any:  # a sqlite3 or a psycopg connection
        if self.dialect == "postgresql":
            import psycopg  # noqa: PLC0415 - optional dependency (extra "postgres")

            pg = psycopg.connect(self.url, autocommit=True)
            # HQ's statements are short; PostgreSQL's JIT compiles any whose estimated
            # cost passes jit_above_cost, and the estimate of an ingest group's one
            # statement (with reach's correlated subquery) did: 640 ms of compiling for
            # a 30 ms insert of 3,200 events (EXPLAIN ANALYZE, 2026-12-03)
            pg.execute("SET jit = off")
            return pg
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: every use holds self._lock, and offload() runs the
        # reader connection in worker threads
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        return conn

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

    def insert_rows(self, head: str, rows: Sequence[Sequence[Any]], tail: str = "") -> None:
        """SQLite: ``head VALUES (...), (...) tail`` for ``rows`` (all of one width), inside
        the caller's :meth:`transaction`, as a few multi-row statements of the sizes in
        :data:`_VALUES_CHUNKS` (each text prepared once and cached by the driver).

        One statement per chunk is one release of the GIL while SQLite works through it.
        ``executemany`` releases and retakes it around every row, and in HQ's process a
        busy event loop (MQTT reads, acks) holds it in between: with the loop busy, a
        group of 3,200 events took 15 % longer to store that way (measured 2026-12-03)."""
        if self.dialect != "sqlite":
            raise ValueError("insert_rows is SQLite's (PostgreSQL: one statement, hq.rollups)")
        if not rows:
            return
        width, i = len(rows[0]), 0
        if any(len(r) != width for r in rows):
            raise ValueError(f"insert_rows: rows of {width} values and of others")
        with self._lock:
            conn = self._live()
            bound = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)  # this build's own
            for size in (s for s in _VALUES_CHUNKS if s * width <= bound):
                while len(rows) - i >= size:
                    conn.execute(_values_sql(head, tail, width, size),
                                 [v for r in rows[i:i + size] for v in r])
                    i += size

    def returning_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        """PostgreSQL only: ``sql`` (a statement with ``RETURNING``) for every row, sent
        as one pipeline, inside the caller's :meth:`transaction`; what they returned."""
        with self._lock:
            out: list[tuple[Any, ...]] = []
            with self._live().cursor() as cur:
                cur.executemany(self._sql(sql), [tuple(r) for r in rows], returning=True)
                while True:
                    out += [tuple(r) for r in cur.fetchall()]
                    if not cur.nextset():
                        return out

    def returning(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """PostgreSQL only: one statement with its parameters sent in binary (no text
        escaping of big arrays), inside the caller's :meth:`transaction`; its rows."""
        binary = self._sql(sql).replace("%%", "\0").replace("%s", "%b").replace("\0", "%%")
        with self._lock, self._live().cursor() as cur:
            cur.execute(binary, tuple(params))
            return [tuple(r) for r in cur.fetchall()]

    def pipelined(self, batches: Sequence[tuple[str, Sequence[Sequence[Any]]]]) -> None:
        """Each ``(sql, rows)`` for its rows, in order, inside the caller's
        :meth:`transaction` (on PostgreSQL as one pipeline: one round trip)."""
        with self._lock:
            conn = self._live()
            if self.dialect == "sqlite":
                for sql, rows in batches:
                    conn.executemany(sql, [tuple(r) for r in rows])
                return
            with conn.pipeline(), conn.cursor() as cur:
                for sql, rows in batches:
                    if rows:
                        cur.executemany(self._sql(sql), [tuple(r) for r in rows])

    @contextmanager
    def transaction(self, *, immediate: bool = False) -> Iterator[None]:
        """``execute``/``query`` inside run in one transaction on this connection, and no
        other thread uses it meanwhile; committed at the end, rolled back on an error.
        ``immediate`` takes SQLite's write lock at the start (PostgreSQL locks per row).
        Not for :meth:`executemany`, which makes its own transaction."""
        with self._lock:
            conn = self._live()
            if self.dialect == "postgresql":
                with conn.transaction():
                    yield
                return
            conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            try:
                yield
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def tables(self) -> set[str]:
        """Names of the tables in this database (PostgreSQL: in the current schema)."""
        sql = ("SELECT table_name FROM information_schema.tables"
               " WHERE table_schema = current_schema()" if self.dialect == "postgresql"
               else "SELECT name FROM sqlite_master WHERE type = 'table'")
        return {str(r[0]) for r in self.query(sql)}

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
