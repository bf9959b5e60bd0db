"""hq.inbox_index: a shopper's events found through the bulk-written index and its tail,
and the index kept true by erasure, retention, late binding, reused and renumbered
rowids (VACUUM); only HQ's group writer, off the event loop, writes it in bulk."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiomqtt
import pytest

import hq.inbox_index
from aislecast.kernel import topics
from aislecast.kernel.schema import SCHEMA_VERSION, Event, EventBatch, encode
from hq.db import HqDb
from hq.inbox_index import of_inbox
from hq.ingest import Ingest
from hq.migrations import STEPS, migrate
from hq.retention import purge_events

T0 = 1_700_000_000.0
OLD = T0 - 86_400 * 500  # past any retention window used here


def _events(tag: str, n: int, *, t0: float = T0) -> list[Event]:
    return [Event(id=f"{tag}-{i}", kind=("zone_enter", "zone_dwell", "decision")[i % 3],  # type: ignore[arg-type]
                  ts=t0 + i, store="s1", gateway="g1",
                  inbox=None if i % 7 == 0 else f"in{i % 11}", zone="produce")
            for i in range(n)]


def _found(db: HqDb, inbox: str) -> list[str]:
    cond, params = of_inbox(db, inbox)
    return sorted(str(r[0]) for r in db.query(f"SELECT id FROM events WHERE {cond}", params))  # noqa: S608


def _truth(db: HqDb, inbox: str) -> list[str]:
    """The same by reading every row's own inbox (no index: a full scan on SQLite)."""
    return sorted(str(r[0]) for r in db.query("SELECT id FROM events WHERE inbox || '' = ?",
                                              (inbox,)))


INBOXES = tuple(f"in{k}" for k in range(11))


def _all_found(db: HqDb, inboxes: tuple[str, ...] = INBOXES) -> None:
    for inbox in inboxes:
        assert _found(db, inbox) == _truth(db, inbox), inbox


def _mark(db: HqDb) -> tuple[int, int]:
    """(upto, the highest rowid)."""
    ((upto,),) = db.query("SELECT upto FROM events_by_inbox_mark")
    ((top,),) = db.query("SELECT coalesce(max(rowid), 0) FROM events")
    return int(upto), int(top)


def _index_is_true(db: HqDb) -> None:
    """The mark names the event at ``upto``; every index row names an event of that
    inbox, and every event at or below ``upto`` with an inbox has its row."""
    trusted = db.one("SELECT m.upto = 0 OR (SELECT id FROM events WHERE rowid = m.upto)"
                     " IS m.upto_id FROM events_by_inbox_mark m")
    stale = db.one("SELECT count(*) FROM events_by_inbox b LEFT JOIN events e"
                   " ON e.rowid = b.event WHERE e.inbox IS NOT b.inbox")
    missing = db.one("SELECT count(*) FROM events e WHERE e.inbox IS NOT NULL"
                     " AND e.rowid <= (SELECT upto FROM events_by_inbox_mark) AND NOT EXISTS"
                     " (SELECT 1 FROM events_by_inbox b WHERE b.inbox = e.inbox"
                     " AND b.event = e.rowid)")
    assert (trusted, stale, missing) == ((1,), (0,), (0,))


def _sqlite(tmp_path: Path) -> HqDb:
    return HqDb(f"sqlite:///{tmp_path}/hq.sqlite")


@pytest.fixture
def small_tail(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(hq.inbox_index, "TAIL_MAX", 100)
    return 100


def test_a_shoppers_events_are_found_in_the_index_and_in_its_tail(db: HqDb,
                                                                  small_tail: int) -> None:
    ingest = Ingest(db)
    events = _events("a", 1000)
    for i in range(0, len(events), 64):  # groups as HQ's writer stores them: merges
        ingest.store_events(events[i:i + 64], index=True)
    ingest.store_events(_events("tail", 30), index=True)
    _all_found(db)
    assert _found(db, "in3") != [] and _found(db, "nobody") == []
    if db.dialect == "sqlite":
        upto, top = _mark(db)
        assert top - small_tail - 64 < upto < top  # merged, a tail left
        _index_is_true(db)


def test_a_lookup_reads_the_index_and_the_tail_not_the_whole_log(tmp_path: Path) -> None:
    db = _sqlite(tmp_path)
    cond, params = of_inbox(db, "in1")
    plan = " | ".join(str(r[-1]) for r in db.query(
        f"EXPLAIN QUERY PLAN SELECT body FROM events WHERE {cond} ORDER BY ts, id", params))  # noqa: S608
    assert "SEARCH events_by_inbox USING PRIMARY KEY (inbox=?)" in plan, plan
    assert "SEARCH events USING INTEGER PRIMARY KEY (rowid>?)" in plan, plan  # the tail
    assert "SEARCH events USING INTEGER PRIMARY KEY (rowid=?)" in plan, plan
    assert "SCAN events " not in f"{plan} ", plan  # (SCAN m: the mark's one row)
    db.close()


def test_erasure_retention_and_late_binding_keep_the_index_true(tmp_path: Path,
                                                                small_tail: int) -> None:
    db = _sqlite(tmp_path)
    ingest = Ingest(db)
    ingest.store_events(_events("old", 300, t0=OLD), index=True)
    ingest.store_events(_events("new", 150), index=True)
    ingest.store_events(_events("newer", 60), index=True)  # under the limit: a tail
    upto, top = _mark(db)
    assert (upto, top) == (450, 510)
    # erasure takes the inbox off a shopper's events (hq.rights), below and above upto
    db.execute("UPDATE events SET inbox = NULL WHERE inbox || '' = 'in3'")
    assert _found(db, "in3") == [] and _truth(db, "in3") == []
    # the till binds an event stored without a shopper to one, below and above upto
    below = db.one("SELECT id FROM events WHERE inbox IS NULL AND rowid BETWEEN 301 AND 449"
                   " ORDER BY rowid")
    above = db.one("SELECT id FROM events WHERE inbox IS NULL AND rowid > 450 ORDER BY rowid")
    assert below is not None and above is not None
    db.execute("UPDATE events SET inbox = 'late' WHERE id IN (?, ?)", (below[0], above[0]))
    assert _found(db, "late") == sorted([below[0], above[0]])
    _index_is_true(db)
    # retention deletes the old events: their index rows go with them
    while purge_events(db, T0 - 86_400 * 400):
        pass
    assert db.one("SELECT count(*) FROM events WHERE id LIKE 'old-%'") == (0,)
    _all_found(db, ("in1", "in5", "late"))
    _index_is_true(db)
    ingest.store_events(_events("more", 100), index=True)  # past the limit: merged
    assert _mark(db)[0] == _mark(db)[1]
    _all_found(db, ("in1", "in5", "late", "in3"))
    _index_is_true(db)
    db.close()


def test_rowids_handed_out_again_after_the_newest_events_go(tmp_path: Path,
                                                           small_tail: int) -> None:
    """Retention on an idle database deletes every event: the next rowids are 1, 2, ...
    again, below the old ``upto``; the index is not trusted meanwhile (lookups read every
    row), then rebuilt by the next group writer."""
    db = _sqlite(tmp_path)
    ingest = Ingest(db)
    ingest.store_events(_events("gone", 400, t0=OLD), index=True)
    assert _mark(db) == (400, 400)
    while purge_events(db, T0):
        pass
    assert db.one("SELECT count(*) FROM events_by_inbox") == (0,)
    ingest.store_events(_events("b", 50))  # stored on the loop: no index work
    assert _mark(db) == (400, 50)
    _all_found(db)
    assert _found(db, "in2") != []
    ingest.store_events(_events("c", 200), index=True)
    assert _mark(db) == (250, 250)
    _all_found(db)
    _index_is_true(db)
    db.close()


def test_a_restore_renumbering_the_rowids_never_loses_a_shoppers_event(
        tmp_path: Path, small_tail: int) -> None:
    """``events`` has no INTEGER PRIMARY KEY: a dump and restore (``.dump``, iterdump)
    numbers its rows afresh, without the gaps retention left (VACUUM may too). Lookups
    stay exact (the mark no longer names its event, so every row is read), and the next
    group writer rebuilds the index."""
    db = _sqlite(tmp_path)
    ingest = Ingest(db)
    ingest.store_events(_events("old", 100, t0=OLD), index=True)
    ingest.store_events(_events("new", 300), index=True)
    assert _mark(db) == (400, 400)
    while purge_events(db, T0 - 86_400 * 400):
        pass
    dump = "\n".join(db._conn.iterdump())
    db.close()
    restored = sqlite3.connect(tmp_path / "restored.sqlite")
    restored.executescript(dump)
    restored.close()
    db = HqDb(f"sqlite:///{tmp_path}/restored.sqlite")
    assert db.one("SELECT rowid FROM events WHERE id = 'new-0'") == (1,)  # was 101
    assert db.one("SELECT (SELECT id FROM events WHERE rowid = m.upto) IS m.upto_id"
                  " FROM events_by_inbox_mark m") == (0,)  # the mark says: not to be trusted
    _all_found(db)
    ingest = Ingest(db)
    ingest.store_events(_events("after", 5), index=True)  # under the limit, yet rebuilt
    _index_is_true(db)
    _all_found(db)
    ingest.store_events(_events("after2", 120), index=True)
    upto, top = _mark(db)
    assert upto == top == 425
    _all_found(db)
    _index_is_true(db)
    db.close()


def _msg(batch: EventBatch) -> aiomqtt.Message:
    return aiomqtt.Message(topics.gateway_events(batch.store, batch.gateway), encode(batch),
                           qos=1, retain=False, mid=1, properties=None)


async def test_only_the_group_writer_writes_the_index(tmp_path: Path, small_tail: int) -> None:
    """Events stored on the event loop (feedback, a till's redemption) leave the index to
    HQ's MQTT groups, whose transaction runs in a worker thread."""
    db = _sqlite(tmp_path)
    ingest = Ingest(db)
    await ingest.astore_events(_events("loop", 300))
    assert _mark(db) == (0, 300)
    _all_found(db)
    batch = EventBatch(SCHEMA_VERSION, "s1", "g1", _events("mqtt", 10), batch="b1")
    assert (await ingest.on_events_many([_msg(batch), _msg(batch)]))[0] is not None
    assert _mark(db) == (310, 310)
    _index_is_true(db)
    db.close()


def test_upgrading_indexes_the_events_stored_before(tmp_path: Path) -> None:
    """A database from before step 18 keeps its shoppers' events findable: the step fills
    the index from them and drops the per-event index."""
    url = f"sqlite:///{tmp_path}/hq.sqlite"
    step = STEPS.index(hq.inbox_index.m0018_inbox_index)
    old = HqDb(url, create_schema=False)
    migrate(old, STEPS[:step])
    for i, e in enumerate(_events("x", 60)):
        old.execute("INSERT INTO events (id, kind, ts, store, inbox, body) VALUES (?, ?, ?, ?, ?, ?)",
                    (e.id, e.kind, e.ts + i, e.store, e.inbox, "{}"))
    old.close()
    db = HqDb(url)  # migrates
    assert _mark(db) == (60, 60)
    assert db.one("SELECT count(*) FROM sqlite_master WHERE name = 'events_inbox'") == (0,)
    _all_found(db, ("in1", "in4"))
    _index_is_true(db)
    db.close()
