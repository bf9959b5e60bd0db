"""Hourly rollups kept at ingest: equal to a GROUP BY over the events stored, on SQLite
and PostgreSQL, over real MQTT batches; never a duplicate counted twice (resends, two
HQ workers racing); the migration's backfill gives the same numbers; taps and QR scans
reach the campaign funnel."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import msgspec
import pytest

from aislecast.kernel import topics
from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.mqtt import MqttSettings
from aislecast.kernel.schema import SCHEMA_VERSION, BatchAck, Event, EventBatch, decode, encode
from hq.analytics import campaign_stats
from hq.db import HqDb
from hq.funnel import BREAKDOWNS, FunnelRow, finish, funnel, tally
from hq.ingest import Ingest
from hq.migrations import STEPS, migrate
from hq.rollup_schema import ROLLUPS, hour_of
from hq.rollups import Filled, OfferMemo, backfill
from hq.server import HqServer
from hq.shortlink_store import DbShortLinkStore
from hq.shortlinks import ShortLink
from tests.conftest_pg import BACKENDS, hq_url

T0 = 1_764_000_000.0  # a whole hour


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with hq_url(request.param, tmp_path) as url:
        yield url


def _shop(tag: str, n: int, *, store: str = "s1", gateway: str = "g1") -> list[Event]:
    """What a gateway sends: zone events, decisions naming their trigger, the offers'
    publications, and the app's NFC taps and QR scans; over several hours."""
    out: list[Event] = []
    for i in range(n):
        ts = T0 + i * 97.0  # ~37 per hour
        inbox, zone = f"in{i % 13}", ("produce", "dairy", "bakery")[i % 3]
        camp, variant = f"c{i % 3}", "AB"[i % 2]
        trig = ("enter", "dwell", "tap", "scan")[i % 4]
        offer = f"{tag}-o{i}" if i % 5 else None
        out.append(Event(id=f"{tag}-z{i}", kind="zone_enter", ts=ts, store=store,
                         gateway=gateway, inbox=inbox, zone=zone))
        if trig in ("tap", "scan"):
            out.append(Event(id=f"{tag}-t{i}", kind="tap", ts=ts, store=store, gateway=gateway,
                             inbox=inbox, zone=zone, reason=trig,
                             detail={"source": "nfc" if trig == "tap" else "qr",
                                     "tag": f"T{i % 2}"}))
        out.append(Event(id=f"{tag}-d{i}", kind="decision", ts=ts + 0.1, store=store,
                         gateway=gateway, inbox=inbox, zone=zone, campaign=camp,
                         variant=variant, offer=offer,
                         reason="offer" if offer else ("holdout", "cap_per_visit")[i % 2],
                         holdout=True if offer is None and i % 2 == 0 else None,
                         detail={"trigger": trig}))
        if offer is not None:
            out.append(Event(id=f"{tag}-p{i}", kind="offer_published", ts=ts + 0.2,
                             store=store, gateway=gateway, inbox=inbox, zone=zone,
                             campaign=camp, variant=variant, offer=offer))
    return out


def _feedback(events: list[Event]) -> list[Event]:
    """Feedback as HQ stores it (hq.ingest: no variant, zone or trigger of its own)."""
    return [Event(id=f"fb-{e.offer}-{kind}", kind=kind, ts=e.ts + 30, store=e.store,  # type: ignore[arg-type]
                  campaign=e.campaign, offer=e.offer, inbox=e.inbox)
            for j, e in enumerate(x for x in events if x.kind == "offer_published")
            for kind in ("offer_delivered", "offer_opened", "offer_clicked")[:1 + j % 3]]


def _expected(db: HqDb) -> dict[str, Counter[tuple[object, ...]]]:
    """Each rollup recomputed here from the events table's columns."""
    rows = db.query("SELECT campaign, ts, store, zone, variant, trigger_kind, kind, reason"
                    " FROM events")
    out: dict[str, Counter[tuple[object, ...]]] = {}
    for r in ROLLUPS:
        c: Counter[tuple[object, ...]] = Counter()
        for campaign, ts, store, zone, variant, trig, kind, reason in rows:
            full = {"campaign": campaign or "", "hour": hour_of(ts), "store": store or "",
                    "zone": zone or "", "variant": variant or "", "trigger_kind": trig or ""}
            c[(*(full[d] for d in r.dims), kind, reason or "")] += 1
        out[r.table] = c
    return out


def _stored(db: HqDb) -> dict[str, Counter[tuple[object, ...]]]:
    out: dict[str, Counter[tuple[object, ...]]] = {}
    for r in ROLLUPS:
        got = db.query(f"SELECT {', '.join(r.key)}, n FROM {r.table}")  # noqa: S608
        out[r.table] = Counter({tuple(row[:-1]): int(row[-1]) for row in got})
    return out


async def _send(port: int, batches: list[EventBatch]) -> list[BatchAck]:
    """Publish ``batches`` as a gateway does (QoS 1) and collect HQ's acks."""
    acks: list[BatchAck] = []
    async with aiomqtt.Client("127.0.0.1", port, identifier="gw-rollups",
                              protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe(topics.gateway_acks("s1", "g1"), qos=1)
        for b in batches:
            await client.publish(topics.gateway_events("s1", "g1"), encode(b), qos=1)
        async with asyncio.timeout(30):
            async for msg in client.messages:
                assert isinstance(msg.payload, bytes)
                acks.append(decode(msg.payload, BatchAck))
                if len(acks) == len(batches):
                    break
    return acks


async def test_rollups_equal_a_group_by_over_events_after_mqtt_batches(
        broker: MosquittoProcess, db_url: str, tmp_path: Path) -> None:
    events = _shop("m", 120)
    chunks = [events[i:i + 50] for i in range(0, len(events), 50)]
    batches = [EventBatch(SCHEMA_VERSION, "s1", "g1", c, batch=f"b{i}") for i, c in enumerate(chunks)]
    # a resend of the first batch, and one overlapping the last two
    batches += [EventBatch(SCHEMA_VERSION, "s1", "g1", chunks[0], batch="again"),
                EventBatch(SCHEMA_VERSION, "s1", "g1", chunks[-2][-10:] + chunks[-1], batch="overlap")]
    async with HqServer(db_url=db_url, key_path=tmp_path / "hq.pem",
                        mqtt=MqttSettings(port=broker.port), http_port=0) as hq:
        acks = await _send(broker.port, batches)
        await hq.ingest.astore_events(_feedback(events))
        db = hq.db
        stored = {a.batch: a.stored for a in acks}
        assert stored["again"] == stored["overlap"] == 0
        assert sum(stored.values()) == len(events)
        assert db.one("SELECT count(*) FROM events") == (len(events) + len(_feedback(events)),)
        assert _stored(db) == _expected(db)
        # each level adds up to every event stored
        total = len(events) + len(_feedback(events))
        for r in ROLLUPS:
            assert db.one(f"SELECT sum(n) FROM {r.table}") == (total,)  # noqa: S608
        # an offer's publication and feedback carry its decision's trigger, variant, zone
        fb = db.one("SELECT trigger_kind, variant, zone FROM events WHERE id = 'fb-m-o1-offer_delivered'")
        assert fb == ("dwell", "B", "dairy")
        assert db.one("SELECT trigger_kind FROM events WHERE id = 'm-p3'") == ("scan",)
        # every breakdown, on this backend, adds up to the campaign's funnel
        [whole] = funnel(db, "c1")
        assert whole.decisions == 40 and whole.deliveries > 0
        for by in BREAKDOWNS:
            assert sum(p.clicks for p in funnel(db, "c1", by=by)) == whole.clicks, by
            parts = funnel(db, "c1", by=by, stores=["s1"], since=T0, until=T0 + 86400)
            assert sum(p.decisions for p in parts) == whole.decisions, by
            assert sum(p.deliveries for p in parts) == whole.deliveries, by


def test_two_workers_storing_the_same_batch_count_it_once(db_url: str) -> None:
    """Two HQ workers (two connections) racing to store one batch: one stores it."""
    first = HqDb(db_url)
    second = HqDb(db_url, create_schema=False)
    events = _shop("race", 200)
    got: list[int] = []
    start = threading.Barrier(2)

    def work(db: HqDb) -> None:
        start.wait()
        got.append(Ingest(db).store_events(events))

    threads = [threading.Thread(target=work, args=(d,)) for d in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == [0, len(events)]
    assert _stored(first) == _expected(first)
    assert first.one("SELECT sum(n) FROM rollup_totals") == (len(events),)
    second.close()
    first.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_backfill_of_an_upgraded_database_gives_the_ingest_numbers(backend: str,
                                                                   tmp_path: Path) -> None:
    """A database at version 4 (before rollups) with events in it: the migration fills
    the trigger column and every rollup, equal to what ingest keeps for the same events."""
    events = _shop("u", 90)
    fb = _feedback(events)
    (tmp_path / "old").mkdir()
    with hq_url(backend, tmp_path) as live_url, hq_url(backend, tmp_path / "old") as old_url:
        live = HqDb(live_url)
        ing = Ingest(live)
        ing.store_events(events)
        ing.store_events(fb)
        want = _stored(live)
        live.close()
        old = HqDb(old_url, create_schema=False)
        migrate(old, STEPS[:4])  # the schema of the releases before rollups
        old.executemany(
            "INSERT INTO events (id, kind, ts, store, gateway, campaign, variant, offer, inbox,"
            " zone, reason, holdout, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(e.id, e.kind, e.ts, e.store, e.gateway, e.campaign, e.variant, e.offer, e.inbox,
              e.zone, e.reason, None if e.holdout is None else int(e.holdout),
              msgspec.json.encode(e).decode()) for e in events + fb])
        assert migrate(old) == len(STEPS)
        assert _stored(old) == want
        backfill(old)  # repeatable (as a command would run it): the same numbers
        assert _stored(old) == want
        old.close()


async def test_qr_and_nfc_clicks_count_in_the_campaign_funnel(tmp_path: Path) -> None:
    db = HqDb(f"sqlite:///{tmp_path}/hq.sqlite")
    ing = Ingest(db)
    links = DbShortLinkStore(db, ing.store_events)
    shelf = ShortLink(code="Ab3xK9q", url="https://shop.example/p", tag_id="T0",
                      store_id="s1", campaign_id="c-label")
    assert links.add(shelf)
    for source in ("qr", "qr", "nfc", "other"):
        await links.record_click(shelf, ts=T0, user_agent=None, source=source)
    # the app's reports through the gateway: a scan naming the link's code, a tap of tag T0
    ing.store_events([
        Event(id="g-scan", kind="tap", ts=T0, store="s1", gateway="g1", inbox="i1",
              reason="scan", detail={"source": "qr", "tag": "T9", "code": "Ab3xK9q"}),
        Event(id="g-tap", kind="tap", ts=T0, store="s1", gateway="g1", inbox="i2",
              reason="tap", detail={"source": "nfc", "tag": "T0"}),
        Event(id="g-none", kind="tap", ts=T0, store="s1", gateway="g1", inbox="i3",
              reason="tap", detail={"source": "nfc", "tag": "T-unknown"})])
    [s] = campaign_stats(db, "c-label")
    assert (s.scans, s.taps) == (3, 3)  # 2 QR + 1 app scan; NFC, "other" and the app's tap
    assert db.one("SELECT campaign FROM events WHERE id = 'g-none'") == (None,)
    assert _stored(db) == _expected(db)
    db.close()


def test_trigger_comes_only_from_known_kinds() -> None:
    """A gateway's decision names its trigger in ``detail``; anything else is dropped."""
    db = HqDb(":memory:")
    Ingest(db).store_events([
        Event(id="a", kind="decision", ts=T0, store="s", campaign="c", reason="offer",
              detail={"trigger": "dwell"}),
        Event(id="b", kind="decision", ts=T0, store="s", campaign="c", reason="offer",
              detail={"trigger": "x" * 500}),
        Event(id="c", kind="zone_exit", ts=1e300, store="s", zone="z")])
    assert db.query("SELECT id, trigger_kind FROM events ORDER BY id") == [
        ("a", "dwell"), ("b", None), ("c", "exit")]
    assert db.one("SELECT hour FROM rollup_hours WHERE kind = 'zone_exit'") == (0,)
    # the publication comes in a later batch than its decision: the trigger is found
    ing = Ingest(db)
    ing.store_events([Event(id="d", kind="decision", ts=T0, store="s", campaign="c",
                            reason="offer", offer="o1", detail={"trigger": "tap"})])
    ing.store_events([Event(id="p", kind="offer_published", ts=T0, store="s", campaign="c",
                            variant="A", zone="z", offer="o1")])
    assert db.one("SELECT trigger_kind FROM events WHERE id = 'p'") == ("tap",)


def _msg(batch: EventBatch) -> aiomqtt.Message:
    return aiomqtt.Message(topics.gateway_events(batch.store, batch.gateway), encode(batch),
                           qos=1, retain=False, mid=1, properties=None)


async def test_batches_stored_as_one_group_ack_each_and_equal_a_group_by(db_url: str) -> None:
    """Batches waiting together share one transaction (hq.router's group handler): each
    ack counts its own new events, an event in two of them is the first one's, a
    redelivery counts 0, a bad payload in the group is dropped alone; the rollups stay a
    GROUP BY over the events, over several groups."""
    db = HqDb(db_url)
    ingest = Ingest(db)
    events = _shop("g", 90)
    chunks = [events[i:i + 40] for i in range(0, len(events), 40)]
    first = [EventBatch(SCHEMA_VERSION, "s1", "g1", chunks[0], batch="b0"),
             EventBatch(SCHEMA_VERSION, "s1", "g1", chunks[0][-5:] + chunks[1], batch="b1")]
    bad = aiomqtt.Message(topics.gateway_events("s1", "g1"), b"{not json", qos=1,
                          retain=False, mid=1, properties=None)
    replies = await ingest.on_events_many([_msg(first[0]), bad, _msg(first[1])])
    assert replies[1] is None and ingest.stats.bad_payloads == {"events": 1}
    acks = [decode(r.payload, BatchAck) for r in replies if r is not None]
    assert [(a.batch, a.stored) for a in acks] == [("b0", 40), ("b1", 40)]
    # a second group: a redelivery of b1 and the rest, twice over
    rest = EventBatch(SCHEMA_VERSION, "s1", "g1", [e for c in chunks[2:] for e in c], batch="b2")
    again = await ingest.on_events_many([_msg(first[1]), _msg(rest), _msg(rest)])
    got = [decode(r.payload, BatchAck).stored for r in again if r is not None]
    assert got == [0, len(events) - 80, 0]
    assert ingest.stats.events_ingested == len(events)
    assert ingest.stats.duplicates == 5 + 45 + (len(events) - 80)  # b1 holds 45
    await ingest.astore_events(_feedback(events))
    assert db.one("SELECT count(*) FROM events") == (len(events) + len(_feedback(events)),)
    assert _stored(db) == _expected(db)
    assert db.one("SELECT sum(n) FROM rollup_hours") == (len(events) + len(_feedback(events)),)
    db.close()


async def test_a_large_group_is_stored_whole_and_once(db_url: str) -> None:
    """A group of over 1,024 events (on SQLite: multi-row inserts of 1,024 rows and
    smaller, hq.db.HqDb.insert_rows) is stored once with its rollups; stored again
    beside a few new events, only those are new."""
    db = HqDb(db_url)
    ingest = Ingest(db)
    events, more = _shop("big", 400), _shop("more", 3)
    assert len(events) > 1024 + 256
    assert await ingest.astore_events(events) == len(events)
    assert await ingest.astore_events(events[:500] + more) == len(more)
    total = len(events) + len(more)
    assert db.one("SELECT count(*), count(DISTINCT id) FROM events") == (total, total)
    assert _stored(db) == _expected(db)
    assert db.one("SELECT sum(n) FROM rollup_hours") == (total,)
    db.close()


async def test_a_failing_group_is_stored_batch_by_batch(db_url: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """When a group's shared transaction fails, each batch is stored alone: the good
    ones acked and counted, the failing one not acked (its gateway resends it)."""
    db = HqDb(db_url)
    ingest = Ingest(db)
    good, poison = _shop("ok", 20), _shop("px", 5)
    real = ingest._store

    def store(evs: list[Event], index: bool = False) -> list[Event]:
        if any(e.id.startswith("px") for e in evs):
            raise RuntimeError("disk full")
        return real(evs, index)

    monkeypatch.setattr(ingest, "_store", store)
    replies = await ingest.on_events_many([
        _msg(EventBatch(SCHEMA_VERSION, "s1", "g1", good, batch="good")),
        _msg(EventBatch(SCHEMA_VERSION, "s1", "g1", poison, batch="poison"))])
    assert replies[1] is None and replies[0] is not None
    assert decode(replies[0].payload, BatchAck).stored == len(good)
    assert (ingest.stats.group_retries, ingest.stats.batch_errors) == (1, 1)
    assert db.one("SELECT count(*) FROM events") == (len(good),)
    assert _stored(db) == _expected(db)
    db.close()


def test_rollup_bench_builds_the_rollups_ingest_would(db_url: str) -> None:
    """benchmarks.bench_rollups stores its drawn events in bulk and rolls them up with
    the backfill's SQL: the tables equal the drawn counts, and a GROUP BY of the events."""
    from benchmarks.bench_rollups import _fill, draw  # noqa: PLC0415 - a benchmark's

    db = HqDb(db_url)
    stored = _fill(db, 3_000)
    drawn = draw(3_000)
    assert stored == sum(drawn.values()) >= 3_000
    assert _stored(db)["rollup_hours"] == Counter(drawn)
    assert _stored(db) == _expected(db)
    db.close()


def test_the_hourly_series_summed_in_sql_equals_a_tally_of_the_events(db_url: str) -> None:
    """``funnel(by="hour")`` sums each hour's counts and stop reasons in SQL: the same
    rows as tallying every event of that hour, with and without a store filter."""
    db = HqDb(db_url)
    kinds = [("decision", "offer"), ("decision", "holdout"), ("decision", "cap_per_visit"),
             ("decision", "quiet_hours"), ("offer_published", None), ("offer_delivered", None),
             ("offer_opened", None), ("offer_clicked", None), ("offer_redeemed", None),
             ("offer_dismissed", None), ("lead_submitted", None), ("tap", "tap"),
             ("tap", "scan"), ("zone_enter", None)]
    base = 1_764_000_000.0
    rng = random.Random(5)
    events = [Event(id=f"h{i}", kind=kind, ts=base + rng.randrange(30) * 3600 + rng.random(),  # type: ignore[arg-type]
                    store=f"s{rng.randrange(3)}", campaign="c1", zone=f"z{rng.randrange(2)}",
                    reason=reason, offer=f"o{i}")
              for i in range(900) for kind, reason in [kinds[rng.randrange(len(kinds))]]]
    events.append(Event(id="late", kind="decision", ts=base + 40 * 3600, store="s0",
                        campaign="c1", reason="offer"))  # an hour with no stop reason
    events.append(Event(id="odd", kind="decision", ts=base + 3600, store="s0", campaign="c1",
                        reason='a "quoted", odd:reason'))  # untrusted text, quoted by SQL
    Ingest(db).store_events(events)
    for stores in (None, ["s0", "s2"]):
        want: dict[int, FunnelRow] = {}
        for e in events:
            if stores is None or e.store in stores:
                tally(want.setdefault(hour_of(e.ts), FunnelRow()), e.kind, e.reason or "", 1)
        got = funnel(db, "c1", by="hour", stores=stores, since=base)
        assert [r.key for r in got] == [time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(h))
                                        for h in sorted(want)]
        for row, h in zip(got, sorted(want), strict=True):
            finish(want[h])
            want[h].key = row.key
            assert row == want[h], (stores, h)
        assert any(r.stopped for r in got) and not got[-1].stopped
    db.close()


def test_the_offer_memo_keeps_the_newest_offers_within_its_bound() -> None:
    """OfferMemo holds the newest ``size`` to ``1.25 * size`` offers (the oldest go a
    quarter at once), an offer stored again counts as new, and what it holds is found."""
    memo = OfferMemo(size=100)

    def filled(i: int) -> Filled:
        e = Event(id=f"d{i}", kind="decision", ts=T0 + i, store="s1", offer=f"o{i}")
        return Filled(e, "c", "A", "produce", "enter")

    for i in range(1000):
        memo.remember([filled(i)])
        if i == 950:
            memo.remember([filled(0)])  # o0 again: among the newest now
    held = memo.known([filled(i) for i in range(1000)])
    assert 100 <= len(held) <= 125
    assert {f"o{i}" for i in range(900, 1000)} <= set(held)  # the newest 100
    assert "o0" in held and "o1" not in held and "o499" not in held
    assert held["o999"] == ("enter", "A", "produce")
