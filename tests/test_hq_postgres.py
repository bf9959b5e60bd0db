"""HQ on both backends: every test here runs on SQLite and on the real PostgreSQL server
(a fresh schema per test; skipped with the reason when the server is absent)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import httpx
import msgspec
import pytest

from aislecast.kernel import topics
from aislecast.kernel.broker import MosquittoProcess, free_port
from aislecast.kernel.campaign import Budget
from aislecast.kernel.mqtt import MqttSettings
from aislecast.kernel.schema import BatchAck, Event, EventBatch, Store, Zone, decode, encode
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from hq.analytics import CampaignStats, campaign_stats
from hq.api import create_app
from hq.campaigns import allocate_budgets
from hq.db import HqDb, translate
from hq.ingest import Ingest
from hq.learning import train
from hq.server import HqServer
from hq.service import HqService
from tests.conftest_pg import BACKENDS, hq_url, pg_schema
from tests.harness import bearer, enter_campaign, token_for
from tests.purchases import add_purchase


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with hq_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def db(db_url: str) -> Iterator[HqDb]:
    d = HqDb(db_url)
    yield d
    d.close()


def _service(db: HqDb, tmp_path: Path) -> HqService:
    svc = HqService(db, Signer(load_or_create_signing_key(tmp_path / "k.pem")))
    svc.upsert_store(Store("store-t", "T", tz="Europe/Berlin"))
    for z in ("entrance", "produce"):
        svc.upsert_zone("store-t", Zone(z, z.title()))
    return svc


def test_placeholders_translate_outside_quotes_only() -> None:
    assert translate("SELECT 1 WHERE a = ? AND b LIKE 'x-%' AND c = '?'") == (
        "SELECT 1 WHERE a = %s AND b LIKE 'x-%%' AND c = '?'")
    assert translate("SELECT a % ? FROM t") == "SELECT a %% %s FROM t"


def test_like_with_percent_and_placeholders(db: HqDb) -> None:
    db.execute("INSERT INTO shortlinks(code, url, campaign) VALUES (?, ?, ?)", ("a", "u", "flash-1"))
    db.execute("INSERT INTO shortlinks(code, url, campaign) VALUES (?, ?, ?)", ("b", "u", "x"))
    assert db.query("SELECT code FROM shortlinks WHERE campaign LIKE 'flash-%' AND url = ?",
                    ("u",)) == [("a",)]


def test_ingest_is_idempotent_by_event_id(db: HqDb) -> None:
    ing = Ingest(db)
    ev = [Event(id=f"e{i}", kind="zone_enter", ts=1.0 + i, store="s", gateway="g", inbox="i",
                zone="z") for i in range(50)]
    assert ing.store_events(ev) == 50
    assert ing.store_events([*ev[:10], Event(id="new", kind="zone_exit", ts=9, store="s")]) == 1
    assert ing.stats.events_ingested == 51 and ing.stats.duplicates == 10
    assert db.one("SELECT count(*) FROM events") == (51,)
    row = db.one("SELECT kind, ts, holdout, zone FROM events WHERE id = ?", ("e3",))
    assert row == ("zone_enter", 4.0, None, "z")


async def test_campaign_crud_and_validation_over_http(db: HqDb, tmp_path: Path) -> None:
    svc = _service(db, tmp_path)
    app = create_app(svc, Ingest(db))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hq",
                                 headers=bearer(token_for(app.state.service.db, "admin"))) as c:
        bad = msgspec.to_builtins(enter_campaign("attic")) | {"stores": ["store-t", "nowhere"]}
        r = await c.post("/api/campaigns", json=bad)
        assert r.status_code == 422
        assert any("nowhere" in d for d in r.json()["detail"])
        assert any("attic" in d for d in r.json()["detail"])
        good = msgspec.to_builtins(enter_campaign("produce", cid="c1"))
        assert (await c.post("/api/campaigns", json=good)).status_code == 201
        r = await c.put("/api/campaigns/c1", json=good | {"name": "renamed", "priority": 7})
        assert r.status_code == 200, r.text
        got = (await c.get("/api/campaigns/c1")).json()
        assert (got["name"], got["priority"]) == ("renamed", 7)
        assert [x["id"] for x in (await c.get("/api/campaigns")).json()] == ["c1"]
        assert (await c.get("/api/campaigns/none")).status_code == 404
        r = await c.put("/api/campaigns/c1", json=good | {"status": "paused"})
        assert r.json()["status"] == "paused" and svc.get_campaign("c1").status == "paused"


def _funnel_events() -> list[Event]:
    ev: list[Event] = []
    for i in range(120):
        inbox, held = f"i{i}", i % 4 == 0
        ev.append(Event(id=f"d{i}", kind="decision", ts=1.0, store="s", gateway="g", campaign="c",
                        inbox=inbox, reason="holdout" if held else "offer",
                        offer=None if held else f"o{i}", holdout=True if held else None))
        if held:
            continue
        ev += [Event(id=f"p{i}", kind="offer_published", ts=2, store="s", campaign="c",
                     offer=f"o{i}", inbox=inbox),
               Event(id=f"v{i}", kind="offer_delivered", ts=2, store="s", campaign="c",
                     offer=f"o{i}", inbox=inbox)]
        ev += [Event(id=f"k{i}", kind="offer_clicked", ts=3, store="s", campaign="c",
                     offer=f"o{i}", inbox=inbox)] if i % 5 == 0 else []
        ev += [Event(id=f"r{i}", kind="offer_redeemed", ts=3, store="s", campaign="c",
                     offer=f"o{i}", inbox=inbox)] if i % 3 == 0 else []
    ev.append(Event(id="x", kind="decision", ts=1, store="s", campaign="c", inbox="z",
                    reason="cap_per_visit"))
    return ev


async def test_analytics_give_the_same_numbers(db: HqDb) -> None:
    Ingest(db).store_events(_funnel_events())
    for i in range(0, 120, 3):  # the till: every third shopper buys, a quarter of them held out
        add_purchase(db, store="s", inbox=f"i{i}", ts=2.0, value_cents=300)
    [s] = campaign_stats(db)
    assert s.overall is not None
    assert (s.offered, s.holdout, s.impressions, s.deliveries, s.clicks) == (90, 30, 90, 90, 18)
    assert s.stopped == {"cap_per_visit": 1} and s.ctr == 0.2
    assert (s.treated, s.control) == (90, 30)
    assert (s.overall.converted_treated, s.overall.converted_control, s.lift_status) == (30, 10, "ok")
    assert s.lift is not None and s.lift_lo is not None and s.lift_hi is not None
    assert s.lift_lo < s.lift < s.lift_hi
    # the same aggregate off the event loop, on the second connection
    off: list[CampaignStats] = await db.offload(campaign_stats, "c")
    assert off == [s]


async def test_bundle_versions_increment(db: HqDb, tmp_path: Path) -> None:
    svc = _service(db, tmp_path)
    e = svc.enroll(["offers"], ["store-t"])
    versions = [svc.build_bundle("store-t").version for _ in range(3)]
    assert versions == [1, 2, 3]
    b = svc.build_bundle("store-t")
    assert b.version == 4 and [z.id for z in b.zones] == ["entrance", "produce"]
    assert any(e.inbox in t.tokens.values() for t in b.token_tables)
    svc.db.execute("UPDATE shoppers SET opted_out = 1 WHERE inbox = ?", (e.inbox,))
    assert svc.build_bundle("store-t").opt_outs == [e.inbox]


def test_budget_grants_and_learning_queries(db: HqDb, tmp_path: Path) -> None:
    svc = _service(db, tmp_path)
    c = msgspec.structs.replace(enter_campaign("produce", cid="c"),
                                budget=Budget("redemptions", 100), validity_s=10.0)
    svc.upsert_campaign(c)
    Ingest(db).store_events([msgspec.structs.replace(e, store="store-t", variant="a")
                             for e in _funnel_events()])
    assert allocate_budgets(svc, now=1000.0) == 1
    grants = svc.get_campaign("c").budget.grants
    assert grants["g"] > 0 and grants["*"] == 0
    model = train(svc, now=1000.0)
    assert model.samples == 90 and model.arms["c/a"].alpha > 1


def test_postgres_connection_dropped_by_server_is_reopened() -> None:
    import psycopg  # noqa: PLC0415

    with pg_schema() as url:
        db = HqDb(url)
        row = db.one("SELECT pg_backend_pid()")
        assert row is not None
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (row[0],))
        with pytest.raises(psycopg.OperationalError):
            db.query("SELECT 1")  # the statement that met the dropped link raises...
        assert db.query("SELECT 1") == [(1,)]  # ...and the next one runs on a new connection
        db.close()


async def _publish_batch(port: int, batch: EventBatch) -> BatchAck:
    ack_topic = topics.gateway_acks(batch.store, batch.gateway)
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"gw-{batch.batch}",
                              protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe(ack_topic, qos=1)
        await client.publish(topics.gateway_events(batch.store, batch.gateway), encode(batch), qos=1)
        async with asyncio.timeout(10):
            async for msg in client.messages:
                assert isinstance(msg.payload, bytes)
                return decode(msg.payload, BatchAck)
    raise AssertionError("no ack")


async def test_hq_server_ingests_mqtt_batches_once(broker: MosquittoProcess, db_url: str,
                                                   tmp_path: Path) -> None:
    async with HqServer(db_url=db_url, key_path=tmp_path / "hq.pem",
                        mqtt=MqttSettings(port=broker.port), http_port=0) as hq:
        # recent times: events dated 1970 are past the retention window, and the leader's
        # first retention round (it starts when the leader is elected) could delete the
        # first batch before the second arrives, which would then be stored again
        now = time.time()
        ev = [Event(id=f"b{i}", kind="zone_enter", ts=now + i, store="s1", gateway="g1")
              for i in range(20)]
        first = await _publish_batch(broker.port, EventBatch(1, "s1", "g1", ev, batch="one"))
        again = await _publish_batch(broker.port, EventBatch(1, "s1", "g1", ev, batch="two"))
        assert (first.batch, first.stored, again.batch, again.stored) == ("one", 20, "two", 0)
        assert hq.db.one("SELECT count(*) FROM events WHERE gateway = 'g1'") == (20,)
        assert hq.ingest.stats.duplicates == 20


def _admin_token(url: str) -> str:
    db = HqDb(url, create_schema=False)
    try:
        return token_for(db, "admin")
    finally:
        db.close()


async def test_cli_hq_serve_on_postgresql(broker: MosquittoProcess, tmp_path: Path) -> None:
    """`aislecast hq serve --db postgresql://...` comes up healthy and stops on SIGTERM."""
    with pg_schema() as url:
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aislecast", "hq", "serve", "--db", url, "--broker",
            f"127.0.0.1:{broker.port}", "--http-port", str(port), "--key", str(tmp_path / "k.pem"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env=os.environ | {"PYTHONUNBUFFERED": "1"})
        try:
            deadline = time.monotonic() + 60  # start-up liveness (20 s was missed at load 15)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
                while True:
                    try:
                        if (await c.get("/health")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert proc.returncode is None and time.monotonic() < deadline, "hq did not start"
                    await asyncio.sleep(0.2)
                admin = bearer(await asyncio.to_thread(_admin_token, url))
                r = await c.post("/api/stores", json={"id": "pg-store", "name": "PG", "tz": "UTC"},
                                 headers=admin)
                assert r.status_code == 201
            check = HqDb(url, create_schema=False)
            assert check.query("SELECT id FROM stores") == [("pg-store",)]
            check.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    out, _ = await proc.communicate()
            except TimeoutError:
                proc.kill()
                out, _ = await proc.communicate()
        assert proc.returncode == 0, out.decode()[-2000:]
