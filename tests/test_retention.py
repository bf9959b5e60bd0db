"""Retention: HQ's events past ``[retention] events_days`` (SQLite and PostgreSQL), and the
gateway's day-old history and cap ledger (gateway.retention), with moved clocks."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.errors import ConfigError
from aislecast.kernel.mqtt import MqttSettings
from aislecast.kernel.schema import Event
from gateway.caps import CapLedger, Charge
from gateway.outbox import Outbox
from gateway.retention import EDGE_HISTORY_S, EdgeRetention
from gateway.storage import open_db
from hq.config import load_hq_config
from hq.db import HqDb
from hq.ingest import Ingest
from hq.retention import EVENTS_DAYS, EventRetention
from hq.server import HqServer
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
