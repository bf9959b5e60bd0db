"""The console's push: the bounded, role-filtered live hub of hq.live (its hub directly,
and GET /api/live over HTTP), and the funnel route the console's charts read."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import msgspec
import pytest

from aislecast.kernel.campaign import Campaign, Creative
from aislecast.kernel.schema import Event
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from hq.api import create_app
from hq.db import HqDb
from hq.ingest import Ingest
from hq.live import LiveHub
from hq.refusals import Refused
from hq.service import HqService
from tests.harness import bearer, token_for

HOUR = 3600.0
FUNNEL_PATH = "/api/analytics/funnel"
T0 = 1_767_225_600.0  # an hour boundary (2026-01-01 00:00 UTC)


def _ev(i: int, kind: str, ts: float, **kw: object) -> Event:
    return msgspec.convert({"id": f"e{i}", "kind": kind, "ts": ts, "store": "s1", **kw}, Event)


def _offer(i: int, ts: float, variant: str, zone: str, store: str = "s1") -> list[Event]:
    """An offer published in ``zone`` and its phone's feedback (no zone, no variant)."""
    pub = _ev(i, "offer_published", ts, campaign="c1", variant=variant, zone=zone,
              offer=f"o{i}", inbox=f"in{i}", store=store)
    fb = [msgspec.structs.replace(pub, id=f"e{i}{k}", kind=k, variant=None, zone=None, ts=ts + 5)
          for k in ("offer_delivered", "offer_opened", "offer_clicked")]
    return [pub, *fb]


async def _next(stream: object) -> bytes:
    return await asyncio.wait_for(stream.__anext__(), 10)  # type: ignore[attr-defined]


async def test_hub_filters_by_store_coalesces_and_bounds() -> None:
    hub = LiveHub(max_clients=2, max_ids=4)
    everyone, staff = hub.open(None), hub.open(frozenset({"s2"}))
    with pytest.raises(Refused) as refused:
        hub.open(None)
    assert refused.value.status == 503 and hub.stats.refused == 1
    s_all, s_staff = hub.stream(everyone), hub.stream(staff)
    assert b"event: hello" in await _next(s_all)
    assert b"event: hello" in await _next(s_staff)
    # three batches before anyone reads: one notification each, merged
    for i in range(3):
        hub.on_events([_ev(i, "offer_published", T0, campaign=f"c{i}")])
    hub.on_campaign(Campaign(id="c9", name="n", stores=["s2"], creatives=[Creative(id="a", title="t")]))
    await asyncio.sleep(0)  # the hub hands notifications to the loop (thread safe)
    got = await _next(s_all)
    assert got.startswith(b"event: ingest") and b'"campaigns":["c0","c1","c2"]' in got
    assert b'"events":3' in got and hub.stats.coalesced == 2
    assert b"event: campaign" in await _next(s_all)
    # store staff of s2 heard nothing of s1's batches, only of the s2 campaign
    staff_got = await _next(s_staff)
    assert staff_got.startswith(b"event: campaign") and b'"c9"' in staff_got
    # a client that never reads holds at most max_ids ids: then "refetch all"
    for i in range(20):
        hub.on_events([_ev(100 + i, "offer_published", T0, campaign=f"x{i}")])
    await asyncio.sleep(0)
    assert hub.stats.overflowed >= 1
    assert b'"all":true' in await _next(s_all)
    assert hub.stats.notifications == {"ingest": 2, "campaign": 2}  # c9: to both clients
    hub.close()
    for s in (s_all, s_staff):
        with pytest.raises(StopAsyncIteration):
            await _next(s)
    assert len(hub) == 0 and hub.stats.clients == 0


async def test_hub_hears_worker_threads() -> None:
    """PostgreSQL ingest stores (and notifies) from a worker thread."""
    hub = LiveHub()
    stream = hub.stream(hub.open(None))
    await _next(stream)
    await asyncio.to_thread(hub.on_events, [_ev(1, "offer_published", T0, campaign="c1")])
    assert b'"campaigns":["c1"]' in await _next(stream)
    hub.close()


async def test_live_and_funnel_routes_check_their_callers(tmp_path: Path) -> None:
    db = HqDb(f"sqlite:///{tmp_path}/hq.sqlite")
    service = HqService(db, Signer(load_or_create_signing_key(tmp_path / "k.pem")))
    ingest = Ingest(db)
    app = create_app(service, ingest)
    transport = httpx.ASGITransport(app=app)
    service.upsert_campaign(Campaign(id="c1", name="n", stores=["s1"],
                                     creatives=[Creative(id="a", title="t")]))
    Ingest(db).store_events(_offer(1, time.time() - HOUR, "a", "produce"))
    async with httpx.AsyncClient(transport=transport, base_url="http://hq") as c:
        assert (await c.get("/api/live")).status_code == 401
        assert (await c.get(FUNNEL_PATH)).status_code == 401
        analyst = bearer(token_for(db, "analyst"))
        r = await c.get(FUNNEL_PATH, params={"campaign": "c1", "by": "variant"},
                        headers=analyst)
        assert r.status_code == 200 and r.json()["rows"][0]["key"] == "a"
        # store staff of another store: 404, the same body as a campaign that does not exist
        staff = bearer(token_for(db, "store_staff", stores=["s9"]))
        hidden = await c.get(FUNNEL_PATH, params={"campaign": "c1"}, headers=staff)
        missing = await c.get(FUNNEL_PATH, params={"campaign": "nope"}, headers=staff)
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json()["detail"].replace("c1", "nope") == missing.json()["detail"]
        bad = await c.get(FUNNEL_PATH, params={"by": "shopper"}, headers=analyst)
        assert bad.status_code == 422 and "by" in bad.text
    db.close()
