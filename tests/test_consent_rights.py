"""Consent, export and erasure at HQ over HTTP, on SQLite and on PostgreSQL (hq.rights)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

import hq.inbox_index
from aislecast.kernel.schema import Event, Store
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from hq.api import create_app
from hq.db import HqDb
from hq.ingest import Ingest
from hq.rights import ERASED
from hq.service import HqService
from tests.harness import bearer, token_for
from tests.purchases import add_purchase


def _app(db: HqDb, tmp_path: Path) -> httpx.AsyncClient:
    svc = HqService(db, Signer(load_or_create_signing_key(tmp_path / "k.pem")))
    for s in ("s1", "s2"):
        svc.upsert_store(Store(s, s.upper()))
    app = create_app(svc, Ingest(db))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hq")


async def test_enrolment_checks_purposes_and_home_stores(db: HqDb, tmp_path: Path) -> None:
    async with _app(db, tmp_path) as c:
        wallet = bearer(token_for(db, "wallet"))
        r = await c.post("/api/enroll", json={"consents": ["offers", "telepathy"]}, headers=wallet)
        assert r.status_code == 422 and "unknown purpose 'telepathy'" in r.text, r.text
        r = await c.post("/api/shoppers", json={"home_stores": ["s1", "s9"]}, headers=wallet)
        assert r.status_code == 422 and "no store 's9'" in r.text, r.text
        assert db.one("SELECT count(*) FROM shoppers") == (0,)
        r = await c.post("/api/shoppers", json={"consents": ["offers", "analytics"],
                                                "home_stores": ["s2", "s1", "s2"]}, headers=wallet)
        assert r.status_code == 201, r.text
        e = r.json()
        assert e["home_stores"] == ["s1", "s2"] and e["api_token"].startswith("ac_")
        # the old shape ({"consents": [...]}) on the old route still enrols, and no body too
        r = await c.post("/api/shoppers", json={"consents": ["offers"]}, headers=wallet)
        assert r.status_code == 201 and r.json()["home_stores"] == []
        # every purpose is in the history at enrolment: granted or not
        r = await c.get(f"/api/shoppers/{e['inbox']}/consent", headers=bearer(e["api_token"]))
        assert r.status_code == 200
        hist = {(h["purpose"], h["granted"], h["source"]) for h in r.json()["history"]}
        assert hist == {("offers", True, "wallet"), ("analytics", True, "wallet"),
                        ("personalisation", False, "wallet")}


async def test_consent_changes_are_kept_and_only_the_shopper_sees_theirs(
        db: HqDb, tmp_path: Path) -> None:
    async with _app(db, tmp_path) as c:
        wallet, admin = bearer(token_for(db, "wallet")), bearer(token_for(db, "admin"))
        a = (await c.post("/api/shoppers", json={}, headers=wallet)).json()
        b = (await c.post("/api/shoppers", json={}, headers=wallet)).json()
        me = bearer(a["api_token"])
        r = await c.post(f"/api/shoppers/{a['inbox']}/consent",
                         json={"purpose": "personalisation", "granted": True}, headers=me)
        assert r.status_code == 200 and r.json()["consents"] == ["offers", "personalisation"]
        r = await c.post(f"/api/shoppers/{a['inbox']}/consent",
                         json={"purpose": "offers", "granted": False}, headers=admin)
        assert r.json()["consents"] == ["personalisation"] and r.json()["changed"] is True
        assert db.one("SELECT opted_out FROM shoppers WHERE inbox = ?", (a["inbox"],)) == (1,)
        r = await c.post(f"/api/shoppers/{a['inbox']}/consent",
                         json={"purpose": "offers", "granted": True}, headers=me)
        assert db.one("SELECT opted_out FROM shoppers WHERE inbox = ?", (a["inbox"],)) == (0,)
        r = await c.get(f"/api/shoppers/{a['inbox']}/consent", headers=me)
        tail = [(h["purpose"], h["granted"], h["source"]) for h in r.json()["history"]][-3:]
        assert tail == [("personalisation", True, "wallet"), ("offers", False, "admin"),
                        ("offers", True, "wallet")]
        # an unknown purpose is named; another shopper's inbox and no inbox: one 404
        r = await c.post(f"/api/shoppers/{a['inbox']}/consent",
                         json={"purpose": "telepathy", "granted": True}, headers=me)
        assert r.status_code == 422 and "telepathy" in r.text
        theirs = await c.get(f"/api/shoppers/{b['inbox']}/export", headers=me)
        nobody = await c.get("/api/shoppers/0123456789abcdef/export", headers=me)
        assert theirs.status_code == nobody.status_code == 404
        assert theirs.json()["detail"].replace(b["inbox"], "X") == \
            nobody.json()["detail"].replace("0123456789abcdef", "X")
        r = await c.post("/api/shoppers/0123456789abcdef/consent",
                         json={"purpose": "offers", "granted": False}, headers=admin)
        assert r.status_code == 404
        # a shopper token reaches nothing else
        assert (await c.get("/api/campaigns", headers=me)).status_code == 403


async def test_export_then_erase_leaves_only_anonymous_counts(db: HqDb, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # the shopper's events go into SQLite's bulk-written inbox index at once (hq.inbox_index):
    # export finds them there, and erasure must leave no index row naming the shopper
    monkeypatch.setattr(hq.inbox_index, "TAIL_MAX", 2)
    async with _app(db, tmp_path) as c:
        wallet = bearer(token_for(db, "wallet"))
        # analytics granted: their events are kept with the pseudonym (hq.purposes)
        e = (await c.post("/api/shoppers", json={"home_stores": ["s1"], "consents": ["offers", "analytics"]},
                          headers=wallet)).json()
        keep = (await c.post("/api/shoppers", json={"consents": ["offers", "analytics"]},
                             headers=wallet)).json()
        inbox, me = e["inbox"], bearer(e["api_token"])
        db.execute("INSERT INTO profiles (inbox, segments, tier) VALUES (?, 'bakery', 'gold')", (inbox,))
        Ingest(db).store_events([Event(id=f"ev-{i}", kind="zone_enter", ts=1000.0 + i, store="s1",
                                       inbox=who, zone="produce")
                                 for i, who in enumerate([inbox, inbox, keep["inbox"]])],
                                index=True)  # as HQ's group writer stores them
        # what a till holds of the shopper: member QR id, a loyalty card, a sale, a redemption
        db.execute("INSERT INTO members (member, inbox, created_at) VALUES ('MTEST', ?, 1.0)", (inbox,))
        db.execute("INSERT INTO loyalty_ids (loyalty, inbox, created_at) VALUES ('L-77', ?, 1.0)",
                   (inbox,))
        add_purchase(db, store="s1", inbox=inbox, ts=1001.0, value_cents=450)
        db.execute("INSERT INTO redemptions (code, store, campaign, variant, serial, offer, inbox,"
                   " expires_at, till, txn, ts) VALUES ('CODE1', 's1', 'c1', 'a', 'ser', 'o1', ?,"
                   " 2000.0, 'till-1', 't1', 1001.0)", (inbox,))
        r = await c.get(f"/api/shoppers/{inbox}/export", headers=me)
        assert r.status_code == 200
        out = r.json()
        assert out["member"] == "MTEST" and out["loyalty_ids"] == ["L-77"]
        assert [p["value_cents"] for p in out["purchases"]] == [450]
        assert [x["campaign"] for x in out["redemptions"]] == ["c1"]
        assert out["shopper"]["home_stores"] == ["s1"] and out["profile"]["tier"] == "gold"
        assert out["broker_user"]["username"] == inbox and "password_hash" not in out["broker_user"]
        assert [ev["id"] for ev in out["events"]] == ["ev-0", "ev-1"]
        if db.dialect == "sqlite":  # found through the index, not its tail
            assert db.one("SELECT count(*) FROM events_by_inbox WHERE inbox = ?", (inbox,)) == (2,)
        assert len(out["consent_history"]) == 3 and len(out["api_tokens"]) == 1
        assert [a["action"] for a in out["audit"]] == ["shopper.enroll"]

        r = await c.delete(f"/api/shoppers/{inbox}", headers=me)
        assert r.status_code == 200, r.text
        assert r.json()["events_anonymised"] == 2 and r.json()["consent_changes"] == 3
        # nothing names the pseudonym any more: every column of every table searched
        for table in db.tables():
            for row in db.query(f"SELECT * FROM {table}"):  # noqa: S608 - HQ's own tables
                assert inbox not in repr(row), (table, row)
        # ... while the positive witnesses are there: the events, counted without it
        assert db.query("SELECT id, inbox FROM events WHERE id IN ('ev-0', 'ev-1') ORDER BY id") == [
            ("ev-0", None), ("ev-1", None)]
        assert db.one("SELECT count(*) FROM erasures") == (1,)
        # the store keeps its sale and its redemption, anonymous; the till's links are gone
        assert db.query("SELECT store, inbox, member, value_cents FROM purchases") == [
            ("s1", None, None, 450)]
        assert db.query("SELECT code, inbox FROM redemptions") == [("CODE1", None)]
        assert db.query("SELECT * FROM members") == [] and db.query("SELECT * FROM loyalty_ids") == []
        assert db.one("SELECT count(*) FROM audit WHERE object = ?", (ERASED,))[0] >= 2  # type: ignore[index]
        assert db.one("SELECT inbox FROM shoppers WHERE inbox = ?", (keep["inbox"],)) is not None
        # the token is gone, the other shopper untouched; the admin's answer is a 404 now
        assert (await c.get(f"/api/shoppers/{inbox}/export", headers=me)).status_code == 401
        assert (await c.delete(f"/api/shoppers/{inbox}",
                               headers=bearer(token_for(db, "admin")))).status_code == 404
        assert (await c.get(f"/api/shoppers/{keep['inbox']}/export",
                            headers=bearer(keep["api_token"]))).status_code == 200
