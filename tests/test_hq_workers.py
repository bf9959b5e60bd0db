"""Several HQ workers on one PostgreSQL database and one broker (docs/architecture.md#several-hq-workers).

The leader lock itself (two real connections to the real server), SQLite's one-worker
rule, and real ``aislecast hq serve`` processes: a SIGKILLed leader is replaced and the
new leader publishes the next bundle; a worker SIGKILLed mid-ingest loses no event and
stores none twice. PostgreSQL tests are skipped with the reason when the server is absent.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from aislecast.apps.cli import main
from aislecast.kernel.broker import MosquittoProcess, free_port
from aislecast.kernel.mqtt import MqttLink, MqttSettings
from aislecast.kernel.schema import Store
from benchmarks.hq_workers import SimGateway, WorkerPool, events
from hq.db import HqDb
from hq.keyring import Keyring
from hq.leader import Election, LeaderStats, PgLeaderLock, WorkerRefused, claim_sqlite
from hq.server import HqServer
from hq.service import HqService
from hq.shards import BrokerShards
from hq.tasks import KeyWatcher
from tests.conftest_pg import pg_schema

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def pg_url() -> Iterator[str]:
    with pg_schema() as url:
        HqDb(url).close()  # migrated, as a worker would find it
        yield url


async def test_one_lock_holder_per_schema_and_a_closed_session_frees_it(pg_url: str) -> None:
    a, b = PgLeaderLock(pg_url, LeaderStats()), PgLeaderLock(pg_url, LeaderStats())
    try:
        assert await a.try_acquire()
        assert not await b.try_acquire()  # the same schema: one holder
        assert await a.try_acquire()  # re-entrant for its own session
        with pg_schema() as other:  # another deployment (schema) has a lock of its own
            c = PgLeaderLock(other, LeaderStats())
            try:
                assert await c.try_acquire()
            finally:
                await c.close()
        await a.close()  # the session ends: the server releases the lock (soon after)
        while not await b.try_acquire():
            await asyncio.sleep(0.02)
        assert not await a.try_acquire()
    finally:
        await a.close()
        await b.close()


async def test_election_runs_duties_only_while_leading(pg_url: str) -> None:
    holder = PgLeaderLock(pg_url, LeaderStats())
    assert await holder.try_acquire()
    runs: list[bool] = []
    started = asyncio.Event()

    async def duties(took_over: bool) -> None:
        runs.append(took_over)
        started.set()
        await asyncio.Event().wait()

    election = Election(PgLeaderLock(pg_url, LeaderStats()), duties, every_s=0.05)
    task = asyncio.create_task(election.run())
    try:
        while election.stats.tries < 2:
            await asyncio.sleep(0.02)
        assert runs == [] and election.role == "follower" and election.stats.leader == 0
        await holder.close()  # the leader's session ends
        await started.wait()
        assert runs == [True] and election.role == "leader"  # it had waited: a takeover
        assert election.stats.elected == 1 and election.stats.leader == 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await holder.close()
    assert election.role == "follower" and election.stats.leader == 0


async def test_a_broken_lock_connection_ends_the_duties_until_taken_again(pg_url: str) -> None:
    stats = LeaderStats()
    lock = PgLeaderLock(pg_url, stats)
    duties_started, duties_ended = asyncio.Event(), asyncio.Event()

    async def duties(_took_over: bool) -> None:
        duties_started.set()
        try:
            await asyncio.Event().wait()
        finally:
            duties_ended.set()

    election = Election(lock, duties, every_s=0.05, stats=stats)
    task = asyncio.create_task(election.run())
    try:
        await duties_started.wait()
        pid = lock.backend_pid
        assert pid is not None and election.role == "leader"
        duties_started.clear()
        admin = await asyncio.to_thread(HqDb, pg_url, create_schema=False)
        try:  # the database drops the leader's session (a failover, a network cut)
            await asyncio.to_thread(admin.query, "SELECT pg_terminate_backend(?)", (pid,))
        finally:
            await asyncio.to_thread(admin.close)
        await duties_ended.wait()  # its duties stop: no longer the leader
        assert election.stats.lost == 1
        await duties_started.wait()  # nobody else holds it: taken again on a new session
        assert election.stats.elected == 2 and lock.backend_pid not in {None, pid}
        assert election.stats.lock_errors >= 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_a_second_worker_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "hq.sqlite"
    first = claim_sqlite(str(db))
    assert first is not None
    try:
        with pytest.raises(WorkerRefused, match="SQLite takes one worker"):
            claim_sqlite(str(db))
        run = subprocess.run(  # a process of its own: `hq serve` sets up logging globally
            [sys.executable, "-m", "aislecast", "hq", "serve", "--db", f"sqlite:///{db}",
             "--key", str(tmp_path / "k.pem"), "--http-port", str(free_port()),
             "--broker", "127.0.0.1:9"], capture_output=True, text=True, check=False)
        err = run.stderr.strip().splitlines()
        assert run.returncode == 2, run.stderr
        assert len(err) == 1 and "already serves the SQLite database" in err[0], err
    finally:
        first.close()
    again = claim_sqlite(str(db))  # released with its file
    assert again is not None
    again.close()
    assert claim_sqlite(":memory:") is None


async def test_a_sqlite_worker_leads_and_says_so(broker: MosquittoProcess, tmp_path: Path) -> None:
    async with HqServer(db_url=f"sqlite:///{tmp_path}/hq.sqlite", key_path=tmp_path / "k.pem",
                        mqtt=MqttSettings(port=broker.port), http_port=0) as hq:
        await hq.election.leading.wait()
        async with httpx.AsyncClient() as client:
            health = (await client.get(f"http://127.0.0.1:{hq.http_port}/health")).json()
        assert health["role"] == "leader" and health["status"] == "ok"
        assert b"aislecast_hq_leader_leader 1.0" in hq.metrics.exposition()
        with pytest.raises(WorkerRefused):  # a second worker on the same file, same process
            async with HqServer(db_url=f"sqlite:///{tmp_path}/hq.sqlite", key_path=tmp_path / "k.pem",
                                mqtt=MqttSettings(port=broker.port), http_port=0):
                pass


@contextlib.asynccontextmanager
async def _pool(tmp_path: Path, pg_url: str, n: int) -> AsyncIterator[WorkerPool]:
    async with WorkerPool(tmp_path / "pool", pg_url) as pool:
        for i in range(1, n + 1):  # one after the other: the first creates the signing key
            await pool.start(str(i))
        yield pool


async def test_killed_leader_is_replaced_and_the_new_one_publishes(tmp_path: Path,
                                                                    pg_url: str) -> None:
    async with _pool(tmp_path, pg_url, 2) as pool:
        leader = await pool.leader()
        assert leader.name == "1" and await pool.roles() == {"1": "leader", "2": "follower"}
        async with pool.bundles() as bundles:
            await pool.kill(leader)
            _, version = await bundles.get()  # the takeover round's bundle
        assert await pool.roles() == {"2": "leader"}
        assert version >= 1
        assert "hq worker is the leader worker=2" in pool.workers["2"].log_tail()
        # the killed worker comes back under its stable name and follows
        await pool.start("1")
        assert (await pool.leader()).name == "2"
        assert await pool.roles() == {"1": "follower", "2": "leader"}


async def test_a_worker_killed_mid_ingest_loses_no_event(tmp_path: Path, pg_url: str) -> None:
    total = 20_000
    async with _pool(tmp_path, pg_url, 3) as pool:
        gw = SimGateway(pool, batch=100, inflight=16, resend_s=3.0)
        sent = events(total, "k")
        send = asyncio.create_task(gw.send(sent, "k"))
        while len(gw.acked) < 20 and not send.done():
            await asyncio.sleep(0.02)
        acked_at_kill = len(gw.acked)
        await pool.kill(pool.workers["3"])
        await send
        assert acked_at_kill < total // 100, "the load ended before the kill: make it bigger"
        assert len(gw.acked) == total // 100
        db = HqDb(pg_url, create_schema=False)
        try:
            stored = {r[0] for r in db.query("SELECT id FROM events WHERE id LIKE 'k-%'")}
            assert db.one("SELECT count(*) FROM events") == (total,)
        finally:
            db.close()
        assert stored == {e.id for e in sent}
        print(f"\nkilled hq.3 after {acked_at_kill} of {total // 100} batches; "
              f"{gw.resent} resends; all {total} events stored once")


async def test_only_the_leader_republishes_after_a_keyring_change(broker: MosquittoProcess,
                                                                   tmp_path: Path) -> None:
    key = tmp_path / "hq-signing.pem"
    db = await asyncio.to_thread(HqDb, f"sqlite:///{tmp_path}/hq.sqlite")
    ring = await asyncio.to_thread(Keyring.load, key)
    service = HqService(db, await asyncio.to_thread(ring.signer))
    service.upsert_store(Store("s1", "S1", tz="Europe/Berlin"))
    try:
        async with MqttLink(MqttSettings(port=broker.port), client_id="t-keys") as link:
            await link.wait_connected(10)
            service.link = BrokerShards(link, {})
            follower = KeyWatcher(service, ring, 60.0, publish=lambda: False)
            leader = KeyWatcher(service, await asyncio.to_thread(Keyring.load, key), 60.0)
            assert await asyncio.to_thread(main, ["hq", "keys", "next", "--key", str(key)]) == 0
            assert await follower.check()  # the follower signs with the new ring ...
            assert len(service.signer.notices) == 2
            assert service.stats.bundles_published == 0  # ... and publishes nothing
            assert await leader.check()
            assert service.stats.bundles_published == 1  # the leader republishes the store
    finally:
        await asyncio.to_thread(db.close)
