"""The gateway's durable outbox: SQLite (WAL) through sqlite3, one writer.

An offer or event is committed here before it is published, and removed only after the
broker's PUBACK (docs/architecture.md#delivery). WAL with ``synchronous=NORMAL`` makes a commit an append to
the log without an fsync, so a commit costs tens of microseconds and runs on the event
loop; a power cut may lose the last commits but never corrupts the file.

The outbox is bounded (``max_rows``): when full, the oldest *event* rows are dropped
first and counted (offers expire within minutes anyway; analytics tolerate a gap better
than a shopper tolerates a missing coupon). Expired offers are dropped, counted, and
never published.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import msgspec

from aislecast.kernel.const import OUTBOX_MAX_ROWS
from aislecast.kernel.errors import AislecastError

__all__ = ["Outbox", "OutboxError", "OutboxRow"]


class OutboxError(AislecastError):
    """A write to the outbox failed (disk full, I/O error): nothing of it was committed."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"outbox write failed: {detail}",
                         hint="free disk space on the gateway's data_dir; rows are kept in memory "
                              "and written when it succeeds")


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    id: str
    kind: str  # "offer" or "event"
    topic: str
    payload: bytes
    expires_at: float | None
    attempts: int


class Outbox:
    """The ``outbox`` table of a database opened by :func:`gateway.storage.open_db`.

    ``seq`` is AUTOINCREMENT: never reused after a delete, so the publisher reads new
    rows with a cursor (seq > last seen)."""

    def __init__(self, conn: sqlite3.Connection, *, max_rows: int = OUTBOX_MAX_ROWS) -> None:
        self.max_rows = max_rows
        self.dropped_full = 0
        self.dropped_expired = 0
        self.conn = conn
        self._ckpt_conn: sqlite3.Connection | None = None
        self._count = self.conn.execute("SELECT count(*) FROM outbox").fetchone()[0]

    def __len__(self) -> int:
        return int(self._count)

    def add(
        self,
        *,
        offers: Iterable[tuple[str, str, bytes, float]] = (),
        events: Iterable[tuple[str, str, bytes]] = (),
        remove: Sequence[int] = (),
        also: Callable[[sqlite3.Cursor], object] | None = None,
    ) -> list[int]:
        """Commit offers ``(id, topic, payload, expires_at)`` and events ``(id, topic, payload)``
        in one transaction (optionally removing acknowledged rows in the same one, and
        running ``also`` in it: the cap charges of these offers, see
        :meth:`gateway.caps.CapLedger.take`).

        Returns the ``seq`` of each offer, in order. Re-adding an id is a no-op.
        """
        now = time.time()
        with self._transaction() as cur:
            if remove:
                self._delete(cur, remove)
            seqs = self._insert_offers(cur, list(offers), now)
            ev = [(eid, topic, payload, now) for eid, topic, payload in events]
            if ev:
                before = self.conn.total_changes
                cur.executemany(
                    "INSERT OR IGNORE INTO outbox(id, kind, topic, payload, created_at, attempts)"
                    " VALUES (?, 'event', ?, ?, ?, 0)",
                    ev,
                )
                self._count += self.conn.total_changes - before
            if self._count > self.max_rows:
                self._evict(cur, self._count - self.max_rows)
            if also is not None:
                also(cur)
        return seqs

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        """``BEGIN`` on a cursor, ``COMMIT`` at the end; on any failure :meth:`_abort`,
        and an SQLite error is raised as OutboxError."""
        cur = self.conn.cursor()
        count_before = self._count
        cur.execute("BEGIN")
        try:
            yield cur
            cur.execute("COMMIT")
        except BaseException as exc:
            self._abort(count_before)
            if isinstance(exc, sqlite3.Error):
                raise OutboxError(str(exc)) from exc
            raise

    def _abort(self, count_before: int) -> None:
        """Undo a failed transaction. SQLite may already have rolled back by itself (a
        full disk does), and then ROLLBACK would raise and hide the real error."""
        self._count = count_before
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def _insert_offers(self, cur: sqlite3.Cursor, offers: list[tuple[str, str, bytes, float]],
                       now: float) -> list[int]:
        """One executemany; with AUTOINCREMENT and this single writer the new rows take
        consecutive sequence numbers ending at last_insert_rowid(). When an id was
        already there (a replay), each row's seq is looked up instead."""
        if not offers:
            return []
        before = self.conn.total_changes
        cur.executemany(
            "INSERT OR IGNORE INTO outbox(id, kind, topic, payload, expires_at,"
            " created_at, attempts) VALUES (?, 'offer', ?, ?, ?, ?, 0)",
            [(oid, topic, payload, exp, now) for oid, topic, payload, exp in offers],
        )
        added = self.conn.total_changes - before
        self._count += added
        if added == len(offers):
            last = int(cur.execute("SELECT last_insert_rowid()").fetchone()[0])
            return list(range(last - added + 1, last + 1))
        return [int(cur.execute("SELECT seq FROM outbox WHERE id = ?", (o[0],)).fetchone()[0])
                for o in offers]

    def _delete(self, cur: sqlite3.Cursor, seqs: Sequence[int]) -> None:
        before = self.conn.total_changes
        cur.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
        self._count -= self.conn.total_changes - before

    def _evict(self, cur: sqlite3.Cursor, n: int) -> None:
        before = self.conn.total_changes
        cur.execute(
            "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE kind = 'event'"
            " ORDER BY seq LIMIT ?)",
            (n,),
        )
        dropped = self.conn.total_changes - before
        self._count -= dropped
        self.dropped_full += dropped

    def checkpoint(self) -> tuple[int, int]:
        """Copy committed WAL pages into the database file; returns (wal pages, copied).

        PASSIVE never blocks the writer. Blocking I/O (fsync): call it via
        ``asyncio.to_thread``; it uses its own connection for that reason.
        """
        if self._ckpt_conn is None:
            path = self.conn.execute("PRAGMA database_list").fetchone()[2]
            if not path:
                return (0, 0)
            self._ckpt_conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        row = self._ckpt_conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(row[1]), int(row[2])

    def remove(self, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        with self._transaction() as cur:
            self._delete(cur, seqs)

    def pending(self, kind: str, *, limit: int) -> list[OutboxRow]:
        """Oldest rows of ``kind`` first (the backlog read once at start)."""
        return self.after(kind, 0, limit=limit)

    def after(self, kind: str, seq: int, *, limit: int) -> list[OutboxRow]:
        """Rows of ``kind`` with a sequence number above ``seq``, oldest first (cursor reads)."""
        rows = self.conn.execute(
            "SELECT seq, id, kind, topic, payload, expires_at, attempts FROM outbox"
            " WHERE kind = ? AND seq > ? ORDER BY seq LIMIT ?",
            (kind, seq, limit),
        ).fetchall()
        return [OutboxRow(*r) for r in rows]

    def drop_expired(self, now: float | None = None) -> int:
        """Delete offers whose validity has passed; they must never reach a phone."""
        now = time.time() if now is None else now
        before = self.conn.total_changes
        self.conn.execute(
            "DELETE FROM outbox WHERE kind = 'offer' AND expires_at IS NOT NULL AND expires_at <= ?",
            (now,),
        )
        n = self.conn.total_changes - before
        self._count -= n
        self.dropped_expired += n
        return n

    def forget(self, inbox: str, offers_topic: str) -> tuple[int, int]:
        """An erased shopper (gateway.consent): their offers (on ``offers_topic``) not yet
        sent are deleted, and events about them lose the pseudonym but still go to HQ,
        which counts them anonymously. Returns ``(offers deleted, events anonymised)``."""
        needle = b'"inbox":' + msgspec.json.encode(inbox)
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            before = self.conn.total_changes
            cur.execute("DELETE FROM outbox WHERE kind = 'offer' AND topic = ?", (offers_topic,))
            deleted = self.conn.total_changes - before
            rows = cur.execute("SELECT seq, payload FROM outbox WHERE kind = 'event'"
                               " AND instr(payload, ?) > 0", (needle,)).fetchall()
            changed = []
            for seq, payload in rows:
                body = msgspec.json.decode(bytes(payload))
                if isinstance(body, dict) and body.get("inbox") == inbox:
                    del body["inbox"]
                    changed.append((msgspec.json.encode(body), seq))
            cur.executemany("UPDATE outbox SET payload = ? WHERE seq = ?", changed)
            cur.execute("COMMIT")
        except BaseException:
            self._abort(self._count)
            raise
        self._count -= deleted
        return deleted, len(changed)

    def purge_events_before(self, cutoff: float) -> int:
        """Delete events made before ``cutoff`` that were never sent (gateway.retention)."""
        before = self.conn.total_changes
        self.conn.execute("DELETE FROM outbox WHERE kind = 'event' AND created_at < ?", (cutoff,))
        n = self.conn.total_changes - before
        self._count -= n
        return n
