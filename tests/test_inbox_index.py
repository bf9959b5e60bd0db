"""hq.inbox_index: a shopper's events found through the bulk-written index and its tail,
and the index kept true by erasure, retention, late binding and reused rowids."""

from __future__ import annotations

from pathlib import Path

import pytest

import hq.inbox_index
from aislecast.kernel.schema import Event
from hq.db import HqDb
from hq.inbox_index import of_inbox
from hq.ingest import Ingest
from hq.migrations import STEPS, migrate
from hq.retention import purge_events

T0 = 1_700_000_000.0


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


def _upto(db: HqDb) -> int:
    return int(db.one("SELECT upto FROM events_by_inbox_mark")[0])  # type: ignore[index]


def _index_is_true(db: HqDb) -> None:
    """Every index row names an event of that inbox, and every event at or below
    ``upto`` with an inbox has its row: nothing more, nothing less."""
    stale = db.one("SELECT count(*) FROM events_by_inbox b LEFT JOIN events e"
                   " ON e.rowid = b.event WHERE e.inbox IS NOT b.inbox")
    missing = db.one("SELECT count(*) FROM events e WHERE e.inbox IS NOT NULL"
                     " AND e.rowid <= (SELECT upto FROM events_by_inbox_mark) AND NOT EXISTS"
                     " (SELECT 1 FROM events_by_inbox b WHERE b.inbox = e.inbox"
                     " AND b.event = e.rowid)")
    assert (stale, missing) == ((0,), (0,))


@pytest.fixture
def small_tail(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(hq.inbox_index, "TAIL_MAX", 100)
    return 100


async def test_a_shoppers_events_are_found_in_the_index_and_in_its_tail(db: HqDb,
                                                                        small_tail: int) -> None:
    ingest = Ingest(db)
    events = _events("a", 1000)
    for i in range(0, len(events), 64):  # groups as ingest makes them: merges now and then
        await ingest.astore_events(events[i:i + 64])
    await ingest.astore_events(_events("tail", 30))
    events += _events("tail", 30)
    for inbox in (f"in{k}" for k in range(11)):
        assert _found(db, inbox) == _truth(db, inbox) != []
    assert _found(db, "nobody") == []
    if db.dialect == "sqlite":
        upto = _upto(db)
        assert len(events) - small_tail - 64 < upto < len(events)  # merged, a tail left
        assert db.one("SELECT count(*) FROM events WHERE rowid > ?", (upto,))[0] > 0  # type: ignore[index]
        _index_is_true(db)


def test_a_lookup_reads_the_index_and_the_tail_not_the_whole_log(tmp_path: Path) -> None:
    db = HqDb(f"sqlite:///{tmp_path}/hq.sqlite")
    cond, params = of_inbox(db, "in1")
    plan = " | ".join(str(r[-1]) for r in db.query(
        f"EXPLAIN QUERY PLAN SELECT body FROM events WHERE {cond} ORDER BY ts, id", params))  # noqa: S608
    assert "SEARCH events_by_inbox USING PRIMARY KEY (inbox=?)" in plan, plan
    assert "SEARCH events USING INTEGER PRIMARY KEY (rowid>?)" in plan, plan  # the tail
    assert "SEARCH events USING INTEGER PRIMARY KEY (rowid=?)" in plan, plan
    assert "SCAN events " not in f"{plan} ", plan  # (SCAN events_by_inbox_mark: one row)
    db.close()


async def test_erasure_retention_and_late_binding_keep_the_index_true(tmp_path: Path,
                                                                      small_tail: int) -> None:
    db = HqDb(f"sqlite:///{tmp_path}/hq.sqlite")
    ingest = Ingest(db)
    await ingest.astore_events(_events("old", 300, t0=T0 - 86_400 * 500))
    await ingest.astore_events(_events("new", 300))
    upto = _upto(db)
    assert upto >= 300  # the old events are in the index
    # erasure takes the inbox off a shopper's events (hq.rights)
    db.execute("UPDATE events SET inbox = NULL WHERE inbox || '' = 'in3'")
    assert _found(db, "in3") == [] and _truth(db, "in3") == []
    # the till binds an event stored without a shopper to one, below and above upto
    unbound = [str(r[0]) for r in db.query("SELECT id FROM events WHERE inbox IS NULL"
                                           " AND id NOT LIKE '%-3' ORDER BY rowid")]
    db.execute("UPDATE events SET inbox = 'late' WHERE id IN (?, ?)", (unbound[0], unbound[-1]))
    assert _found(db, "late") == sorted([unbound[0], unbound[-1]])
    # retention deletes the old events: their index rows go with them
    while purge_events(db, T0 - 86_400 * 400):
        pass
    assert db.one("SELECT count(*) FROM events WHERE id LIKE 'old-%'") == (0,)
    for inbox in ("in1", "in5", "late"):
        assert _found(db, inbox) == _truth(db, inbox)
    _index_is_true(db)
    db.close()


async def test_rowids_handed_out_again_after_the_newest_events_go(tmp_path: Path,
                                                                 small_tail: int) -> None:
    """Retention on an idle database deletes every event: the next rowids are 1, 2, ...
    again, below the old ``upto``; they are found (as tail, then indexed)."""
    db = HqDb(f"sqlite:///{tmp_path}/hq.sqlite")
    ingest = Ingest(db)
    await ingest.astore_events(_events("gone", 400, t0=T0 - 86_400 * 500))
    assert _upto(db) >= 300
    while purge_events(db, T0):
        pass
    assert db.one("SELECT count(*), count(*) FROM events_by_inbox") == (0, 0)
    await ingest.astore_events(_events("b", 50))
    assert db.one("SELECT max(rowid) FROM events") == (50,)
    assert _upto(db) == 0  # lowered: the new rows are tail
    assert _found(db, "in2") == _truth(db, "in2") != []
    await ingest.astore_events(_events("c", 200))
    assert _upto(db) > 50
    for inbox in ("in2", "in9"):
        assert _found(db, inbox) == _truth(db, inbox)
    _index_is_true(db)
    db.close()


async def test_upgrading_indexes_the_events_stored_before(tmp_path: Path) -> None:
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
    assert _upto(db) == 60
    assert db.one("SELECT count(*) FROM sqlite_master WHERE name = 'events_inbox'") == (0,)
    for inbox in ("in1", "in4"):
        assert _found(db, inbox) == _truth(db, inbox) != []
    _index_is_true(db)
    db.close()
