"""Store-scoped identity (hq.scope, hq.store_model): which shoppers a store's bundle
carries, on SQLite and PostgreSQL, and the migration that backfills them."""

from __future__ import annotations

import json
import time
from pathlib import Path

import msgspec

from aislecast.kernel.campaign import Audience, Creative, Trigger
from aislecast.kernel.schema import Campaign, Event, Store
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from hq.accounts import Accounts
from hq.consent import PURPOSES
from hq.db import HqDb
from hq.ingest import Ingest
from hq.learning import set_profile, train
from hq.migrations import STEPS, migrate
from hq.rights import ShopperRights
from hq.scope import SEEN_S, SeenBook, shoppers_of, stores_of
from hq.service import HqService
from tests.conftest_pg import hq_url

NOW = 1_800_000_000.0


def _service(db: HqDb, tmp_path: Path) -> HqService:
    svc = HqService(db, Signer(load_or_create_signing_key(tmp_path / "k.pem")))
    for s in ("A", "B"):
        svc.upsert_store(Store(s, f"Store {s}"))
    return svc


def _inboxes(svc: HqService, store: str, now: float) -> set[str]:
    b = svc.build_bundle(store, now=now)
    return {i for t in b.token_tables for i in t.tokens.values()}


def test_a_store_bundle_carries_its_home_and_recently_seen_shoppers_only(
        db: HqDb, tmp_path: Path) -> None:
    svc = _service(db, tmp_path)
    home_a = svc.enroll(list(PURPOSES), ["A"]).inbox
    home_b = svc.enroll(list(PURPOSES), ["B"]).inbox
    both = svc.enroll(list(PURPOSES), ["A", "B"]).inbox
    nowhere = svc.enroll(list(PURPOSES)).inbox
    visitor = svc.enroll(list(PURPOSES), ["B"]).inbox
    book = SeenBook(db)
    assert book.seen(visitor, "A", NOW - 86_400.0, now=NOW - 86_400.0)

    assert _inboxes(svc, "A", NOW) == {home_a, both, visitor}
    assert _inboxes(svc, "B", NOW) == {home_b, both, visitor}
    assert stores_of(db, visitor, NOW) == ["A", "B"] and stores_of(db, nowhere, NOW) == []
    # the chain-wide tables still have everyone (HQ's own use)
    assert {i for t in svc.token_tables(NOW) for i in t.tokens.values()} >= {home_b, nowhere}
    # 30 days after the visit store A no longer receives the visitor; home stores stay
    later = NOW - 86_400.0 + SEEN_S + 1.0
    assert _inboxes(svc, "A", later) == {home_a, both}
    assert shoppers_of(db, "A", later) == sorted([home_a, both])
    assert shoppers_of(db, "A", later - 2.0) == sorted([home_a, both, visitor])
    # an opted-out shopper is named in the opt-outs of the stores that ever received them
    db.execute("UPDATE shoppers SET opted_out = 1 WHERE inbox IN (?, ?)", (home_b, visitor))
    assert svc.build_bundle("A", now=later).opt_outs == [visitor]
    assert svc.build_bundle("B", now=later).opt_outs == sorted([home_b, visitor])


def test_seen_is_written_at_most_hourly_and_never_for_unknown_inboxes(
        db: HqDb, tmp_path: Path) -> None:
    svc = _service(db, tmp_path)
    e = svc.enroll(list(PURPOSES), ["B"]).inbox
    book = SeenBook(db)
    assert book.note([(e, "A", NOW), (e, "A", NOW + 5)], now=NOW + 5) == 1
    assert not book.seen(e, "A", NOW + 60, now=NOW + 60)  # within the hour: not rewritten
    assert book.seen(e, "A", NOW + 3_700, now=NOW + 3_700)
    assert db.query("SELECT last_seen FROM shopper_stores WHERE inbox = ? AND store = 'A'",
                    (e,)) == [(NOW + 3_700,)]
    # an older sighting written later never moves last_seen back
    assert SeenBook(db).seen(e, "A", NOW, now=NOW + 3_800)
    assert db.one("SELECT last_seen FROM shopper_stores WHERE inbox = ? AND store = 'A'",
                  (e,)) == (NOW + 3_700,)
    # a clock ahead of HQ's is taken as HQ's now; an inbox HQ does not have gets no row
    assert book.note([("0123456789abcdef", "A", NOW)], now=NOW) == 1
    assert db.one("SELECT count(*) FROM shopper_stores WHERE inbox = '0123456789abcdef'") == (0,)
    assert book.written == 3


def test_ingest_marks_the_events_shoppers_seen_in_their_store(db: HqDb, tmp_path: Path) -> None:
    svc = _service(db, tmp_path)
    e = svc.enroll(list(PURPOSES), ["B"]).inbox
    ingest = Ingest(db)
    now = time.time()
    ingest.store_events([Event(id=f"e{i}", kind="visit_start", ts=now, store="A", inbox=e)
                         for i in range(3)])
    assert stores_of(db, e) == ["A", "B"] and ingest.stats.seen_marked == 1
    assert e in _inboxes(svc, "A", now)


def test_store_model_cuts_profiles_to_the_store_and_to_what_campaigns_target(
        db: HqDb, tmp_path: Path) -> None:
    svc = _service(db, tmp_path)
    a = svc.enroll(list(PURPOSES), ["A"]).inbox
    b = svc.enroll(list(PURPOSES), ["B"]).inbox
    set_profile(svc, a, ["vegan", "dogs"], "gold")
    set_profile(svc, b, ["vegan"], "gold")
    svc.upsert_campaign(Campaign(id="c1", name="c1", stores=["A"], creatives=[Creative(id="v", title="t")],
                                 triggers=[Trigger(kind="enter")],
                                 audience=Audience(segments=["vegan"]), status="live"))
    train(svc, now=NOW)
    model = svc.build_bundle("A", now=NOW).model
    assert model is not None and set(model.profiles) == {a}
    p = model.profiles[a]
    assert p.segments == ["vegan"] and p.tier == "" and p.consents == sorted(PURPOSES)
    # a campaign targeting tiers or another segment widens the cut (and asks for bundles)
    tiered = Campaign(id="c2", name="c2", stores=["A"], creatives=[Creative(id="v", title="t")],
                      triggers=[Trigger(kind="enter")],
                      audience=Audience(segments=["dogs"], loyalty_tiers=["gold"]), status="live")
    assert svc.widens_targeting(tiered)
    svc.upsert_campaign(tiered)
    p = svc.build_bundle("A", now=NOW).model.profiles[a]  # type: ignore[union-attr]
    assert p.segments == ["vegan", "dogs"] and p.tier == "gold"
    assert not svc.widens_targeting(tiered)
    # the chain's model is untouched
    assert set(svc.model.profiles) >= {a, b}  # type: ignore[union-attr]


async def test_rights_admit_to_the_shoppers_stores_export_and_erase(db: HqDb, tmp_path: Path) -> None:
    svc = _service(db, tmp_path)
    sent: list[tuple[str, list[str]]] = []

    async def publish_delta(store: str, **fields: object) -> None:  # the stores a delta goes to
        sent.append((store, list(fields.get("opt_ins") or fields.get("opt_outs") or [])))

    svc.publish_delta = publish_delta  # type: ignore[assignment,method-assign]
    rights = ShopperRights(svc, Accounts(db))
    gone: list[str] = []
    svc.shopper_listeners.append(gone.append)
    e = await rights.enroll_admitted(["offers"], ["B"], source="api", audited=lambda e: None)
    assert sent == [("B", [e.inbox])] and gone == [e.inbox]
    lone = await rights.enroll_admitted(["offers"], [], source="api", audited=lambda e: None)
    assert sent == [("B", [e.inbox])]  # no home store: no store is told until a first visit
    SeenBook(db).seen(lone.inbox, "A", time.time())
    sent.clear()
    await rights.change(lone.inbox, "offers", False, source="api")
    await rights.change(lone.inbox, "offers", True, source="api")
    assert sent == [("A", [lone.inbox]), ("B", [lone.inbox]), ("A", [lone.inbox])]
    out = rights.export(lone.inbox)
    assert [(s["store"], s["home"]) for s in out["stores"]] == [("A", False)]
    await rights.erase(lone.inbox)
    assert db.one("SELECT count(*) FROM shopper_stores WHERE inbox = ?", (lone.inbox,)) == (0,)
    assert gone[-1] == lone.inbox and stores_of(db, e.inbox) == ["B"]


def test_migration_backfills_home_stores_and_visits(tmp_path: Path, db: HqDb) -> None:
    backend = "postgresql" if db.dialect == "postgresql" else "sqlite"
    with hq_url(backend, tmp_path / "old") as url:
        old = HqDb(url, create_schema=False)
        try:
            assert migrate(old, STEPS[:11]) == 11
            for inbox, homes in (("i1", ["A", "B"]), ("i2", []), ("i3", ["B", "B"])):
                old.execute("INSERT INTO shoppers (inbox, identity_key, consents, created_at,"
                            " home_stores) VALUES (?, ?, 'offers', 0, ?)",
                            (inbox, "00" * 16, json.dumps(homes)))
            for eid, inbox, store, ts in (("e1", "i1", "B", NOW - 9), ("e2", "i1", "B", NOW),
                                          ("e3", "i2", "A", NOW + 1), ("e4", "gone", "A", NOW),
                                          ("e5", "i2", None, NOW)):
                old.execute("INSERT INTO events (id, kind, ts, store, inbox, body)"
                            " VALUES (?, 'visit_start', ?, ?, ?, '{}')", (eid, ts, store, inbox))
            assert migrate(old) == len(STEPS)
            rows = old.query("SELECT inbox, store, home, last_seen FROM shopper_stores"
                             " ORDER BY inbox, store")
            assert rows == [("i1", "A", 1, None), ("i1", "B", 1, NOW), ("i2", "A", 0, NOW + 1),
                            ("i3", "B", 1, None)]
        finally:
            old.close()


def test_bundle_bytes_grow_with_the_store_not_the_chain(db: HqDb, tmp_path: Path) -> None:
    svc = _service(db, tmp_path)
    for i in range(40):
        svc.enroll(list(PURPOSES), ["A" if i < 4 else "B"])
    small = len(msgspec.json.encode(svc.build_bundle("A", now=NOW)))
    chain = len(msgspec.json.encode(svc.token_tables(NOW)))
    mine = len(msgspec.json.encode(svc.token_tables(NOW, store="A")))
    assert mine * 8 < chain and small < chain  # 4 of 40 shoppers, and the lists around them
