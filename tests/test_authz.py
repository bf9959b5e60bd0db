"""HQ's HTTP trust boundary: every /api route needs a credential and the right role,
store staff see only their stores, coupon codes stay with those who need them, bodies
over the limit are 413, and every state change is in the audit log."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from aislecast.kernel.signing import Signer, load_or_create_signing_key
from hq.accounts import TOKEN_CACHE_S, Accounts
from hq.api import create_app
from hq.authz import ROUTE_ROLES, markdown_table
from hq.db import HqDb
from hq.ingest import Ingest
from hq.service import HqService
from hq.shortlink_store import DbShortLinkStore, make_mint_router
from tests.fakeclock import FakeClock
from tests.harness import bearer, token_for

ROOT = Path(__file__).resolve().parent.parent


def _campaign(cid: str, store: str, *, status: str = "live", coupon: str | None = None) -> dict[str, object]:
    creative: dict[str, object] = {"id": "a", "title": "t"}
    if coupon:
        creative |= {"format": "coupon", "coupon_code": coupon}
    return {"id": cid, "name": cid, "stores": [store], "status": status, "creatives": [creative]}


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    db = HqDb(f"sqlite:///{tmp_path}/hq.sqlite")
    service = HqService(db, Signer(load_or_create_signing_key(tmp_path / "k.pem")))
    app = create_app(service, Ingest(db), max_body_bytes=4096)
    app.include_router(make_mint_router(DbShortLinkStore(db, lambda _: None)))
    return app


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hq") as c:
        yield c


def _db(app: FastAPI) -> HqDb:
    db = app.state.service.db
    assert isinstance(db, HqDb)
    return db


def _flat(routes: list[Any]) -> Iterator[Any]:
    """Every route, inside included routers too (FastAPI nests them in new versions)."""
    for r in routes:
        sub = getattr(r, "original_router", None)
        yield from _flat(sub.routes) if sub is not None else [r]


def test_every_api_route_is_in_the_role_table(app: FastAPI) -> None:
    routes = {(m, r.path) for r in _flat(app.routes) if isinstance(r, APIRoute)
              and r.path.startswith("/api/") for m in r.methods}
    assert ("POST", "/api/campaigns") in routes  # the walk found the API
    assert routes - set(ROUTE_ROLES) == set(), "add these to hq.authz.ROUTE_ROLES"
    assert set(ROUTE_ROLES) - routes == set(), "stale hq.authz.ROUTE_ROLES entries"


def test_the_architecture_doc_has_the_role_table() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert markdown_table() in text, "paste hq.authz.markdown_table() into docs/architecture.md"


async def test_anonymous_and_bad_tokens_get_401_and_public_routes_stay_open(
        app: FastAPI, http: httpx.AsyncClient) -> None:
    admin = bearer(token_for(_db(app), "admin"))
    assert (await http.post("/api/stores", json={"id": "s1", "name": "x"}, headers=admin)).status_code == 201
    for method, path in [("GET", "/api/campaigns"), ("POST", "/api/stores"), ("GET", "/api/nope"),
                         ("GET", "/api/keys/bundle"), ("GET", "/api/audit")]:
        r = await http.request(method, path)
        assert r.status_code == 401, (method, path)
        assert r.json()["reason"] == "no_credential" and "Bearer" in r.json()["detail"]
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert (await http.get("/api/campaigns", headers=bearer("ac_123_nope"))).json()["reason"] == "bad_token"
    assert (await http.get("/api/campaigns", headers={"Authorization": "Basic eA=="})).status_code == 401
    assert (await http.get("/health")).status_code in {200, 503}  # open: no MQTT link here
    assert (await http.get("/metrics")).status_code == 200
    snap = app.state.metrics.snapshot()
    assert snap["auth"]["refusals"]["no_credential"] == 5


async def test_roles_are_checked_and_revoked_tokens_stop_working(
        app: FastAPI, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    db = _db(app)
    analyst = token_for(db, "analyst")
    assert (await http.get("/api/campaigns", headers=bearer(analyst))).status_code == 200
    with caplog.at_level(logging.WARNING, logger="aislecast.hq.refusals"):
        r = await http.post("/api/stores", json={"id": "s1", "name": "x"}, headers=bearer(analyst))
    assert r.status_code == 403 and r.json()["reason"] == "wrong_role"
    assert "a analyst may not POST /api/stores" in r.json()["detail"]
    refusals = [rec for rec in caplog.records if "http refused" in rec.getMessage()]
    assert len(refusals) == 1 and getattr(refusals[0], "caller", "").startswith("token:")  # once, who
    wallet = token_for(db, "wallet")
    assert (await http.post("/api/shoppers", json={}, headers=bearer(wallet))).status_code == 201
    assert (await http.get("/api/campaigns", headers=bearer(wallet))).status_code == 403
    accounts = Accounts(db)
    tid = next(t.id for t in accounts.tokens() if t.kind == "wallet")
    accounts.revoke_token(tid)
    assert (await http.post("/api/shoppers", json={}, headers=bearer(wallet))).status_code == 401
    name = next(u.name for u in accounts.users() if u.role == "analyst")
    accounts.disable_user(name)  # a disabled user's personal tokens stop too
    assert (await http.get("/api/campaigns", headers=bearer(analyst))).status_code == 401


async def test_marketers_write_drafts_and_approvers_make_them_live(
        app: FastAPI, http: httpx.AsyncClient) -> None:
    db = _db(app)
    admin, marketer, approver = (bearer(token_for(db, r)) for r in ("admin", "marketer", "approver"))
    await http.post("/api/stores", json={"id": "s1", "name": "x"}, headers=admin)
    r = await http.post("/api/campaigns", json=_campaign("c1", "s1"), headers=marketer)
    assert r.status_code == 403 and r.json()["reason"] == "needs_approver"
    draft = _campaign("c1", "s1", status="draft")
    assert (await http.post("/api/campaigns", json=draft, headers=marketer)).status_code == 201
    r = await http.put("/api/campaigns/c1", json=draft | {"status": "live"}, headers=marketer)
    assert r.status_code == 403
    assert (await http.put("/api/campaigns/c1", json=draft | {"status": "live"},
                           headers=approver)).status_code == 200
    # a live campaign cannot be rewritten by a marketer (the phishing-link attack)
    r = await http.put("/api/campaigns/c1", json=draft | {"name": "evil"}, headers=marketer)
    assert r.status_code == 403
    assert (await http.post("/api/campaigns/c1/resume", headers=marketer)).status_code == 403
    assert (await http.post("/api/campaigns/c1/resume", headers=approver)).json()["status"] == "live"
    # (pause needs the MQTT link: tests/test_console.py pauses through the browser)


async def test_store_staff_see_only_their_stores_and_no_coupon_codes(
        app: FastAPI, http: httpx.AsyncClient) -> None:
    db = _db(app)
    admin = bearer(token_for(db, "admin"))
    for sid in ("s1", "s2"):
        await http.post("/api/stores", json={"id": sid, "name": sid}, headers=admin)
        r = await http.post("/api/campaigns", json=_campaign(f"c-{sid}", sid, coupon="SECRET-42"),
                            headers=admin)
        assert r.status_code == 201, r.text
    staff = bearer(token_for(db, "store_staff", stores=["s1"]))
    listed = (await http.get("/api/campaigns", headers=staff)).json()
    assert [c["id"] for c in listed] == ["c-s1"]
    assert listed[0]["creatives"][0]["coupon_code"] == "[hidden]"
    mine = await http.get("/api/campaigns/c-s1", headers=staff)
    other = await http.get("/api/campaigns/c-s2", headers=staff)
    missing = await http.get("/api/campaigns/none", headers=staff)
    assert mine.status_code == 200
    assert other.status_code == missing.status_code == 404
    assert other.json()["detail"].replace("c-s2", "X") == missing.json()["detail"].replace("none", "X")
    stores = (await http.get("/api/console/stores", headers=staff)).json()["stores"]
    assert [s["id"] for s in stores] == ["s1"]
    rows = (await http.get("/api/console/campaigns", headers=staff)).json()["campaigns"]
    assert [r["id"] for r in rows] == ["c-s1"]
    assert (await http.get("/api/campaigns/c-s2", headers=admin)).json()[
        "creatives"][0]["coupon_code"] == "SECRET-42"
    link = {"url": "https://shop.example/p", "tag": "T-1"}
    assert (await http.post("/api/shortlinks", json=link | {"store": "s1"}, headers=staff)).status_code == 201
    assert (await http.post("/api/shortlinks", json=link | {"store": "s2"}, headers=staff)).status_code == 403
    made = (await http.post("/api/shortlinks", json=link | {"store": "s2"}, headers=admin)).json()
    assert (await http.get(f"/api/shortlinks/{made['code']}", headers=staff)).status_code == 404


async def test_state_changes_are_audited_with_before_and_after(
        app: FastAPI, http: httpx.AsyncClient) -> None:
    db = _db(app)
    admin = bearer(token_for(db, "admin"))
    actor = f"token:{Accounts(db).tokens()[0].id}"
    await http.post("/api/stores", json={"id": "s1", "name": "x"}, headers=admin)
    await http.post("/api/campaigns", json=_campaign("c1", "s1"), headers=admin)
    await http.put("/api/campaigns/c1", json=_campaign("c1", "s1", status="paused"), headers=admin)
    entries = (await http.get("/api/audit", params={"object": "campaign:c1"}, headers=admin)).json()
    assert [e["action"] for e in entries] == ["campaign.save", "campaign.update"]
    assert entries[0]["before"] is None and entries[0]["after"]["status"] == "live"
    assert entries[1]["before"]["status"] == "live" and entries[1]["after"]["status"] == "paused"
    assert {e["actor"] for e in entries} == {actor}
    later = (await http.get("/api/audit", params={"since": entries[1]["ts"]}, headers=admin)).json()
    assert [e["action"] for e in later] == ["campaign.update"]
    everything = (await http.get("/api/audit", headers=admin)).json()
    assert [e["object"] for e in everything] == ["store:s1", "campaign:c1", "campaign:c1"]
    assert app.state.metrics.snapshot()["auth"]["unaudited"] == 0
    analyst = bearer(token_for(db, "analyst"))
    assert (await http.get("/api/audit", headers=analyst)).status_code == 403


async def test_bodies_over_the_limit_are_413_with_or_without_content_length(
        app: FastAPI, http: httpx.AsyncClient) -> None:
    admin = bearer(token_for(_db(app), "admin"))
    # names are bounded (200 characters): JSON white space makes the body 3 KB instead
    near = b'{"id": "s1", "name": "' + b"x" * 200 + b'"' + b" " * 3000 + b"}"
    ok = await http.post("/api/stores", content=near,
                         headers={**admin, "content-type": "application/json"})
    assert ok.status_code == 201  # the witness: a body under the limit is read
    r = await http.post("/api/stores", content=b"{" + b" " * 5000 + b"}", headers=admin)
    assert r.status_code == 413 and r.json()["reason"] == "body_too_large"
    assert "max_body_bytes" in r.json()["detail"]
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:  # chunked: no Content-Length at all
        nonlocal sent
        for _ in range(100):
            sent += 1
            yield b" " * 1024

    r = await http.post("/api/campaigns", content=chunks(), headers=admin)
    assert r.status_code == 413
    assert sent < 100  # refused before the whole body was read
    snap = app.state.metrics.snapshot()
    assert snap["auth"]["refusals"]["body_too_large"] == 2
    assert snap["http"]["refusals"]["413"] == 2


async def test_openapi_declares_its_security_schemes(http: httpx.AsyncClient) -> None:
    doc = (await http.get("/openapi.json")).json()
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "session"}
    op = doc["paths"]["/api/campaigns"]["post"]
    assert op["security"] == [{"bearer": []}, {"session": []}]
    assert op["x-roles"] == ["admin", "approver", "marketer"]
    assert "security" not in doc["paths"]["/health"]["get"]


def _fits_refusal(body: Any) -> bool:
    """``body`` has the shape :data:`hq.openapi.REFUSAL_SCHEMA` declares."""
    detail = body.get("detail") if isinstance(body, dict) else None
    items = detail if isinstance(detail, list) else [detail]
    return all(isinstance(d, str) for d in items) and isinstance(body.get("reason", ""), str)


async def test_openapi_declares_each_refusal_with_the_body_it_really_has(
        app: FastAPI, http: httpx.AsyncClient) -> None:
    # make fuzz checks responses against the OpenAPI: a 422 whose detail is a string was
    # a schema violation against FastAPI's default HTTPValidationError, and 400/404 were
    # undeclared. Each refusal below is declared and its real body fits the schema.
    doc = (await http.get("/openapi.json")).json()
    assert doc["components"]["schemas"]["Refusal"]["required"] == ["detail"]
    # the bodies the handlers decode with msgspec are declared too, so a fuzzer sends them
    zone = doc["paths"]["/api/stores/{store_id}/zones"]["post"]["requestBody"]
    assert zone["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Zone"}
    assert "id" in doc["components"]["schemas"]["Zone"]["required"]
    assert "requestBody" in doc["paths"]["/api/shortlinks"]["post"]
    assert not any("x-components" in op for ops in doc["paths"].values() for op in ops.values())
    admin, marketer = bearer(token_for(_db(app), "admin")), bearer(token_for(_db(app), "marketer"))
    calls = [  # method, path template, path, query, headers, body, status
        ("GET", "/api/audit", "/api/audit", "limit=0", admin, None, 422),  # HQ's own words
        ("GET", "/api/audit", "/api/audit", "since=soon", admin, None, 422),  # a parameter's type
        ("GET", "/api/campaigns/{cid}", "/api/campaigns/nope", "", admin, None, 404),
        ("POST", "/api/stores", "/api/stores", "", admin, b"{", 400),
        ("GET", "/api/audit", "/api/audit", "", marketer, None, 403),
        ("GET", "/api/audit", "/api/audit", "", {}, None, 401),
    ]
    for method, template, path, query, headers, body, status in calls:
        r = await http.request(method, path, params=query or None, headers=headers, content=body)
        assert r.status_code == status, (path, query, r.text)
        assert _fits_refusal(r.json()), r.text
        declared = doc["paths"][template][method.lower()]["responses"][str(status)]
        assert declared["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Refusal"}
    ok = await http.get("/api/audit", params={"limit": 5}, headers=admin)
    assert ok.status_code == 200  # the witness: the same route with a good query answers


def test_a_remembered_token_honours_revocation_here_at_once_and_elsewhere_within_a_second(
        tmp_path: Path) -> None:
    clock = FakeClock()
    url = f"sqlite:///{tmp_path}/hq.sqlite"
    here, elsewhere = HqDb(url), HqDb(url)  # HQ, and `aislecast hq tokens revoke` in another process
    try:
        hq = Accounts(here, monotonic=clock.monotonic)
        tid, secret = hq.issue_token("wallet")
        tid2, secret2 = hq.issue_token("wallet")
        assert hq.token_principal(secret) is not None and hq.token_principal(secret2) is not None
        Accounts(here).revoke_token(tid)  # this process: every remembered token forgotten
        assert hq.token_principal(secret) is None
        assert hq.token_principal(secret2) is not None  # looked up again, still live
        Accounts(elsewhere).revoke_token(tid2)
        assert hq.token_principal(secret2) is not None  # remembered: the DB is not asked
        clock.advance(TOKEN_CACHE_S)
        assert hq.token_principal(secret2) is None
        _, soon = hq.issue_token("wallet", ttl_s=10)
        assert hq.token_principal(soon) is not None
        assert hq.token_principal(soon, now=time.time() + 11) is None  # expiry checked on a hit
    finally:
        here.close()
        elsewhere.close()
