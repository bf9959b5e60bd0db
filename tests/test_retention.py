"""Retention: HQ's events, till rows and leads past ``[retention] events_days`` (SQLite and
PostgreSQL), what it keeps on purpose, and the gateway's day-old history and cap ledger
(gateway.retention), with moved clocks."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
import pytest

from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.campaign import Campaign, Creative, Trigger
from aislecast.kernel.errors import ConfigError
from aislecast.kernel.mqtt import MqttSettings
from aislecast.kernel.redeem import mint_code
from aislecast.kernel.schema import Event
from gateway.caps import CapLedger, Charge
from gateway.outbox import Outbox
from gateway.retention import EDGE_HISTORY_S, EdgeRetention
from gateway.storage import open_db
from hq.config import load_hq_config
from hq.db import HqDb
from hq.ingest import Ingest
from hq.redeem_keys import RedeemKeys
from hq.retention import EVENTS_DAYS, KEPT, PURGES, EventRetention
from hq.server import HqServer
from hq.till import BasketLine, PurchaseFeed, TillDesk, TillRefused
from tests.fakeclock import FakeClock
from tests.harness import until

_DAY = 86_400.0


async def test_hq_deletes_events_past_the_window_in_batches(db: HqDb) -> None:
    clock = FakeClock()
    now = clock.time()
    ages = [500, 401, 400.5, 399, 10, 0]  # days
    Ingest(db).store_events([Event(id=f"e{i}", kind="zone_enter", ts=now - d * _DAY, store="s")
                             for i, d in enumerate(ages)])
    r = EventRetention(db, events_days=400, batch=2, clock=clock.time)
    assert await r.purge() == 3
    assert [i for (i,) in db.query("SELECT id FROM events ORDER BY id")] == ["e3", "e4", "e5"]
    assert r.stats.events_deleted == 3 and r.stats.runs == 1
    clock.advance(_DAY + 1)  # a day on: the 399-day-old event is past it now
    assert await r.purge() == 1
    assert db.one("SELECT count(*) FROM events") == (2,)
    assert await EventRetention(db, events_days=0, clock=clock.time).purge() == 0  # off


def _columns(db: HqDb, table: str) -> set[str]:
    if db.dialect == "postgresql":
        return {str(c) for (c,) in db.query("SELECT column_name FROM information_schema.columns"
                                             " WHERE table_schema = current_schema()"
                                             " AND table_name = ?", (table,))}
    return {str(r[1]) for r in db.query(f"PRAGMA table_info({table})")}


def test_every_table_with_a_time_is_purged_or_kept_on_purpose(db: HqDb) -> None:
    """A table that grows with time (a row per thing that happened, stamped ``ts``,
    ``at``, ``seen_at`` or ``hour``) is either purged or listed as kept, with a reason."""
    timed = {t for t in db.tables() if _columns(db, t) & {"ts", "at", "seen_at", "hour"}}
    purged = {p.table for p in PURGES}
    assert timed == purged | set(KEPT), timed ^ (purged | set(KEPT))
    assert not purged & set(KEPT)
    assert {"events", "code_refusals", "purchases", "redemptions", "leads"} <= purged
    assert {"consent_history", "erasures", "audit"} <= set(KEPT)


async def test_hq_purges_till_rows_and_leads_and_keeps_what_it_must(db: HqDb) -> None:
    clock = FakeClock()
    now, old = clock.time(), clock.time() - 401 * _DAY
    campaign = Campaign(id="c1", name="c1", stores=["s"], creatives=[Creative(id="a", title="A")],
                        trigger=Trigger(kind="enter", zones=["z"]))
    db.execute("INSERT INTO campaigns (id, body, status, updated_at) VALUES (?, ?, 'active', ?)",
               ("c1", msgspec.json.encode(campaign).decode(), now))
    keys = RedeemKeys(b"k" * 32)
    desk = TillDesk(db, lambda: keys)

    def code(serial: int, expires_at: float) -> str:
        return mint_code(keys.of("s"), store="s", campaign="c1", variant="a",
                         serial=bytes([serial]) * 5, expires_at=expires_at)

    spent, long_lived, fresh = code(1, old + 60), code(2, now + 30 * _DAY), code(3, now + 60)
    desk.redeem(spent, store="s", till="t", txn="x1", now=old)
    desk.redeem(long_lived, store="s", till="t", txn="x2", now=old)  # still valid today
    desk.redeem(fresh, store="s", till="t", txn="x3", now=now - 60)
    for c, at in ((spent, old), (fresh, now - 60)):  # a copy tried elsewhere: `used`, stored
        with pytest.raises(TillRefused, match="used"):
            desk.redeem(c, store="s", till="t", txn="copy", now=at)
    line = [BasketLine(quantity=1, value_cents=250, product="p")]
    desk.purchases(PurchaseFeed(txn="old", lines=line, ts=old), store="s", till="t")
    desk.purchases(PurchaseFeed(txn="new", lines=line, ts=now - 60), store="s", till="t")
    for lid, ts in (("l-old", old), ("l-new", now - 60)):
        db.execute("INSERT INTO leads (id, ts, campaign, store, offer, inbox, fields)"
                   " VALUES (?, ?, 'c1', 's', 'o', 'i', '{}')", (lid, ts))
    # kept whatever their age: consent proof, erasure tombstones, the audit trail
    db.execute("INSERT INTO consent_history (id, inbox, purpose, granted, at, source)"
               " VALUES ('h', 'i', 'offers', 1, ?, 'app')", (old,))
    db.execute("INSERT INTO erasures (id, at, consent_changes, events) VALUES ('e', ?, 1, 1)",
               (old,))
    db.execute("INSERT INTO audit (id, ts, actor, action, object) VALUES ('a', ?, 'x', 'y', 'z')",
               (old,))

    r = EventRetention(db, events_days=400, batch=1, clock=clock.time)
    assert await r.purge() == 4
    assert r.stats.deleted == {"code_refusals": 1, "purchases": 1, "redemptions": 1, "leads": 1}
    assert db.query("SELECT txn FROM purchases") == [("new",)]
    assert db.query("SELECT id FROM leads") == [("l-new",)]
    assert db.query("SELECT ts FROM code_refusals") == [(now - 60,)]
    assert sorted(db.query("SELECT txn FROM redemptions")) == [("x2",), ("x3",)]
    for table in ("consent_history", "erasures", "audit"):
        assert db.one(f"SELECT count(*) FROM {table}") == (1,), table  # noqa: S608
    # the purged code is not redeemable again: refused as expired, not consumed twice
    with pytest.raises(TillRefused, match="expired"):
        desk.redeem(spent, store="s", till="t", txn="x9", now=now)
    with pytest.raises(TillRefused, match="used"):  # the kept one still refuses a copy
        desk.redeem(long_lived, store="s", till="t", txn="x9", now=now)
    assert db.one("SELECT count(*) FROM redemptions") == (2,)


def test_the_window_is_a_setting_with_a_default(tmp_path: Path) -> None:
    assert load_hq_config().retention.events_days == EVENTS_DAYS
    (tmp_path / "hq.toml").write_text("[retention]\nevents_days = 30\n", encoding="utf-8")
    assert load_hq_config(str(tmp_path / "hq.toml")).retention.events_days == 30
    (tmp_path / "bad.toml").write_text("[retention]\nevents_days = -1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="events_days"):
        load_hq_config(str(tmp_path / "bad.toml"))


def test_the_gateway_keeps_no_history_older_than_a_day(tmp_path: Path) -> None:
    clock = FakeClock()  # 2026-01-01 00:00 UTC
    conn = open_db(tmp_path / "gw.sqlite")
    outbox, ledger = Outbox(conn), CapLedger(conn, clock=clock.time)
    day1 = ledger.ps.day(clock.time())
    ledger.charge(Charge("a", "c1", "v", day1, clock.time(), True))
    ledger.flush()
    clock.advance(2 * _DAY)  # day 3: the key of day 1 is due to go, with a's charge
    day3 = ledger.ps.day(clock.time())
    outbox.add(events=[("old", "t", b'{"inbox":"a"}'), ("new", "t", b'{"inbox":"b"}')])
    conn.execute("UPDATE outbox SET created_at = ? WHERE id = 'old'", (clock.time() - 2 * _DAY,))
    conn.execute("UPDATE outbox SET created_at = ? WHERE id = 'new'", (clock.time() - 60,))
    conn.executemany("INSERT INTO visits (shopper, day, visit, last_seen, zoned)"
                     " VALUES (?, ?, ?, ?, 1)",
                     [("pa", day1, "v1", clock.time() - 2 * _DAY),
                      ("pb", day3, "v2", clock.time() - 60)])
    assert conn.execute("SELECT count(*) FROM cap_charges").fetchone() == (1,)  # not yet
    retention = EdgeRetention(conn, outbox, ledger)
    assert retention.tick(clock.time()) is True  # the first tick runs it (no decision needed)
    assert ledger.ps.today == day3 and day1 not in ledger.ps.days()
    ledger.charge(Charge("b", "c1", "v", day3, clock.time(), True))
    ledger.flush()
    assert [r[0] for r in conn.execute("SELECT id FROM outbox")] == ["new"] and len(outbox) == 1
    assert [r[0] for r in conn.execute("SELECT shopper FROM visits")] == ["pb"]
    assert [r[0] for r in conn.execute("SELECT day FROM cap_charges")] == [day3]
    assert (retention.events_purged, retention.visits_purged, retention.charges_purged) == (1, 1, 1)
    assert len(ledger.by_day) == 1  # memory forgot what the file forgot
    assert ledger.lifetime_count("a", "c1") == 1  # a count without a time stays
    assert retention.tick(clock.time() + 1) is False  # not due again yet
    clock.advance(retention.every_s)
    assert retention.tick(clock.time()) is True and retention.runs == 2
    assert EDGE_HISTORY_S == _DAY
    conn.close()


async def test_the_leader_runs_retention_as_a_named_task(broker: MosquittoProcess,
                                                         tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/hq.sqlite"
    db = HqDb(url)
    now = time.time()
    Ingest(db).store_events([Event(id="old", kind="zone_enter", ts=now - 3 * _DAY, store="s"),
                             Event(id="new", kind="zone_enter", ts=now - 60, store="s")])
    db.close()
    async with HqServer(db_url=url, key_path=tmp_path / "hq.pem", http_port=0,
                        mqtt=MqttSettings(port=broker.port), retention_days=2) as hq:
        await until(lambda: hq.retention is not None and hq.retention.stats.runs >= 1, timeout=30)
        assert any(t.get_name() == "hq-retention" for t in asyncio.all_tasks())
        assert hq.db.query("SELECT id FROM events") == [("new",)]
