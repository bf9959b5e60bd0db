"""The campaign model and its rule book, and HQ's refusal of invalid campaigns (422)."""

from __future__ import annotations

from pathlib import Path

import httpx
import msgspec

from aislecast.kernel.campaign import (
    Budget,
    Campaign,
    Caps,
    Creative,
    Schedule,
    Trigger,
    Window,
    check_campaign,
)
from aislecast.kernel.schema import Bundle, Store, Zone, decode
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from hq.api import create_app
from hq.campaigns import top_up
from hq.db import HqDb
from hq.ingest import Ingest
from hq.service import HqService
from tests.harness import bearer, token_for


def test_old_campaign_json_still_decodes_with_defaults() -> None:
    old = b'{"id":"c","name":"n","stores":["s"],"creatives":[{"id":"a","title":"t"}],' \
          b'"trigger":{"kind":"enter","zones":["z"]},"caps":{"per_shopper":1}}'
    c = decode(old, Campaign)
    assert c.caps.per_day is None and c.audience.segments == [] and c.budget.kind == "none"
    assert check_campaign(c) == []


def test_every_problem_is_named() -> None:
    c = Campaign(
        id="bad", name="bad", stores=["s"], creatives=[Creative(id="a", title="t",
                                                                format="coupon")],
        trigger=Trigger(kind="teleport", zones=["moon"]),
        schedule=Schedule(tz="Mars/Olympus", windows=[Window("09:00", "12:00"),
                                                      Window("11:00", "13:00"),
                                                      Window("25:00", "26:00")]),
        caps=Caps(per_shopper=0), budget=Budget("impressions", 0), holdout_pct=120)
    problems = "\n".join(check_campaign(c, {"bakery"}))
    for needle in ("coupon_code", "teleport", "moon", "Mars/Olympus", "overlaps", "25:00",
                   "per_shopper", "budget.total", "holdout_pct"):
        assert needle in problems, needle


def test_weekday_and_dated_windows_do_not_overlap() -> None:
    c = Campaign(id="c", name="c", stores=["s"], creatives=[Creative(id="a", title="t")],
                 schedule=Schedule(windows=[Window("08:00", "22:00", days=[6, 7]),
                                            Window("10:00", "12:00", dates=["2025-06-10"])]))
    assert check_campaign(c) == []  # 2025-06-10 is a Tuesday


def test_top_up_grants_never_exceed_budget() -> None:
    b = Budget("impressions", 10)
    g = top_up(b, {}, {"a", "b"})
    assert sum(g.values()) <= 10 and g["*"] == 0
    for _ in range(20):
        g = top_up(Budget("impressions", 10, g), {"a": g["a"], "b": g["b"]}, {"a", "b"})
    assert sum(g.values()) == 10


def test_model_rides_in_bundle() -> None:
    b = Bundle(v=1, version=1, store=Store("s", "s"), issued_at=0, expires_at=1, zones=[],
               beacons=[], campaigns=[], rotation_k=9, token_tables=[])
    assert decode(msgspec.json.encode(b), Bundle).model is None


async def test_hq_refuses_invalid_campaign_with_422(tmp_path: Path) -> None:
    svc = HqService(HqDb(f"sqlite:///{tmp_path}/hq.sqlite"),
                    Signer(load_or_create_signing_key(tmp_path / "k.pem")))
    svc.upsert_store(Store("s1", "S", tz="Europe/Berlin"))
    svc.upsert_zone("s1", Zone("bakery", "Bakery"))
    app = create_app(svc, Ingest(svc.db))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hq",
                                 headers=bearer(token_for(svc.db, "admin"))) as client:
        bad = {"id": "x", "name": "x", "stores": ["s1", "nowhere"],
               "creatives": [{"id": "a", "title": "t"}],
               "trigger": {"kind": "enter", "zones": ["bakery", "attic"]},
               "caps": {"per_shopper": 0}}
        r = await client.post("/api/campaigns", json=bad)
        assert r.status_code == 422
        detail = r.json()["detail"]
        assert isinstance(detail, list) and len(detail) == 3
        assert any("nowhere" in d for d in detail) and any("attic" in d for d in detail)
        good = bad | {"stores": ["s1"], "trigger": {"kind": "enter", "zones": ["bakery"]},
                      "caps": {"per_shopper": 1}}
        r = await client.post("/api/campaigns", json=good)
        assert r.status_code == 201, r.text
        assert svc.get_campaign("x").engine >= 2
