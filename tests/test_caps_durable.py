"""Cap charges and budget spends commit in the same SQLite transaction as the offers
they charge, so a crash keeps both or neither; charges go with their day key."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from aislecast.kernel.campaign import Budget, Campaign, Caps, Creative, Trigger
from aislecast.kernel.schema import SCHEMA_VERSION, Event, EventBatch, encode
from gateway.caps import VISIT_GAP_S, CapLedger, Charge
from gateway.decisions import Decision, DecisionEngine, TriggerEvent, apply_peer_batch
from gateway.outbox import Outbox, OutboxError, OutboxRow
from gateway.recorder import EventMaker, EventRecorder, EventRow, OfferRow, published_id
from gateway.storage import open_db
from gateway.visits import VisitBook
from tests.fakeclock import FakeClock

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def _campaign(**kw: object) -> Campaign:
    base: dict[str, object] = {
        "id": "c1", "name": "c1", "stores": ["s1"], "trigger": Trigger(zones=["bakery"]),
        "creatives": [Creative(id="a", title="A")], "caps": Caps(per_campaign=1)}
    base.update(kw)
    return Campaign(**base)  # type: ignore[arg-type]


class _Gateway:
    """The gateway's wiring of engine, recorder and outbox on one SQLite file."""

    def __init__(self, path: Path, campaign: Campaign) -> None:
        self.db = open_db(path)
        self.engine = DecisionEngine(self.db, "s1", gateway="gw-1", rng=random.Random(1))
        self.engine.load([campaign], [], zones=["bakery"])
        self.outbox = Outbox(self.db)
        self.visits = VisitBook(self.db, absence_s=6.0, now=NOW)
        self.recorder = EventRecorder(
            self.outbox, EventMaker(store="s1", gateway="gw-1", notify=lambda k, d: None), None,
            charges=self.engine.ledger, visits=self.visits)

    def decide(self, inbox: str, visit: str = "v1") -> tuple[Decision, list[EventRow],
                                                            list[OfferRow]]:
        d = self.engine.decide(TriggerEvent("enter", inbox, "bakery", NOW, visit=visit))
        rows: list[EventRow] = []
        offers: list[OfferRow] = []
        self.recorder.decision(d, rows, offers)
        return d, rows, offers


def _charges(path: Path) -> int:
    with sqlite3.connect(path) as other:  # another connection: what a restart would read
        return int(other.execute("SELECT count(*) FROM cap_charges").fetchone()[0])


def test_an_offer_and_its_charge_commit_together(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite"
    gw = _Gateway(path, _campaign())
    d, rows, offers = gw.decide("i1")
    assert d.reason == "offer"
    assert gw.engine.ledger.self_flush is False  # the recorder owns the writes
    gw.engine.ledger.tick()  # no flush of its own, however long ago the last one was
    assert _charges(path) == 0 and len(gw.outbox) == 0
    gw.recorder.commit(offers, rows)  # no event loop: commits at once
    assert _charges(path) == 1 and gw.outbox.pending("offer", limit=5)[0].id == offers[0][0]
    gw.db.close()  # a crash right after the commit: the restarted gateway knows the cap
    again = _Gateway(path, _campaign())
    assert again.decide("i1", visit="v2")[0].reason == "cap_per_campaign"


def test_a_crash_before_the_commit_loses_the_offer_and_its_charge_alike(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite"
    gw = _Gateway(path, _campaign())
    assert gw.decide("i1")[0].reason == "offer"
    gw.db.close()  # killed before the loop turn's commit: nothing was promised
    again = _Gateway(path, _campaign())
    assert len(again.outbox) == 0
    d, rows, offers = again.decide("i1")
    assert d.reason == "offer"  # the shopper never got the first one
    again.recorder.commit(offers, rows)
    assert _charges(path) == 1


def test_a_failed_commit_keeps_the_charges_for_the_next_one(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite"
    gw = _Gateway(path, _campaign(budget=Budget("impressions", 5)))
    _, rows, offers = gw.decide("i1")
    pages = gw.db.execute("PRAGMA page_count").fetchone()[0]
    gw.db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full
    gw.recorder.commit(offers, [*rows, ("big", "t", b"x" * 50_000)])
    assert gw.recorder.stats.write_failures == 1
    assert _charges(path) == 0
    gw.db.execute("PRAGMA max_page_count = 1073741823")
    gw.recorder.commit([], [])
    gw.recorder.flush()
    assert _charges(path) == 1 and len(gw.outbox) == 3
    gw.db.close()
    again = _Gateway(path, _campaign(budget=Budget("impressions", 5)))
    assert again.engine.ledger.spent == {"c1": 1}


def test_outbox_error_gives_the_taken_writes_back(tmp_path: Path) -> None:
    db = open_db(tmp_path / "gw.sqlite")
    ledger = CapLedger(db)
    ledger.defer_to_group_commit()
    ledger.charge(Charge("i1", "c1", "v1", "2026-01-01", NOW, offer=True))
    ledger.spend("c1")
    taken = ledger.take()
    assert taken and not ledger.take()
    ledger.spend("c1")  # spent meanwhile: the newer total wins
    ledger.give_back(taken)
    again = ledger.take()
    assert len(again.charges) == 1 and again.spent == {"c1": 2}
    with pytest.raises(OutboxError):
        Outbox(db).add(events=[("e1", "t", b"{}")], also=lambda cur: cur.execute("SELECT nope"))
    assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0  # rolled back whole


def test_a_new_visit_commits_with_its_offer_so_the_per_visit_cap_holds(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite"
    camp = _campaign(caps=Caps())  # one offer per visit, nothing else
    gw = _Gateway(path, camp)
    visit = gw.visits.visit("i1", NOW)
    d, rows, offers = gw.decide("i1", visit=visit)
    assert d.reason == "offer"
    gw.recorder.commit(offers, rows)
    gw.db.close()  # killed before the visit book's own sync
    again = _Gateway(path, camp)
    assert again.visits.resumed == 1
    resumed = again.visits.visit("i1", NOW + 1)
    assert resumed == visit
    assert again.decide("i1", visit=resumed)[0].reason == "cap_per_visit"


def test_budget_spend_is_exact_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite"
    camp = _campaign(caps=Caps(), budget=Budget("impressions", 5))
    gw = _Gateway(path, camp)
    for i in range(3):
        d, rows, offers = gw.decide(f"i{i}")
        assert d.reason == "offer"
        gw.recorder.commit(offers, rows)
    gw.db.close()
    again = _Gateway(path, camp)
    assert again.engine.ledger.budget_left("c1", 5) == 2  # not a block wasted per restart
    for i in range(3, 5):
        d, rows, offers = again.decide(f"i{i}")
        again.recorder.commit(offers, rows)
    assert again.decide("i9")[0].reason == "budget_spent"


def test_peer_charges_are_written_with_their_batch(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite"
    gw = _Gateway(path, _campaign())
    ev = Event(id="peer-1", kind="decision", ts=NOW, store="s1", gateway="gw-2", inbox="i1",
               campaign="c1", reason="offer")
    batch = encode(EventBatch(v=SCHEMA_VERSION, store="s1", gateway="gw-2", events=[ev]))
    assert apply_peer_batch(gw.engine, batch, "gw-1") == 1
    assert _charges(path) == 1
    gw.db.close()
    assert _Gateway(path, _campaign()).decide("i1")[0].reason == "cap_per_campaign"


def test_charges_go_with_their_day_key_on_start_and_at_midnight(tmp_path: Path) -> None:
    clock = FakeClock(wall=NOW)  # 2026-01-01 00:00 UTC
    db = open_db(tmp_path / "gw.sqlite")
    ledger = CapLedger(db, clock=clock.time)
    ledger.tick()
    ledger.charge(Charge("i1", "c1", "v1", "2026-01-01", NOW, offer=True))
    ledger.flush()
    clock.call_every(3600, ledger.tick)  # stands in for the decisions that call tick
    clock.advance(47 * 3600)  # 2026-01-02 23:00: yesterday's key and row are kept
    assert ledger.pruned == 0 and ledger.ps.today == "2026-01-02"
    assert ledger.ps.days() == ["2026-01-01"]  # a day's key is made at its first charge
    assert db.execute("SELECT count(*) FROM cap_charges").fetchone()[0] == 1
    clock.advance(3600)  # 2026-01-03: the key of 2026-01-01 is destroyed, its row deleted
    assert ledger.pruned == 1 and "2026-01-01" not in ledger.ps.days()
    assert db.execute("SELECT count(*) FROM cap_charges").fetchone()[0] == 0
    assert ledger.lifetime_count("i1", "c1") == 1  # the lifetime count stays
    db.close()
    again = CapLedger(open_db(tmp_path / "gw.sqlite"), clock=clock.time)
    assert again.pruned == 0 and not again.by_day and again.lifetime_count("i1", "c1") == 1


def test_offer_published_keeps_one_id_per_offer() -> None:
    maker = EventMaker(store="s1", gateway="gw-1", notify=lambda k, d: None)
    row = OutboxRow(1, "offer-1", "offer", "t", b'{"inbox":"i1","campaign":"c1"}', None, 0)
    first, again = maker.offer_acked(row)[0], maker.offer_acked(row)[0]
    assert first[0] == again[0] == published_id("offer-1") != published_id("offer-2")
    assert len(first[0]) == 32


def test_pruning_bounds_the_counts_in_memory_over_many_days(tmp_path: Path) -> None:
    clock = FakeClock(wall=NOW)
    db = open_db(tmp_path / "gw.sqlite")
    ledger = CapLedger(db, clock=clock.time)
    ledger.defer_to_group_commit()
    caps = Caps(per_day=1)
    sizes = []
    for day in range(10):
        for n in range(50):  # each day's shoppers are new ones
            inbox, now = f"d{day}-i{n}", clock.time()
            ledger.seen_visit(inbox, "v1", now)
            ledger.charge(Charge(inbox, "c1", "v1", ledger.ps.day(now), now, offer=True))
        ledger.take().write(db.cursor())  # the group commit that carries them
        for _ in range(24):
            clock.advance(3600)
            ledger.prune(clock.time())  # what gateway.retention does
        sizes.append((len(ledger.by_day), len(ledger.visit_of)))
    # a charge made meanwhile and not yet written survives the rebuild of the counts
    ledger.seen_visit("late", "v1", clock.time())
    ledger.charge(Charge("late", "c1", "v1", ledger.ps.day(clock.time()), clock.time(),
                         offer=True))
    clock.advance(VISIT_GAP_S + 1)
    ledger.prune(clock.time())
    assert ledger.pruned == 9 * 50  # the first nine days' charges went with their keys
    # yesterday's shoppers only (their rows are kept with yesterday's key); none is
    # remembered by inbox past VISIT_GAP_S
    assert sizes == [(50, 0)] * 10
    assert ledger.blocked(caps, "late", "c1", "v2", now=clock.time()) == "cap_per_day"
    assert ledger.blocked(caps, "d9-i0", "c1", "v2", now=clock.time()) is None  # yesterday's
    assert (len(ledger.by_day), len(ledger.visit_of)) == (51, 0)
