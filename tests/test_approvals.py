"""Approval before going live (hq.approvals): four-eyes refuses self-approval, a rejected
campaign stays off, content edits need a new approval and pauses never do, and every
step is in the audit log with its comment."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
import pytest
from fastapi import FastAPI

from aislecast.kernel.campaign import Budget
from aislecast.kernel.errors import ConfigError
from aislecast.kernel.schema import Campaign, decode
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from hq.accounts import Accounts
from hq.api import create_app
from hq.approvals import ApprovalPolicy, digest
from hq.config import load_hq_config
from hq.db import HqDb
from hq.ingest import Ingest
from hq.service import HqService
from tests.harness import bearer, token_for


def _campaign(cid: str, *, status: str = "draft", title: str = "t") -> dict[str, object]:
    return {"id": cid, "name": cid, "stores": ["s1"], "status": status,
            "creatives": [{"id": "a", "title": title}]}


def _app(tmp_path: Path, policy: ApprovalPolicy) -> FastAPI:
    db = HqDb(f"sqlite:///{tmp_path}/hq.sqlite")
    service = HqService(db, Signer(load_or_create_signing_key(tmp_path / "k.pem")))
    return create_app(service, Ingest(db), approval=policy)


@pytest.fixture
async def four_eyes(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, dict[str, str]]]]:
    app = _app(tmp_path, ApprovalPolicy(campaigns="four_eyes", flash="four_eyes"))
    db = app.state.service.db
    who = {r: bearer(token_for(db, r)) for r in ("admin", "marketer", "approver")}
    who["store_staff"] = bearer(token_for(db, "store_staff", stores=["s1"]))
    who["approver2"] = bearer(token_for(db, "approver"))
    owner = next(t.owner for t in Accounts(db).tokens() if t.owner and t.owner.startswith("approver"))
    who["approver_again"] = bearer(Accounts(db).issue_token("personal", owner=owner)[1])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hq") as c:
        assert (await c.post("/api/stores", json={"id": "s1", "name": "x"},
                             headers=who["admin"])).status_code == 201
        yield c, who


async def _status(http: httpx.AsyncClient, cid: str, h: dict[str, str]) -> str:
    return str((await http.get(f"/api/campaigns/{cid}", headers=h)).json()["status"])


async def test_four_eyes_refuses_direct_live_saves_and_self_approval(
        four_eyes: tuple[httpx.AsyncClient, dict[str, dict[str, str]]]) -> None:
    http, who = four_eyes
    r = await http.post("/api/campaigns", json=_campaign("c1", status="live"), headers=who["admin"])
    assert r.status_code == 409 and r.json()["reason"] == "needs_approval", r.text
    assert "submit" in r.json()["detail"]
    r = await http.post("/api/campaigns", json=_campaign("c1"), headers=who["approver"])
    assert r.status_code == 201
    r = await http.post("/api/campaigns/c1/submit", json={"comment": "please"}, headers=who["approver"])
    assert r.status_code == 200 and r.json()["state"] == "submitted", r.text
    r = await http.post("/api/campaigns/c1/approve", json={}, headers=who["approver"])
    assert r.status_code == 403 and r.json()["reason"] == "four_eyes", r.text
    r = await http.post("/api/campaigns/c1/approve", json={}, headers=who["approver_again"])
    assert r.status_code == 403 and r.json()["reason"] == "four_eyes"  # one person, two tokens
    r = await http.post("/api/campaigns/c1/approve", json={}, headers=who["marketer"])
    assert r.status_code == 403 and r.json()["reason"] == "wrong_role"
    assert await _status(http, "c1", who["admin"]) == "draft"
    pending = (await http.get("/api/approvals", headers=who["marketer"])).json()
    assert [p["campaign"]["id"] for p in pending] == ["c1"]
    assert (await http.get("/api/approvals", headers=who["store_staff"])).status_code == 403
    r = await http.post("/api/campaigns/c1/approve", json={"comment": "fine by me"},
                        headers=who["approver2"])
    assert r.status_code == 200, r.text
    assert r.json()["campaign"]["status"] == "live" and r.json()["approval"]["state"] == "approved"
    assert await _status(http, "c1", who["admin"]) == "live"
    assert (await http.get("/api/approvals", headers=who["marketer"])).json() == []
    entries = (await http.get("/api/audit", params={"object": "campaign:c1"}, headers=who["admin"])).json()
    actions = [e["action"] for e in entries]
    assert actions == ["campaign.save", "approval.submit", "approval.approve"]
    approve = entries[-1]
    assert approve["before"]["approval"]["state"] == "submitted"
    assert approve["before"]["campaign"]["status"] == "draft"
    assert approve["after"]["approval"]["decision_comment"] == "fine by me"
    assert approve["after"]["campaign"]["status"] == "live"
    assert entries[1]["after"]["approval"]["comment"] == "please"


async def test_rejected_stays_off_until_submitted_again(
        four_eyes: tuple[httpx.AsyncClient, dict[str, dict[str, str]]]) -> None:
    http, who = four_eyes
    await http.post("/api/campaigns", json=_campaign("c2"), headers=who["marketer"])
    await http.post("/api/campaigns/c2/submit", headers=who["marketer"])
    r = await http.post("/api/campaigns/c2/reject", json={"comment": " "}, headers=who["approver"])
    assert r.status_code == 422 and r.json()["reason"] == "bad_comment"
    r = await http.post("/api/campaigns/c2/reject", json={"comment": "tone is off"},
                        headers=who["approver"])
    assert r.status_code == 200 and r.json()["state"] == "rejected", r.text
    r = await http.post("/api/campaigns/c2/approve", headers=who["approver2"])
    assert r.status_code == 409 and r.json()["reason"] == "not_submitted"
    r = await http.put("/api/campaigns/c2", json=_campaign("c2", status="live"), headers=who["admin"])
    assert r.status_code == 409 and r.json()["reason"] == "needs_approval"
    r = await http.post("/api/campaigns/c2/resume", headers=who["approver"])
    assert r.status_code == 409 and r.json()["reason"] == "needs_approval"
    assert await _status(http, "c2", who["admin"]) == "draft"
    rejected = (await http.get("/api/approvals", params={"state": "rejected"},
                               headers=who["marketer"])).json()
    assert [p["approval"]["decision_comment"] for p in rejected] == ["tone is off"]
    entries = (await http.get("/api/audit", params={"object": "campaign:c2"}, headers=who["admin"])).json()
    assert entries[-1]["action"] == "approval.reject"
    assert entries[-1]["before"]["state"] == "submitted"
    assert entries[-1]["after"]["decision_comment"] == "tone is off"
    # fixed and submitted again: a new round, approved by someone else
    await http.put("/api/campaigns/c2", json=_campaign("c2", title="better"), headers=who["marketer"])
    assert (await http.post("/api/campaigns/c2/submit", headers=who["marketer"])).status_code == 200
    assert (await http.post("/api/campaigns/c2/approve", headers=who["approver"])).status_code == 200
    assert await _status(http, "c2", who["admin"]) == "live"


async def test_an_edit_after_submit_or_approval_needs_a_new_approval_and_a_pause_never_does(
        four_eyes: tuple[httpx.AsyncClient, dict[str, dict[str, str]]]) -> None:
    http, who = four_eyes
    await http.post("/api/campaigns", json=_campaign("c3"), headers=who["marketer"])
    await http.post("/api/campaigns/c3/submit", headers=who["marketer"])
    await http.put("/api/campaigns/c3", json=_campaign("c3", title="sneaky"), headers=who["marketer"])
    r = await http.post("/api/campaigns/c3/approve", headers=who["approver"])
    assert r.status_code == 409 and r.json()["reason"] == "changed_since_submit"
    await http.post("/api/campaigns/c3/submit", headers=who["marketer"])
    assert (await http.post("/api/campaigns/c3/approve", headers=who["approver"])).status_code == 200
    # pausing (here by a marketer, through a save) needs nobody; resuming the same content neither
    r = await http.put("/api/campaigns/c3", json=_campaign("c3", status="paused", title="sneaky"),
                       headers=who["marketer"])
    assert r.status_code == 200 and r.json()["status"] == "paused", r.text
    r = await http.post("/api/campaigns/c3/resume", headers=who["approver"])
    assert r.status_code == 200 and r.json()["status"] == "live", r.text
    # new content on a live campaign: a marketer may not, an admin's save waits for approval
    r = await http.put("/api/campaigns/c3", json=_campaign("c3", status="live", title="new"),
                       headers=who["marketer"])
    assert r.status_code == 403 and r.json()["reason"] == "needs_approver"
    r = await http.put("/api/campaigns/c3", json=_campaign("c3", status="live", title="new"),
                       headers=who["admin"])
    assert r.status_code == 409 and r.json()["reason"] == "needs_approval"
    assert (await http.get("/api/campaigns/c3", headers=who["admin"])).json()["creatives"][0][
        "title"] == "sneaky"  # what was approved is what stays on air


async def test_a_flash_under_four_eyes_is_a_draft_until_a_second_person_approves(
        four_eyes: tuple[httpx.AsyncClient, dict[str, dict[str, str]]]) -> None:
    http, who = four_eyes
    r = await http.post("/api/flash", json={"title": "Umbrellas -50 %", "stores": ["s1"], "id": "flash-1"},
                        headers=who["admin"])
    assert r.status_code == 202 and r.json()["status"] == "draft", r.text
    r = await http.post("/api/campaigns/flash-1/approve", headers=who["admin"])
    assert r.status_code == 403 and r.json()["reason"] == "four_eyes"
    r = await http.post("/api/campaigns/flash-1/approve", headers=who["approver"])
    assert r.status_code == 200 and r.json()["campaign"]["status"] == "live", r.text
    assert r.json()["campaign"]["trigger"]["kind"] == "flash"


async def test_single_lets_an_approver_save_live_and_records_it(tmp_path: Path) -> None:
    app = _app(tmp_path, ApprovalPolicy(campaigns="single", flash="single"))
    db = app.state.service.db
    admin, marketer, approver = (bearer(token_for(db, r)) for r in ("admin", "marketer", "approver"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hq") as http:
        await http.post("/api/stores", json={"id": "s1", "name": "x"}, headers=admin)
        r = await http.post("/api/campaigns", json=_campaign("c4", status="live"), headers=marketer)
        assert r.status_code == 403 and r.json()["reason"] == "needs_approver"
        r = await http.post("/api/campaigns", json=_campaign("c4", status="live"), headers=approver)
        assert r.status_code == 201, r.text
        approved = (await http.get("/api/approvals", params={"state": "approved"}, headers=admin)).json()
        assert [(a["campaign"]["id"], a["approval"]["decided_by"].startswith("user:"))
                for a in approved] == [("c4", True)]
        r = await http.post("/api/flash", json={"title": "now", "stores": ["s1"]}, headers=approver)
        assert r.status_code == 201 and r.json()["status"] == "live"
        r = await http.get("/api/approvals", params={"state": "bogus"}, headers=admin)
        assert r.status_code == 422


def test_the_approved_content_ignores_status_grants_and_number_spelling() -> None:
    base = decode(msgspec.json.encode(_campaign("c5") | {"validity_s": 600}), Campaign)
    same = msgspec.structs.replace(base, status="live", validity_s=600.0,
                                   budget=Budget("impressions", 10, {"gw-1": 5}))
    assert digest(msgspec.structs.replace(base, budget=Budget("impressions", 10))) == digest(same)
    assert digest(base) != digest(msgspec.structs.replace(base, name="other"))


def test_a_feed_rule_that_matches_nothing_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "hq.toml"
    cfg.write_text('[[feeds.rules]]\nname = "r"\nkeywords = ["rain"]\nsentiment_min = 0.5\n'
                   'sentiment_max = -0.5\n[feeds.rules.flash]\ntitle = "t"\nstores = ["s1"]\n')
    with pytest.raises(ConfigError, match=r"feeds\.rules\[0\]"):
        load_hq_config(str(cfg))
    cfg.write_text('[approval]\nflash = "two_eyes"\n')
    with pytest.raises(ConfigError, match="approval"):
        load_hq_config(str(cfg))


async def test_a_live_campaign_is_not_submitted_so_a_rejection_always_leaves_it_off(
        four_eyes: tuple[httpx.AsyncClient, dict[str, dict[str, str]]]) -> None:
    http, who = four_eyes
    await http.post("/api/campaigns", json=_campaign("c6"), headers=who["marketer"])
    await http.post("/api/campaigns/c6/submit", headers=who["marketer"])
    assert (await http.post("/api/campaigns/c6/approve", headers=who["approver"])).status_code == 200
    r = await http.post("/api/campaigns/c6/submit", headers=who["marketer"])
    assert r.status_code == 409 and r.json()["reason"] == "already_live"
    r = await http.post("/api/campaigns/c6/submit", content=b"[1]", headers=who["marketer"])
    assert r.status_code == 422  # a body of the wrong shape, before anything else
    r = await http.post("/api/campaigns/nope/submit", headers=who["marketer"])
    assert r.status_code == 404


async def test_every_round_is_pushed_to_the_consoles_that_see_its_stores(tmp_path: Path) -> None:
    """Approvals.listeners: submit, approve and reject each tell the live hub (kind
    ``approval``, the campaign's id); a console of another store hears none of it."""
    app = _app(tmp_path, ApprovalPolicy())
    db, hub = app.state.service.db, app.state.live
    heard: list[tuple[str, str]] = []
    app.state.approvals.listeners.append(lambda a, c: heard.append((a.state, c.id)))
    everyone, elsewhere = hub.open(None), hub.open(frozenset({"s2"}))
    s_all, s_other = hub.stream(everyone), hub.stream(elsewhere)
    for s in (s_all, s_other):
        assert b"event: hello" in await asyncio.wait_for(anext(s), 10)
    who = {r: bearer(token_for(db, r)) for r in ("admin", "marketer", "approver")}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hq") as c:
        await c.post("/api/stores", json={"id": "s1", "name": "x"}, headers=who["admin"])
        for cid in ("p1", "p2"):
            await c.post("/api/campaigns", json=_campaign(cid), headers=who["marketer"])
            r = await c.post(f"/api/campaigns/{cid}/submit", headers=who["marketer"])
            assert r.status_code == 200, r.text
        assert (await c.post("/api/campaigns/p1/approve", json={"comment": "ok"},
                             headers=who["approver"])).status_code == 200
        assert (await c.post("/api/campaigns/p2/reject", json={"comment": "no"},
                             headers=who["approver"])).status_code == 200
    assert heard == [("submitted", "p1"), ("submitted", "p2"), ("approved", "p1"), ("rejected", "p2")]
    kinds: dict[str, set[str]] = {}
    async with asyncio.timeout(10):
        while "approval" not in kinds or kinds["approval"] != {"p1", "p2"}:
            frame = await anext(s_all)
            kind, data = frame.split(b"\n", 2)[:2]
            body = msgspec.json.decode(data.removeprefix(b"data: "))
            kinds.setdefault(kind.removeprefix(b"event: ").decode(), set()).update(body["campaigns"])
    assert hub.stats.notifications.get("approval", 0) >= 1
    assert not elsewhere.pending and not elsewhere.wake.is_set()  # s2's console: nothing
    hub.close()
