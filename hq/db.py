"""HQ storage: one small SQL layer over SQLite (default) with portable SQL.

Statements use ``?`` placeholders and standard SQL only (``INSERT ... ON CONFLICT``),
so the same layer runs on PostgreSQL through psycopg when HQ is given a
``postgresql://`` URL (placeholders are translated).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["HqDb", "SCHEMA"]

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


class HqDb:
    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect: str
        self._conn: Any
        if url.startswith(("postgresql://", "postgres://")):
            import psycopg  # noqa: PLC0415 - optional dependency

            self._conn = psycopg.connect(url, autocommit=True)
            self.dialect = "postgresql"
        else:
            path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
            if path not in {"", ":memory:"}:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(path or ":memory:", isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self.dialect = "sqlite"
        for stmt in SCHEMA:
            self.execute(stmt)

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = self._conn.execute(self._sql(sql), tuple(params))
        return int(cur.rowcount or 0)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """Run ``sql`` for every row in one transaction; returns rows changed."""
        rows = list(rows)
        if not rows:
            return 0
        if self.dialect == "postgresql":
            with self._conn.transaction(), self._conn.cursor() as cur:
                cur.executemany(self._sql(sql), rows)
                return int(cur.rowcount or 0)
        before = self._conn.total_changes
        self._conn.execute("BEGIN")
        try:
            self._conn.executemany(sql, rows)
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        return int(self._conn.total_changes - before)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self._conn.execute(self._sql(sql), tuple(params))
        return [tuple(r) for r in cur.fetchall()]

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def close(self) -> None:
        self._conn.close()
