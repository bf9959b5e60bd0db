"""Edge storage keyed by pseudonyms (gateway/pseudonyms.py): no inbox on the gateway's
disk, day keys destroyed after two days with their rows, caps still enforced across
midnight, the m0003 migration from clear rows; on a fake clock."""

from __future__ import annotations

import datetime as dt
import logging
import random
import sqlite3
import stat
import zoneinfo
from pathlib import Path

import pytest

from aislecast.kernel.campaign import Campaign, Caps, Creative, Trigger
from aislecast.kernel.schema import SCHEMA_VERSION, Event, EventBatch, encode
from gateway.caps import CapLedger, Charge
from gateway.decisions import DecisionEngine, TriggerEvent, apply_peer_batch
from gateway.outbox import Outbox
from gateway.pseudonyms import CACHE_MAX, KEY_BYTES, LIFETIME_CACHE_MAX, Pseudonyms, day_before, key_dir_for
from gateway.recorder import EventMaker, EventRecorder, EventRow, OfferRow
from gateway.storage import STEPS, open_db
from gateway.visits import VisitBook
from tests.fakeclock import FakeClock

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
# 2026-03-10 23:50 in Berlin: ten minutes before a local midnight
LATE = dt.datetime(2026, 3, 10, 23, 50, tzinfo=BERLIN).timestamp()
INBOXES = [f"inbox-{i:02d}-{'7f3a9c' * 4}" for i in range(5)]


def _camp(cid: str, caps: Caps) -> Campaign:
    return Campaign(id=cid, name=cid, stores=["s1"], trigger=Trigger(zones=["bakery"]),
                    creatives=[Creative(id="a", title="A")], caps=caps)


def _engine(path: Path, *camps: Campaign) -> DecisionEngine:
    e = DecisionEngine(open_db(path), "s1", gateway="gw-1", rng=random.Random(1))
    e.load(list(camps), [], tz="Europe/Berlin", zones=["bakery"])
    return e


def _trig(inbox: str, ts: float, visit: str) -> TriggerEvent:
    return TriggerEvent("enter", inbox, "bakery", ts, visit=visit)


def _tables(path: Path) -> dict[str, list[tuple[object, ...]]]:
    conn = sqlite3.connect(path)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: conn.execute(f'SELECT * FROM "{t}"').fetchall() for t in names}  # noqa: S608
    finally:
        conn.close()


def test_no_inbox_in_clear_on_disk_after_use(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite"
    e = _engine(path, _camp("c1", Caps(per_campaign=2, per_day=1, min_gap_s=60)))
    outbox = Outbox(e.ledger._conn)
    visits = VisitBook(outbox.conn, absence_s=6.0, now=LATE)
    rec = EventRecorder(outbox, EventMaker(store="s1", gateway="gw-1", notify=lambda k, d: None),
                        None, charges=e.ledger, visits=visits)
    rows: list[EventRow] = []
    offers: list[OfferRow] = []
    for inbox in INBOXES:
        d = e.decide(_trig(inbox, LATE, visits.visit(inbox, LATE)))
        assert d.reason == "offer"
        rec.decision(d, rows, offers)
    rec.commit(offers, rows)
    visits.sync(LATE + 1, INBOXES, force=True)
    sent = [r.seq for r in outbox.pending("offer", limit=100)]
    sent += [r.seq for r in outbox.pending("event", limit=100)]
    assert len(sent) >= 2 * len(INBOXES)  # offers and decisions naming the inboxes, in transit
    outbox.remove(sent)  # HQ took them: secure_delete zeroes their cells
    outbox.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    tables = _tables(path)
    # the witnesses: the gateway holds rows about every shopper
    assert len(tables["cap_charges"]) == len(INBOXES)
    assert len(tables["cap_lifetime"]) == len(INBOXES)
    assert len(tables["visits"]) == len(INBOXES)
    for inbox in INBOXES:
        assert not [t for t, rs in tables.items() if inbox in repr(rs)], inbox
    raw = path.read_bytes() + Path(f"{path}-wal").read_bytes()
    assert not [i for i in INBOXES if i.encode() in raw]  # nor in the file's free pages
    ps = e.ledger.ps
    assert {r[0] for r in tables["cap_charges"]} == {ps.of(i, "2026-03-10") for i in INBOXES}


def test_key_files_are_owner_only(tmp_path: Path) -> None:
    db = open_db(tmp_path / "gw.sqlite")
    ledger = CapLedger(db, clock=lambda: LATE)
    ledger.charge(Charge(INBOXES[0], "c1", "v1", "2026-03-10", LATE, offer=True))
    keys = key_dir_for(db)
    assert keys is not None and keys == tmp_path / "gw.sqlite.keys"
    files = sorted(p.name for p in keys.iterdir())
    assert files == ["day-2026-03-10.key", "life.key"]
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    for f in keys.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600 and f.stat().st_size == KEY_BYTES


def test_on_day_three_day_one_key_and_rows_are_gone(tmp_path: Path) -> None:
    clock = FakeClock(wall=dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC).timestamp())
    path = tmp_path / "gw.sqlite"
    db = open_db(path)
    ledger = CapLedger(db, clock=clock.time)
    visits = VisitBook(db, absence_s=6.0, now=clock.time(), max_down_s=10 * 86_400)
    x = INBOXES[0]
    ledger.charge(Charge(x, "c1", visits.visit(x, clock.time()), "2026-03-01", clock.time(), True))
    ledger.flush()
    visits.sync(clock.time(), [x], force=True)
    p1 = ledger.ps.of(x, "2026-03-01")
    key1 = (tmp_path / "gw.sqlite.keys" / "day-2026-03-01.key").read_bytes()
    assert p1 is not None and len(key1) == KEY_BYTES
    assert [r[0] for r in db.execute("SELECT shopper FROM cap_charges")] == [p1]
    assert [r[0] for r in db.execute("SELECT shopper FROM visits")] == [p1]

    clock.advance(86_400)  # day 2: day 1 is yesterday, kept
    assert ledger.prune(clock.time()) == 0 and ledger.ps.of(x, "2026-03-01") == p1
    clock.advance(86_400)  # day 3
    assert ledger.prune(clock.time()) == 1
    db.execute("DELETE FROM visits WHERE day < ?", (ledger.ps.yesterday,))  # retention's part
    assert ledger.ps.days() == [] and ledger.ps.today == "2026-03-03"
    assert not (tmp_path / "gw.sqlite.keys" / "day-2026-03-01.key").exists()
    # day 1's pseudonym cannot be recomputed: no key, and none can be made for that day
    assert ledger.ps.of(x, "2026-03-01") is None
    assert ledger.ps.key("2026-03-01", create=True) is None
    reloaded = Pseudonyms(tmp_path / "gw.sqlite.keys")
    assert reloaded.of(x, "2026-03-01", create=False) is None
    assert not any(key1 in f.read_bytes() for f in (tmp_path / "gw.sqlite.keys").iterdir())
    assert p1 not in repr(_tables(path))
    assert ledger.lifetime_count(x, "c1") == 1  # the count without a time stays
    # the visit book ends a visit still open under the destroyed key at its next sync
    visits.sync(clock.time(), [], force=True)
    assert len(visits) == 0


def test_per_day_cap_resets_at_local_midnight_and_per_visit_holds_across_it(
        tmp_path: Path) -> None:
    e = _engine(tmp_path / "gw.sqlite", _camp("c1", Caps(per_shopper=1, per_day=1)))
    x = INBOXES[0]
    assert e.decide(_trig(x, LATE, "v1")).reason == "offer"
    assert e.decide(_trig(x, LATE + 300, "v2")).reason == "cap_per_day"  # 23:55, same day
    assert e.decide(_trig(x, LATE + 1200, "v1")).reason == "cap_per_visit"  # 00:10, same visit
    assert e.decide(_trig(x, LATE + 1200, "v3")).reason == "offer"  # a new local day
    assert e.ledger.ps.today == "2026-03-11"


def test_a_cooldown_spanning_midnight_holds(tmp_path: Path) -> None:
    e = _engine(tmp_path / "gw.sqlite", _camp("c1", Caps(per_shopper=9, min_gap_s=3600)))
    x = INBOXES[1]
    assert e.decide(_trig(x, LATE, "v1")).reason == "offer"
    assert e.decide(_trig(x, LATE + 1200, "v2")).reason == "cap_min_gap"  # 00:10, next day
    assert e.decide(_trig(x, LATE + 3600, "v2")).reason == "offer"


def test_a_lifetime_cap_holds_after_days_and_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite"
    camp = _camp("c1", Caps(per_campaign=1))
    e = _engine(path, camp)
    x = INBOXES[2]
    assert e.decide(_trig(x, LATE, "v1")).reason == "offer"
    e.flush()
    later = LATE + 5 * 86_400
    assert e.decide(_trig(INBOXES[3], later, "v9")).reason == "offer"  # day 6 starts
    assert e.decide(_trig(x, later, "v2")).reason == "cap_per_campaign"
    e.flush()
    assert e.ledger.ps.days() == ["2026-03-15"]  # day 1's key went long ago
    again = _engine(path, camp)
    assert again.decide(_trig(x, later + 60, "v3")).reason == "cap_per_campaign"
    assert again.decide(_trig(INBOXES[4], later + 60, "v3")).reason == "offer"


def test_peer_charges_older_than_yesterday_are_ignored_later_ones_clamped(tmp_path: Path) -> None:
    e = _engine(tmp_path / "gw.sqlite", _camp("c1", Caps(per_shopper=9, per_campaign=1)))
    assert e.decide(_trig(INBOXES[0], LATE, "v1")).reason == "offer"  # today: 2026-03-10

    def batch(eid: str, ts: float, inbox: str) -> bytes:
        ev = Event(id=eid, kind="decision", ts=ts, store="s1", gateway="gw-2", inbox=inbox,
                   campaign="c1", reason="offer")
        return encode(EventBatch(v=SCHEMA_VERSION, store="s1", gateway="gw-2", events=[ev]))

    assert apply_peer_batch(e, batch("old", LATE - 3 * 86_400, INBOXES[1]), "gw-1") == 0
    assert e.ledger.stale_remote == 1 and e.ledger.lifetime_count(INBOXES[1], "c1") == 0
    assert apply_peer_batch(e, batch("ahead", LATE + 86_400, INBOXES[2]), "gw-1") == 1
    assert e.ledger.ps.today == "2026-03-10"  # a peer's clock does not start a day here
    assert e.decide(_trig(INBOXES[2], LATE + 1, "v1")).reason == "cap_per_campaign"


def test_the_pseudonym_cache_is_bounded_and_cleared_at_a_new_day() -> None:
    ps = Pseudonyms(None)
    ps.advance_day("2026-03-10")
    first = ps.ids("a").today
    for i in range(CACHE_MAX + 1):
        ps.ids(f"i{i}")
    assert len(ps._ids) <= CACHE_MAX
    assert ps.ids("a").today == first  # recomputed alike
    ps.advance_day("2026-03-11")
    assert len(ps._ids) == 0
    assert ps.ids("a").today != first and ps.ids("a").yesterday == first
    assert day_before("2026-03-01") == "2026-02-28"


def test_the_lifetime_pseudonym_cache_is_bounded_and_cleared_at_a_new_day() -> None:
    ps = Pseudonyms(None)
    ps.advance_day("2026-03-10")
    first = ps.lifetime("a", "c1")
    for i in range(LIFETIME_CACHE_MAX + 1):
        ps.lifetime(f"i{i}", "c1")
    assert 0 < len(ps._lifetime) <= LIFETIME_CACHE_MAX
    assert ps.lifetime("a", "c1") == first  # recomputed alike
    ps.advance_day("2026-03-11")
    assert len(ps._lifetime) == 0
    assert ps.lifetime("a", "c1") == first  # a lifetime pseudonym never changes with the day


def test_migration_from_m0002_rekeys_recent_rows_and_drops_old_ones(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "gw.sqlite"
    old = open_db(path, steps=STEPS[:2])
    x, y = INBOXES[0], INBOXES[1]
    ts = dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC).timestamp()
    old.executemany("INSERT INTO cap_charges VALUES (?, ?, ?, ?, ?, ?, ?)", [
        (x, "c1", "v1", "2026-03-10", ts, 1, ""),
        (x, "c1", "v0", "2026-03-09", ts - 86_400, 1, ""),
        (x, "c1", "v-old", "2026-03-01", ts - 9 * 86_400, 1, ""),
        (y, "c2", "v7", "2026-03-10", ts, 0, "peer-1"),
    ])
    old.execute("INSERT INTO visits VALUES (?, ?, ?, ?)", (x, "v1", ts, 1))
    old.close()
    with caplog.at_level(logging.INFO, logger="aislecast.gateway.storage"):
        db = open_db(path)
    assert "charges=4 rekeyed=3 dropped=1 lifetime=2 visits=1" in caplog.text
    tables = _tables(path)
    assert not [i for i in INBOXES if i in repr(tables)]
    assert len(tables["cap_charges"]) == 3 and len(tables["visits"]) == 1
    ledger = CapLedger(db, clock=lambda: ts)
    ps = ledger.ps
    assert ps.today == "2026-03-10" and ps.days() == ["2026-03-09", "2026-03-10"]
    assert sorted(r[0] for r in tables["cap_charges"]) == sorted(
        [ps.of(x, "2026-03-10"), ps.of(x, "2026-03-09"), ps.of(y, "2026-03-10")])
    assert tables["visits"][0][:3] == (ps.of(x, "2026-03-10"), "2026-03-10", "v1")
    assert ledger.lifetime_count(x, "c1") == 3 and ledger.lifetime_count(y, "c2") == 1
    assert ledger.blocked(Caps(), x, "c1", "v1", now=ts + 60) == "cap_per_visit"
    assert ledger.blocked(Caps(per_shopper=9, per_day=1), x, "c1", "v2", now=ts + 60) == \
        "cap_per_day"
    assert ledger.blocked(Caps(per_shopper=9), x, "c1", "v2", now=ts + 60) is None
    assert ledger.charge_remote("peer-1", y, "c2", day="2026-03-10", ts=ts, offer=False) is False


def test_a_day_started_early_in_utc_keeps_the_per_day_cap_of_the_local_day(
        tmp_path: Path) -> None:
    """A new gateway's retention may start a day before the bundle names the store's
    time zone: 01:00 UTC is still the evening before in New York."""
    ts = dt.datetime(2026, 3, 11, 1, tzinfo=dt.UTC).timestamp()
    ledger = CapLedger(open_db(tmp_path / "gw.sqlite"), clock=lambda: ts)
    ledger.prune(ts)
    assert ledger.ps.today == "2026-03-11"
    ledger.ps.tz = "America/New_York"  # the bundle arrives
    local = ledger.ps.day(ts)
    assert local == "2026-03-10" == ledger.ps.yesterday
    ledger.charge(Charge(INBOXES[0], "c1", "v1", local, ts, offer=True))
    assert ledger.blocked(Caps(per_shopper=9, per_day=1), INBOXES[0], "c1", "v2", now=ts + 60) \
        == "cap_per_day"
    assert ledger.blocked(Caps(per_shopper=9, per_day=1), INBOXES[1], "c1", "v2", now=ts + 60) \
        is None
