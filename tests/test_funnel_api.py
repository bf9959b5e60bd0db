"""GET /api/analytics/funnel: breakdowns from the rollups as JSON and CSV, store staff
scoped to their stores, unknown campaigns 404, bad parameters 422 (all counted)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from aislecast.kernel.schema import Event
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from hq.api import create_app
from hq.db import HqDb
from hq.funnel import funnel
from hq.ingest import Ingest
from hq.service import HqService
from tests.harness import bearer, token_for

T0 = 1_764_000_000.0  # 2025-11-24T16:00:00Z
ODD_ZONE = 'a,"b"\nc'


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    db = HqDb(f"sqlite:///{tmp_path}/hq.sqlite")
    service = HqService(db, Signer(load_or_create_signing_key(tmp_path / "k.pem")))
    ingest = Ingest(db)
    app = create_app(service, ingest)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hq") as c:
        admin = bearer(token_for(db, "admin"))
        for sid in ("s1", "s2"):
            assert (await c.post("/api/stores", json={"id": sid, "name": sid}, headers=admin)).is_success
        for cid, stores in (("both", ["s1", "s2"]), ("only-s2", ["s2"])):
            r = await c.post("/api/campaigns", headers=admin, json={
                "id": cid, "name": cid, "stores": stores, "status": "draft",
                "creatives": [{"id": "a", "title": "t"}]})
            assert r.status_code == 201, r.text
        ev: list[Event] = []
        for i in range(60):
            store = "s1" if i % 3 else "s2"
            zone = (ODD_ZONE, "=HYPERLINK(\"http://x\")", "dairy")[i % 3]
            ts = T0 + (i % 4) * 3600 + i
            inbox = "in-s2" if store == "s2" else f"in{i % 5}"  # 5 shoppers at s1, 1 at s2
            ev += [Event(id=f"d{i}", kind="decision", ts=ts, store=store, zone=zone,
                         campaign="both", variant="AB"[i % 2], reason="offer", offer=f"o{i}",
                         detail={"trigger": ("enter", "scan")[i % 2]}),
                   Event(id=f"p{i}", kind="offer_published", ts=ts, store=store, zone=zone,
                         campaign="both", variant="AB"[i % 2], offer=f"o{i}"),
                   Event(id=f"v{i}", kind="offer_delivered", ts=ts + 1, store=store,
                         campaign="both", offer=f"o{i}", inbox=inbox)]
            if i % 4 == 0:
                ev.append(Event(id=f"k{i}", kind="offer_clicked", ts=ts + 2, store=store,
                                campaign="both", offer=f"o{i}", inbox=inbox))
        ingest.store_events(ev)
        yield app, c


def _rows(body: dict[str, object]) -> dict[str | None, dict[str, object]]:
    rows = body["rows"]
    assert isinstance(rows, list)
    return {r["key"]: r for r in rows}


async def test_breakdowns_by_store_hour_variant_and_trigger(
        api: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, c = api
    h = bearer(token_for(app.state.service.db, "analyst"))
    r = await c.get("/api/analytics/funnel", params={"campaign": "both"}, headers=h)
    assert r.status_code == 200, r.text
    [total] = r.json()["rows"]
    assert (total["key"], total["decisions"], total["impressions"], total["deliveries"],
            total["clicks"], total["ctr"]) == (None, 60, 60, 60, 15, 0.25)
    by_store = _rows((await c.get("/api/analytics/funnel", headers=h,
                                  params={"campaign": "both", "by": "store"})).json())
    assert {k: v["decisions"] for k, v in by_store.items()} == {"s1": 40, "s2": 20}
    hours = _rows((await c.get("/api/analytics/funnel", headers=h, params={
        "campaign": "both", "by": "hour", "since": "2025-11-24T17:30:00Z",
        "until": str(T0 + 3 * 3600)})).json())
    assert {k: v["decisions"] for k, v in hours.items()} == {
        "2025-11-24T17:00:00Z": 15, "2025-11-24T18:00:00Z": 15}
    variants = _rows((await c.get("/api/analytics/funnel", headers=h,
                                  params={"campaign": "both", "by": "variant"})).json())
    # the deliveries (feedback) carry their offer's variant, found at ingest
    assert {k: (v["decisions"], v["deliveries"]) for k, v in variants.items()} == {
        "A": (30, 30), "B": (30, 30)}
    trig = _rows((await c.get("/api/analytics/funnel", headers=h, params={
        "campaign": "both", "by": "trigger", "store": "s1"})).json())
    assert {k: v["clicks"] for k, v in trig.items()} == {"enter": 10, "scan": 0}
    # every breakdown adds up to the whole funnel
    db = app.state.service.db
    for by in ("store", "zone", "hour", "variant", "trigger"):
        assert sum(r.decisions for r in funnel(db, "both", by=by)) == 60


async def test_shoppers_per_stage_whole_by_store_and_variant_as_json_and_csv(
        api: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, c = api
    db = app.state.service.db
    h = bearer(token_for(db, "marketer"))
    [total] = (await c.get("/api/analytics/funnel", headers=h,
                           params={"campaign": "both"})).json()["rows"]
    # 60 deliveries and 15 clicks (events) by 6 different shoppers each
    assert (total["deliveries"], total["clicks"]) == (60, 15)
    assert total["shoppers"] == {"deliveries": 6, "opens": 0, "clicks": 6, "redemptions": 0,
                                 "leads": 0}
    by_store = _rows((await c.get("/api/analytics/funnel", headers=h,
                                  params={"campaign": "both", "by": "store"})).json())
    assert {k: (v["deliveries"], v["shoppers"]["deliveries"]) for k, v in by_store.items()} == {
        "s1": (40, 5), "s2": (20, 1)}
    variants = _rows((await c.get("/api/analytics/funnel", headers=h,
                                  params={"campaign": "both", "by": "variant"})).json())
    assert {k: v["shoppers"]["deliveries"] for k, v in variants.items()} == {"A": 6, "B": 6}
    # not kept per hour or zone, nor for a time range: null, not a wrong number
    for params in ({"by": "hour"}, {"by": "zone"}, {"since": str(T0)}):
        rows = (await c.get("/api/analytics/funnel", headers=h,
                            params={"campaign": "both", **params})).json()["rows"]
        assert rows and all(r["shoppers"] is None for r in rows), params
    staff = bearer(token_for(db, "store_staff", stores=["s1"]))
    [mine] = (await c.get("/api/analytics/funnel", headers=staff,
                          params={"campaign": "both"})).json()["rows"]
    assert mine["shoppers"]["deliveries"] == 5  # their store's shoppers only
    r = await c.get("/api/analytics/funnel", headers=h,
                    params={"campaign": "both", "by": "store", "format": "csv"})
    table = list(csv.reader(io.StringIO(r.text, newline="")))
    assert table[0][-5:] == ["shoppers_deliveries", "shoppers_opens", "shoppers_clicks",
                             "shoppers_redemptions", "shoppers_leads"]
    assert [(row[0], row[-5], row[-3]) for row in table[1:]] == [("s1", "5", "5"), ("s2", "1", "1")]
    hours = list(csv.reader(io.StringIO((await c.get("/api/analytics/funnel", headers=h, params={
        "campaign": "both", "by": "hour", "format": "csv"})).text, newline="")))
    assert {tuple(row[-5:]) for row in hours[1:]} == {("",) * 5}  # empty cells: not kept


async def test_csv_is_escaped_and_named(api: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, c = api
    h = bearer(token_for(app.state.service.db, "marketer"))
    r = await c.get("/api/analytics/funnel", headers=h,
                    params={"campaign": "both", "by": "zone", "format": "csv"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"] == 'attachment; filename="funnel-both-zone.csv"'
    assert r.text.count("\r\n") == 4  # header and three zones; the newline is inside quotes
    table = list(csv.reader(io.StringIO(r.text, newline="")))
    assert table[0][:3] == ["zone", "decisions", "offered"]
    zones = {row[0]: row for row in table[1:]}
    assert set(zones) == {ODD_ZONE, "'=HYPERLINK(\"http://x\")", "dairy"}  # no formula runs
    assert zones["dairy"][1] == "20"


async def test_store_staff_see_their_stores_only(api: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, c = api
    db = app.state.service.db
    staff = bearer(token_for(db, "store_staff", stores=["s1"]))
    mine = _rows((await c.get("/api/analytics/funnel", headers=staff,
                              params={"campaign": "both", "by": "store"})).json())
    assert list(mine) == ["s1"]
    [total] = (await c.get("/api/analytics/funnel", headers=staff,
                           params={"campaign": "both"})).json()["rows"]
    assert total["decisions"] == 40
    other_store = await c.get("/api/analytics/funnel", headers=staff,
                              params={"campaign": "both", "store": "s2"})
    other_campaign = await c.get("/api/analytics/funnel", headers=staff,
                                 params={"campaign": "only-s2"})
    unknown = await c.get("/api/analytics/funnel", headers=staff, params={"campaign": "nope"})
    assert other_store.status_code == other_campaign.status_code == unknown.status_code == 404
    assert (other_campaign.json()["detail"].replace("only-s2", "X")
            == unknown.json()["detail"].replace("nope", "X"))
    assert app.state.auth_stats.refusals["not_found"] == 3
    wallet = bearer(token_for(db, "wallet"))
    assert (await c.get("/api/analytics/funnel", headers=wallet,
                        params={"campaign": "both"})).status_code == 403
    assert (await c.get("/api/analytics/funnel", params={"campaign": "both"})).status_code == 401


async def test_bad_parameters_are_422_naming_them(api: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, c = api
    h = bearer(token_for(app.state.service.db, "admin"))
    for params, named in (({"campaign": "both", "since": "yesterday"}, "since"),
                          ({"campaign": "both", "until": "1e300"}, "until"),
                          ({"campaign": "both", "by": "shopper"}, "by"),
                          ({"campaign": "both", "format": "xlsx"}, "format"),
                          ({}, "campaign")):
        r = await c.get("/api/analytics/funnel", headers=h, params=params)
        assert r.status_code == 422, (params, r.text)
        assert named in r.json()["detail"] and r.json()["reason"] == "bad_parameter"
    ok = await c.get("/api/analytics/funnel", headers=h,
                     params={"campaign": "both", "since": "2025-11-24T16:00:00"})
    assert ok.status_code == 200 and ok.json()["since"] == T0


async def test_a_campaign_without_events_has_zero_numbers_and_an_unknown_one_404s(
        api: tuple[FastAPI, httpx.AsyncClient]) -> None:
    """Right after a campaign is saved (before any gateway's batch reached HQ) its
    analytics are zeros and lift's "not enough data", not "not found", alone and in the
    list of every campaign's."""
    app, c = api
    admin = bearer(token_for(app.state.service.db, "admin"))
    r = await c.get("/api/analytics/campaigns/only-s2", headers=admin)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["campaign"], body["impressions"], body["deliveries"]) == ("only-s2", 0, 0)
    assert (body["lift_status"], body["lift"], body["min_per_arm"]) == ("not_enough_data", None, 30)
    witness = (await c.get("/api/analytics/campaigns/both", headers=admin)).json()
    assert witness["deliveries"] == 60  # the same call counts a campaign with events
    listed = {s["campaign"]: s for s in (await c.get("/api/analytics/campaigns",
                                                     headers=admin)).json()}
    assert listed["only-s2"] == body and listed["both"]["deliveries"] == 60  # the list agrees
    missing = await c.get("/api/analytics/campaigns/nope", headers=admin)
    assert missing.status_code == 404 and "nope" in missing.text
