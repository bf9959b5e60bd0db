"""Till integration (hq/till.py, aislecast/kernel/redeem.py): a real gateway mints a
single-use code from its bundle's store key, a real HQ verifies and consumes it once;
forged, expired, used, foreign and unknown-till redemptions are refused with their
reason and counted; a replayed till transaction gets the same answer; purchase lines
of unknown members are kept as anonymous sales."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aislecast.apps.till_client import TillClient, TillRefusal
from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.campaign import Campaign, Creative, Trigger
from aislecast.kernel.mqtt import MqttSettings
from aislecast.kernel.redeem import mint_code, offer_id_for, parse_code
from aislecast.kernel.schema import Event, Store
from edge.simstore import SimShopper
from hq.accounts import Accounts
from hq.analytics import campaign_stats
from hq.consent import PURPOSES
from hq.server import HqServer
from hq.till import TillRefused
from tests.harness import STORE, enter_campaign, stack, token_for, until

OTHER = "store-o"


def _campaign(cid: str, stores: list[str]) -> Campaign:
    return Campaign(id=cid, name=cid, stores=stores, trigger=Trigger(kind="enter", zones=["z"]),
                    creatives=[Creative(id="a", title="A"), Creative(id="b", title="B")])


@contextlib.asynccontextmanager
async def _hq(broker: MosquittoProcess, work: Path) -> AsyncIterator[HqServer]:
    async with HqServer(db_url=f"sqlite:///{work}/hq.sqlite", key_path=work / "hq.pem",
                        mqtt=MqttSettings(port=broker.port), http_port=0, learn_every_s=0) as hq:
        for s in (STORE, OTHER):
            hq.service.upsert_store(Store(id=s, name=s, tz="UTC"))
        hq.service.upsert_campaign(_campaign("c1", [STORE]))
        hq.service.upsert_campaign(_campaign("c2", [OTHER]))
        yield hq


def _key(hq: HqServer, store: str) -> bytes:
    """The store's key as its gateways get it: from the bundle HQ builds for it."""
    key = hq.service.build_bundle(store).redeem_key
    assert key is not None
    return bytes.fromhex(key)


def _till(hq: HqServer, store: str = STORE) -> TillClient:
    return TillClient(f"http://127.0.0.1:{hq.http_port}", token_for(hq.db, "till", stores=[store]))


async def _refusal(call: Any) -> TillRefusal:
    with pytest.raises(TillRefusal) as err:
        await asyncio.to_thread(call)
    return err.value


def _till_stats(hq: HqServer) -> dict[str, Any]:
    return hq.metrics.snapshot()["till"]


async def test_gateway_code_redeemed_once_at_the_till(broker: MosquittoProcess,
                                                      tmp_path: Path) -> None:
    async with stack(broker.port, tmp_path, [enter_campaign("entrance")]) as st:
        e = st.hq.service.enroll(list(PURPOSES), [STORE])
        await st.hq.service.publish_bundle(STORE)
        gw = await st.start_gateway()
        phone = st.phone(e)
        async with phone:
            await phone.link.wait_connected(10)
            st.sim.add_shopper(SimShopper(e.inbox, phone.token, [("entrance", 3.0)],
                                          start=time.monotonic(), speed_mps=5.0))
            await until(lambda: phone.stats.offers_received >= 1)
            [offer] = phone.offers.values()
            assert offer.redeem_code is not None and len(offer.redeem_code) == 29  # 6 x 4 + dashes
            assert offer.id.startswith(parse_code(offer.redeem_code).serial.hex())
            await until(lambda: st.hq.db.one("SELECT reason FROM events WHERE kind ="
                                             " 'offer_published'") == ("till_code",))
            till = TillClient(st.url, st.token("till", stores=[STORE]))
            # typed by a cashier: lower case, no dashes
            got = await asyncio.to_thread(till.redeem, offer.redeem_code.lower().replace("-", ""),
                                          "txn-1")
            assert (got["offer"], got["inbox"], got["campaign"]) == (offer.id, e.inbox,
                                                                     "c-entrance")
            assert got["replay"] is False
            again = await asyncio.to_thread(till.redeem, offer.redeem_code, "txn-1")
            assert again["replay"] is True and again["redeemed_at"] == got["redeemed_at"]
            used = await _refusal(lambda: till.redeem(offer.redeem_code or "", "txn-2"))
            assert (used.status, used.reason) == (409, "used")
            # the phone also says it redeemed it: the till's redemption is the one counted
            await phone.feedback(offer, "redeemed")
            await until(lambda: st.hq.db.one("SELECT count(*) FROM events WHERE kind ="
                                             " 'offer_redeemed'") == (2,))
            [stats] = campaign_stats(st.hq.db, "c-entrance")
            assert stats.redemptions == 1
            assert _till_stats(st.hq)["redeemed"] == 1
            assert _till_stats(st.hq)["replays"] == 1
            assert _till_stats(st.hq)["refused"] == {"used": 1}
            assert gw.parts.bundles.current is not None


async def test_forged_expired_foreign_and_unknown_till_refused_and_counted(
        broker: MosquittoProcess, tmp_path: Path) -> None:
    async with _hq(broker, tmp_path) as hq:
        till = _till(hq)
        now = time.time()
        good = mint_code(_key(hq, STORE), store=STORE, campaign="c1", variant="b",
                         serial=b"\x01\x02\x03\x04\x05", expires_at=now + 600)
        # one letter changed: still a well-formed code, its tag no longer verifies
        flipped = good[:-1] + ("A" if good[-1] != "A" else "B")
        stale = mint_code(_key(hq, STORE), store=STORE, campaign="c1", variant="a",
                          serial=b"\x09" * 5, expires_at=now - 120)
        # a stolen store-o gateway mints a "store-t" code with the key it holds
        foreign = mint_code(_key(hq, OTHER), store=OTHER, campaign="c2", variant="a",
                            serial=b"\x07" * 5, expires_at=now + 600)
        posing = mint_code(_key(hq, OTHER), store=STORE, campaign="c1", variant="a",
                           serial=b"\x08" * 5, expires_at=now + 600)
        cases = [("not-a-code", "forged", 422), (flipped, "forged", 422),
                 (posing, "forged", 422), (stale, "expired", 410),
                 (foreign, "foreign_store", 403)]
        for code, reason, status in cases:
            why = await _refusal(lambda c=code: till.redeem(c, "t-bad"))  # type: ignore[misc]
            assert (why.reason, why.status) == (reason, status), code
        lost = await _refusal(lambda: till.redeem(good, "t-1", store=OTHER))
        assert (lost.reason, lost.status) == ("unknown_till", 403)
        got = await asyncio.to_thread(till.redeem, good, "t-1")  # the witness: a good one
        assert (got["campaign"], got["variant"], got["offer"]) == ("c1", "b", None)
        assert _till_stats(hq)["refused"] == {"forged": 3, "expired": 1, "foreign_store": 1,
                                              "unknown_till": 1}
        assert _till_stats(hq)["redeemed"] == 1
        assert hq.db.query("SELECT count(*) FROM redemptions") == [(1,)]
        exposition = hq.metrics.exposition().decode()
        assert 'aislecast_hq_till_refused_total{reason="forged"} 3' in exposition
        # a staff member's token is not a till
        staff = TillClient(till.hq, token_for(hq.db, "store_staff", stores=[STORE]))
        assert (await _refusal(lambda: staff.redeem(good, "t-9"))).status == 403


async def test_redemption_before_the_batch_is_bound_when_the_batch_comes(
        broker: MosquittoProcess, tmp_path: Path) -> None:
    async with _hq(broker, tmp_path) as hq:
        serial = b"\xaa\xbb\xcc\xdd\xee"
        oid = offer_id_for(serial, "0" * 22)
        code = mint_code(_key(hq, STORE), store=STORE, campaign="c1", variant="a",
                         serial=serial, expires_at=time.time() + 600)
        got = await asyncio.to_thread(_till(hq).redeem, code, "t-early")
        assert got["offer"] is None and got["inbox"] is None
        assert _till_stats(hq)["unbound"] == 1
        await hq.ingest.astore_events([Event(id="p1", kind="offer_published", ts=time.time(),
                                             store=STORE, campaign="c1", variant="a",
                                             offer=oid, inbox="inbox-9", reason="till_code")])
        assert hq.db.query("SELECT offer, inbox FROM redemptions") == [(oid, "inbox-9")]
        assert hq.db.query("SELECT offer, inbox FROM events WHERE kind = 'offer_redeemed'") == [
            (oid, "inbox-9")]
        assert _till_stats(hq)["bound_late"] == 1


async def test_purchases_known_unknown_member_replay_and_limits(
        broker: MosquittoProcess, tmp_path: Path) -> None:
    async with _hq(broker, tmp_path) as hq:
        e = hq.service.enroll(list(PURPOSES), [STORE])
        wallet = token_for(hq.db, "wallet")
        import httpx  # noqa: PLC0415

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hq.http_port}") as http:
            r = await http.post(f"/api/shoppers/{e.inbox}/member",
                                headers={"Authorization": f"Bearer {wallet}"})
            member = r.json()["member"]
            assert r.status_code == 200 and member.startswith("M") and len(member) == 17
            r2 = await http.post("/api/shoppers/nobody/member",
                                 headers={"Authorization": f"Bearer {wallet}"})
            assert r2.status_code == 404
            other = hq.service.enroll(list(PURPOSES), [STORE]).inbox
            card = {"loyalty": "CARD-0042"}
            auth = {"Authorization": f"Bearer {wallet}"}
            linked = [(await http.post(f"/api/shoppers/{who}/loyalty", json=card, headers=auth))
                      for who in (e.inbox, e.inbox, other)]
            assert [r.status_code for r in linked] == [201, 200, 409]
            assert linked[2].json()["reason"] == "loyalty_taken"
        till = _till(hq)
        line = {"product": "milk-1l", "category": "dairy", "quantity": 2, "value_cents": 258}
        known = await asyncio.to_thread(till.purchase, "b-1", [line], member=member)
        assert (known["stored"], known["member"]) == (1, "known")
        stranger = await asyncio.to_thread(till.purchase, "b-2", [line, {**line, "product": None}],
                                           member="MUNKNOWNMEMBER000")
        assert (stranger["stored"], stranger["member"]) == (2, "unknown")
        by_card = await asyncio.to_thread(till.purchase, "b-0", [line], member="CARD-0042")
        assert by_card["member"] == "known"
        replay = await asyncio.to_thread(till.purchase, "b-1", [line], member=member)
        assert replay["stored"] == 0
        rows = hq.db.query("SELECT txn, inbox, member, store, quantity, value_cents FROM purchases"
                           " ORDER BY txn, line")
        assert rows == [("b-0", e.inbox, "CARD-0042", STORE, 2, 258),
                        ("b-1", e.inbox, member, STORE, 2, 258),
                        ("b-2", None, "MUNKNOWNMEMBER000", STORE, 2, 258),
                        ("b-2", None, "MUNKNOWNMEMBER000", STORE, 2, 258)]
        big = await _refusal(lambda: till.purchase("b-3", [line] * 501))
        assert (big.status, big.reason) == (413, "too_many_lines")
        bad = await _refusal(lambda: till.purchase("b-4", [{**line, "quantity": 0}]))
        assert (bad.status, bad.reason) == (422, "invalid_body")
        empty = await _refusal(lambda: till.purchase("b-5", [{"quantity": 1, "value_cents": 1}]))
        assert empty.status == 422
        stats = _till_stats(hq)
        assert (stats["purchase_lines"], stats["anonymous_lines"],
                stats["purchase_duplicates"]) == (4, 2, 1)


async def _unlink(http: Any, inbox: str, card: str, headers: dict[str, str]) -> Any:
    return await http.request("DELETE", f"/api/shoppers/{inbox}/loyalty", json={"loyalty": card},
                              headers=headers)


async def test_unlinking_a_loyalty_id_makes_later_sales_anonymous(
        broker: MosquittoProcess, tmp_path: Path) -> None:
    """DELETE /api/shoppers/{inbox}/loyalty {"loyalty"}: 204 for the shopper's own number,
    404 not_linked (one body) for a number of no one and of someone else, audited without
    the number, refusals counted; a purchase carrying it afterwards is the store's sale,
    not the shopper's, while the one before stays theirs."""
    import httpx  # noqa: PLC0415

    async with _hq(broker, tmp_path) as hq:
        e, other = (hq.service.enroll(list(PURPOSES), [STORE]).inbox for _ in range(2))
        wallet = {"Authorization": f"Bearer {token_for(hq.db, 'wallet')}"}
        admin = {"Authorization": f"Bearer {token_for(hq.db, 'admin')}"}
        own = {"Authorization": "Bearer "
               + Accounts(hq.db).issue_token("shopper", name="shopper", owner=e)[1]}
        staff = {"Authorization": f"Bearer {token_for(hq.db, 'store_staff', stores=[STORE])}"}
        till = _till(hq)
        line = {"product": "milk-1l", "category": "dairy", "quantity": 1, "value_cents": 129}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hq.http_port}") as http:
            for who, card in ((e, "CARD-7"), (other, "CARD-8"), (e, "CARD-9")):
                r = await http.post(f"/api/shoppers/{who}/loyalty", json={"loyalty": card},
                                    headers=wallet)
                assert r.status_code == 201, r.text
            before = await asyncio.to_thread(till.purchase, "u-1", [line], member="CARD-7")
            assert before["member"] == "known"
            for creds in (own, staff):  # the link's callers only: wallet token and admins
                r = await _unlink(http, e, "CARD-7", creds)
                assert (r.status_code, r.json()["reason"]) == (403, "wrong_role"), r.text
            theirs = await _unlink(http, e, "CARD-8", wallet)
            nobodys = await _unlink(http, e, "CARD-0", wallet)
            assert theirs.status_code == nobodys.status_code == 404
            assert theirs.json()["reason"] == "not_linked" and theirs.content == nobodys.content
            bad = await _unlink(http, e, "no spaces", wallet)
            assert (bad.status_code, bad.json()["reason"]) == (422, "invalid_body")
            gone = await _unlink(http, e, "CARD-7", wallet)
            assert (gone.status_code, gone.content) == (204, b"")
            again = await _unlink(http, e, "CARD-7", wallet)
            assert (again.status_code, again.json()["reason"]) == (404, "not_linked")
            by_admin = await _unlink(http, e, "CARD-9", admin)
            assert by_admin.status_code == 204
            exported = (await http.get(f"/api/shoppers/{e}/export", headers=wallet)).json()
        assert exported["loyalty_ids"] == []
        assert hq.db.query("SELECT loyalty, inbox FROM loyalty_ids") == [("CARD-8", other)]
        after = await asyncio.to_thread(till.purchase, "u-2", [line], member="CARD-7")
        assert after["member"] == "unknown"
        rows = hq.db.query("SELECT txn, store, inbox FROM purchases ORDER BY txn")
        assert rows == [("u-1", STORE, e), ("u-2", STORE, None)]  # both the store's sales
        assert _till_stats(hq)["anonymous_lines"] == 1
        audits = hq.db.query("SELECT actor, object, coalesce(after, '') FROM audit"
                             " WHERE action = 'shopper.loyalty_unlink' ORDER BY ts")
        assert [a[1] for a in audits] == [f"shopper:{e}"] * 2
        assert not hq.db.query("SELECT 1 FROM audit WHERE object LIKE '%CARD-%'"
                               " OR after LIKE '%CARD-%' OR before LIKE '%CARD-%'")
        refusals = hq.metrics.snapshot()["auth"]["refusals"]
        assert refusals["not_linked"] == 3 and refusals["wrong_role"] == 2


async def test_a_replayed_transaction_keeps_its_answer_after_the_code_expires(
        broker: MosquittoProcess, tmp_path: Path) -> None:
    async with _hq(broker, tmp_path) as hq:
        desk = hq.app.state.till
        now = time.time()
        code = mint_code(_key(hq, STORE), store=STORE, campaign="c1", variant="a",
                         serial=b"\x05" * 5, expires_at=now + 60)
        first, event = desk.redeem(code, store=STORE, till="token:t", txn="x1", now=now)
        later, again = desk.redeem(code, store=STORE, till="token:t", txn="x1", now=now + 3600)
        assert later.replay and later.redeemed_at == first.redeemed_at and again.id == event.id
        with pytest.raises(TillRefused) as other:
            desk.redeem(code, store=STORE, till="token:t", txn="x2", now=now + 3600)
        assert other.value.reason == "used"
        unused = mint_code(_key(hq, STORE), store=STORE, campaign="c1", variant="a",
                           serial=b"\x06" * 5, expires_at=now + 60)
        with pytest.raises(TillRefused) as late:
            desk.redeem(unused, store=STORE, till="token:t", txn="x3", now=now + 3600)
        assert late.value.reason == "expired"
