"""Which HQ worker leads: one publishes the periodic bundles and trains the model.

Several HQ workers may share one PostgreSQL database and one broker: all of them
ingest (the broker's shared subscription spreads the batches), serve HTTP and the
console; exactly one, the leader, runs the *duties* (:class:`hq.server.HqServer`
passes them in): the takeover round (train, then a fresh bundle for every store),
the bundle republisher, the learner and the keyring watcher's republish.

The leader is whoever holds a PostgreSQL session-level advisory lock
(``pg_try_advisory_lock``) on a connection of its own (:class:`PgLeaderLock`). The
lock lives as long as that session: a worker that dies, or whose connection breaks,
loses it at once on the server's side and another worker's next try takes it. Each
worker tries every ``every_s``, and the leader checks its connection as often; a
failed check ends its duties (leadership lost) before it tries again. Between a
leader's connection breaking and it noticing, the new leader may already publish:
at most ``every_s`` of two publishers, which is harmless (bundle versions come from
one atomic counter in the database, and a gateway applies the newest).

The lock key is two integers: :data:`LOCK_CLASS` and a hash of the connection's
current schema, so HQ deployments in separate schemas of one database never contend.

On SQLite only one worker can use the database file: :func:`claim_sqlite` takes an
exclusive ``flock`` on ``<file>.worker-lock`` for the process's lifetime (a second
worker is refused with :class:`WorkerRefused`) and that worker always leads
(:class:`SoleLeaderLock`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final, Protocol

from aislecast.kernel.counters import count, gauge
from aislecast.kernel.logs import get_logger

__all__ = ["LEADER_EVERY_S", "LOCK_CLASS", "Election", "LeaderLock", "LeaderStats",
           "PgLeaderLock", "SoleLeaderLock", "WorkerRefused", "claim_sqlite"]

if TYPE_CHECKING:
    import psycopg

log = get_logger(__name__)

# How often a follower tries the lock and the leader checks its connection: a dead
# leader's duties resume on another worker within about this (plus the takeover round).
LEADER_EVERY_S: Final = 2.0
# The advisory lock's first key ("AC" for aislecast); the second is the schema's hash.
LOCK_CLASS: Final = 0x4143
_TRY: Final = "SELECT pg_try_advisory_lock(%s, hashtext(current_schema()))"
_KEEPALIVES: Final = ("SET tcp_keepalives_idle = 5", "SET tcp_keepalives_interval = 2",
                      "SET tcp_keepalives_count = 2")


class WorkerRefused(Exception):
    """A second HQ worker on a database that takes one (a SQLite file)."""

    def __init__(self, path: str, holder: str) -> None:
        super().__init__(path, holder)
        self.path = path
        self.holder = holder

    def __str__(self) -> str:
        return (f"another HQ worker ({self.holder}) already serves the SQLite database {self.path}; "
                "SQLite takes one worker: stop it, or use PostgreSQL ([database] url) for several")


@dataclass(slots=True)
class LeaderStats:
    leader: int = gauge("1 while this worker is the leader (publishes bundles, trains), else 0")
    tries: int = count("lock tries (a follower tries every few seconds)")
    elected: int = count("times this worker became the leader")
    lost: int = count("times this worker lost the leadership (its lock connection broke)")
    lock_errors: int = count("lock tries or checks that failed on a database error")


class LeaderLock(Protocol):
    async def try_acquire(self) -> bool:
        """True if this worker holds the lock now (False: another does, or no database)."""

    async def hold(self, every_s: float) -> None:
        """Return when the lock is lost (checked every ``every_s``)."""

    async def close(self) -> None:
        """Release the lock (by closing its connection)."""


class PgLeaderLock:
    """The advisory lock on a dedicated autocommit connection to ``url``."""

    def __init__(self, url: str, stats: LeaderStats, *, connect_timeout_s: int = 5) -> None:
        self._url = url
        self._stats = stats
        self._timeout = connect_timeout_s
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._failing = False  # a database that stays down is logged once, then counted

    @property
    def backend_pid(self) -> int | None:
        """The server process of the lock's session (for ``pg_terminate_backend``)."""
        return None if self._conn is None or self._conn.closed else int(self._conn.info.backend_pid)

    async def try_acquire(self) -> bool:
        import psycopg  # noqa: PLC0415 - optional dependency (extra "postgres"), as in hq.db

        try:
            if self._conn is None or self._conn.closed:
                # keepalives on both ends: the server ends the session (and frees the
                # lock) ~10 s after the leader's host vanished, not after the default 2 h;
                # the leader's own check times out sooner, so it steps down first
                self._conn = await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True, connect_timeout=self._timeout,
                    keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=2)
                for setting in _KEEPALIVES:
                    await self._conn.execute(setting)
            cur = await self._conn.execute(_TRY, (LOCK_CLASS,))
            row = await cur.fetchone()
        except psycopg.Error as exc:
            self._stats.lock_errors += 1
            if not self._failing:
                log.warning("leader lock try failed; trying again", error=str(exc).strip()[:200])
            self._failing = True
            await self.close()
            return False
        self._failing = False
        return bool(row and row[0])

    async def hold(self, every_s: float) -> None:
        import psycopg  # noqa: PLC0415 - optional dependency (extra "postgres"), as in hq.db

        while True:
            await asyncio.sleep(every_s)
            conn = self._conn
            if conn is None or conn.closed:
                return
            try:
                async with asyncio.timeout(max(every_s, 1.0)):
                    await conn.execute("SELECT 1")
            except (psycopg.Error, TimeoutError) as exc:
                self._stats.lock_errors += 1
                log.warning("leader lock connection lost", error=str(exc).strip()[:200])
                await self.close()
                return

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # closing a broken connection may raise
                await conn.close()


class SoleLeaderLock:
    """SQLite's: the one worker (see :func:`claim_sqlite`) always leads."""

    async def try_acquire(self) -> bool:
        return True

    async def hold(self, every_s: float) -> None:
        await asyncio.Event().wait()

    async def close(self) -> None:
        return None


def claim_sqlite(db_path: str) -> IO[str] | None:
    """Lock ``<db_path>.worker-lock`` for this worker, or raise :class:`WorkerRefused`.
    Returns the open lock file (closing it releases the lock); None for ``:memory:``."""
    if db_path in {"", ":memory:"}:
        return None
    path = Path(db_path + ".worker-lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    f = path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown pid"
        f.close()
        raise WorkerRefused(db_path, holder) from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}\n")
    f.flush()
    return f


class Election:
    """``await Election(lock, duties).run()``: try the lock every ``every_s``; while it is
    held, run ``duties(took_over)`` (cancelled when the lock is lost, then tried again).
    ``took_over`` is True when this worker had to wait for the lock: another worker led."""

    def __init__(self, lock: LeaderLock, duties: Callable[[bool], Awaitable[None]], *,
                 every_s: float = LEADER_EVERY_S, stats: LeaderStats | None = None,
                 worker: str = "") -> None:
        self._lock = lock
        self._duties = duties
        self._every_s = every_s
        self._worker = worker
        self.stats = LeaderStats() if stats is None else stats
        self.leading = asyncio.Event()  # set while this worker leads
        self._waited = False

    @property
    def role(self) -> str:
        return "leader" if self.leading.is_set() else "follower"

    async def run(self) -> None:
        try:
            while True:
                self.stats.tries += 1
                if not await self._lock.try_acquire():
                    self._waited = True
                    await asyncio.sleep(self._every_s)
                    continue
                await self._lead()
        finally:
            self._step_down()
            await self._lock.close()

    async def _lead(self) -> None:
        self.leading.set()
        self.stats.leader = 1
        self.stats.elected += 1
        log.info("hq worker is the leader", worker=self._worker)
        async with asyncio.TaskGroup() as tg:
            duties = tg.create_task(self._run_duties(), name="hq-leader-duties")
            await self._lock.hold(self._every_s)
            self._step_down()  # from the moment the loss is seen, before the duties end
            self.stats.lost += 1
            log.warning("hq worker lost the leadership; following", worker=self._worker)
            duties.cancel()

    async def _run_duties(self) -> None:
        await self._duties(self._waited)

    def _step_down(self) -> None:
        self.leading.clear()
        self.stats.leader = 0
