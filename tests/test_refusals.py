"""HQ's refusals are clear: a method a path does not take is 405 with ``Allow``, an
unknown path 404, a served route missing from the role table 403 logged as an error,
a bad query parameter 422 in one line; repeated failed logins are refused with 429 and
``Retry-After`` per user and address, without locking the user out from elsewhere."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Response

from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from hq.accounts import Accounts
from hq.api import create_app
from hq.db import HqDb
from hq.ingest import Ingest
from hq.login_limits import LoginLimiter, LoginLimits
from hq.service import HqService
from tests.fakeclock import FakeClock
from tests.harness import Stack, bearer, stack, token_for

PASSWORD = "correct horse battery"  # noqa: S105 - a test user's


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    db = HqDb(f"sqlite:///{tmp_path}/hq.sqlite")
    return create_app(HqService(db, Signer(load_or_create_signing_key(tmp_path / "k.pem"))),
                      Ingest(db))


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hq") as c:
        yield c


def _admin(app: FastAPI) -> dict[str, str]:
    return bearer(token_for(app.state.service.db, "admin"))


def _refusals(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "http refused" and r.levelno == level]


async def test_a_method_the_path_does_not_take_is_405_with_allow(
        app: FastAPI, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    admin = _admin(app)
    with caplog.at_level(logging.WARNING):
        r = await http.delete("/api/campaigns/c1", headers=admin)
        head = await http.head("/api/me", headers=admin)
    assert r.status_code == 405 and r.headers["allow"] == "GET, PUT"
    assert r.json() == {"reason": "method_not_allowed",
                        "detail": "/api/campaigns/c1 does not take DELETE; it takes GET, PUT"}
    assert head.status_code == 405 and head.headers["allow"] == "GET"
    assert len(_refusals(caplog)) == 2  # once each, as warnings
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert app.state.metrics.snapshot()["auth"]["refusals"]["method_not_allowed"] == 2
    assert (await http.get("/api/me", headers=admin)).status_code == 200  # the listed method works


async def test_an_unknown_path_is_404_and_an_anonymous_caller_still_gets_401(
        app: FastAPI, http: httpx.AsyncClient) -> None:
    r = await http.get("/api/nope/deeper", headers=_admin(app))
    assert r.status_code == 404 and r.json()["reason"] == "no_such_route"
    assert (await http.get("/api/nope/deeper")).status_code == 401  # learns nothing
    assert (await http.delete("/api/me")).status_code == 401


async def test_a_served_route_missing_from_the_role_table_stays_denied_as_an_error(
        app: FastAPI, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    @app.get("/api/forgotten")
    async def forgotten() -> Response:
        return Response(b"secret")

    with caplog.at_level(logging.WARNING):
        r = await http.get("/api/forgotten", headers=_admin(app))
    assert r.status_code == 403 and r.json()["reason"] == "route_not_listed"
    errors = [rec for rec in caplog.records if rec.levelno == logging.ERROR]
    assert [e.getMessage() for e in errors] == ["route missing from hq.authz.ROUTE_ROLES: refused"]


async def test_a_bad_query_parameter_is_one_line_naming_it_and_the_fix(
        app: FastAPI, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    admin = _admin(app)
    with caplog.at_level(logging.WARNING):
        r = await http.get("/api/audit", params={"since": "soon", "limit": "lots"}, headers=admin)
    assert r.status_code == 422
    body = r.json()
    assert body["reason"] == "bad_parameter" and isinstance(body["detail"], str)
    assert "query parameter 'since'" in body["detail"] and "send a number" in body["detail"]
    assert "query parameter 'limit'" in body["detail"] and "send a whole number" in body["detail"]
    assert "'soon'" in body["detail"] and "\n" not in body["detail"]
    assert len(_refusals(caplog)) == 1
    assert (await http.get("/api/audit", params={"since": "1.5"}, headers=admin)).status_code == 200
    doc = (await http.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert doc["paths"]["/api/audit"]["get"]["responses"]["422"]["content"]["application/json"][
        "schema"] == {"$ref": "#/components/schemas/Refusal"}


def test_the_limiter_counts_per_user_and_address_and_forgets_with_time() -> None:
    clock = FakeClock()
    lim = LoginLimiter(LoginLimits(per_pair=3, per_address=5, per_account=4, window_s=60,
                                   max_keys=50), clock=clock.monotonic)
    for _ in range(3):  # failed attempts (never followed by succeeded)
        assert lim.attempt("alice", "10.0.0.9") is None
        clock.advance(10)
    # failures at 0, 10, 20; now 30: room again when the one at 0 leaves the window
    assert lim.attempt("alice", "10.0.0.9") == ("pair", 30)
    assert lim.check("alice", "10.0.0.1") is None  # the owner elsewhere
    assert lim.check("bob", "10.0.0.9") is None  # another user from that address
    clock.advance(30)
    assert lim.attempt("alice", "10.0.0.9") is None  # the one at 0 has left; 10, 20, 60 now
    assert lim.attempt("alice", "10.0.0.9") == ("pair", 10)
    lim.succeeded("alice", "10.0.0.9")  # a good login clears its pair
    assert lim.check("alice", "10.0.0.9") is None
    # parallel guesses: each is counted as it is let through, before its answer is known
    assert [lim.attempt("carol", "10.0.0.8") for _ in range(4)][-1] == ("pair", 60)
    for name in ("c", "d", "e", "f", "g"):  # one address spraying names
        assert lim.attempt(name, "10.0.0.7") is None
    assert lim.attempt("h", "10.0.0.7") == ("address", 60)
    for i in range(300):  # bounded: a scanner's random names and addresses do not grow it
        lim.attempt(f"u{i}", f"10.1.{i // 250}.{i % 250}")
    assert len(lim) == 50


async def _login(st: Stack, source: str, password: str) -> httpx.Response:
    transport = httpx.AsyncHTTPTransport(local_address=source)
    async with httpx.AsyncClient(base_url=st.url, transport=transport) as c:
        return await c.post("/console/login", json={"name": "alice", "password": password})


async def test_failed_logins_are_limited_per_user_and_address_on_a_real_hq(
        broker: MosquittoProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    async with stack(broker.port, tmp_path, []) as st:
        st.hq.app.state.login_limiter = LoginLimiter(
            LoginLimits(per_pair=3, per_address=20, per_account=5, window_s=900),
            clock=clock.monotonic)
        Accounts(st.hq.db).add_user("alice", "marketer", password=PASSWORD)
        with caplog.at_level(logging.WARNING):
            for _ in range(3):
                assert (await _login(st, "127.0.0.2", "guess guess guess")).status_code == 401
            r = await _login(st, "127.0.0.2", PASSWORD)  # even the right one: not checked
        assert r.status_code == 429 and r.headers["retry-after"] == "900"
        assert r.json()["reason"] == "login_rate_limited" and "900 s" in r.json()["detail"]
        limited = [rec for rec in _refusals(caplog) if getattr(rec, "reason", "") == "login_rate_limited"]
        assert len(limited) == 1
        assert getattr(limited[0], "caller", "") == "login:alice"
        assert getattr(limited[0], "client", "") == "127.0.0.2"
        # the owner at another address is not locked out by those failures
        assert (await _login(st, "127.0.0.1", PASSWORD)).status_code == 200
        clock.advance(900)
        assert (await _login(st, "127.0.0.2", PASSWORD)).status_code == 200
        # a guess from many addresses: past per_account, an address that failed once is
        # refused, a clean one (the owner's) still logs in
        for i in range(3, 8):
            assert (await _login(st, f"127.0.0.{i}", "guess guess guess")).status_code == 401
        assert (await _login(st, "127.0.0.3", PASSWORD)).status_code == 429
        assert (await _login(st, "127.0.0.1", PASSWORD)).status_code == 200
        async with httpx.AsyncClient(base_url=st.url) as c:
            assert (await c.get("/api/me", headers=bearer("ac_0_forged"))).status_code == 401
            text = (await c.get("/metrics")).text
        assert 'aislecast_hq_auth_refusals_total{reason="login_rate_limited"} 2.0' in text
        assert 'aislecast_hq_auth_refusals_total{reason="bad_login"} 8.0' in text
        assert "aislecast_hq_auth_login_failures_total 8.0" in text
        assert 'aislecast_hq_auth_refusals_total{reason="bad_token"} 1.0' in text
        # systemd/README.md's key fetch: refused without a token, the PEM with one
        async with httpx.AsyncClient(base_url=st.url) as c:
            assert (await c.get("/api/keys/bundle")).status_code == 401
            key = await c.get("/api/keys/bundle", headers=bearer(st.token("gateway_provisioning")))
        assert key.status_code == 200 and key.text.startswith("-----BEGIN PUBLIC KEY-----")


async def test_outside_the_api_the_routers_404_and_405_are_refusals_too(
        app: FastAPI, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        missing = await http.get("/nope")
        wrong = await http.post("/health")
        bad_body = await http.post("/api/stores", content=b"{", headers=_admin(app))
    assert missing.status_code == 404 and missing.json()["reason"] == "no_such_route"
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET"
    assert wrong.json() == {"reason": "method_not_allowed",
                            "detail": "/health does not take POST; it takes GET"}
    assert len(_refusals(caplog)) == 2
    # a handler's own HTTPException keeps its answer
    assert bad_body.status_code == 400 and "not valid JSON" in bad_body.json()["detail"]
