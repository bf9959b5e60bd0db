"""DbShortLinkStore on HQ's SQLite: unique codes, collision retry, clicks as `tap` events."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from aislecast.kernel.errors import AislecastError
from aislecast.kernel.schema import Event
from hq.db import HqDb
from hq.ingest import Ingest
from hq.shortlink_store import DbShortLinkStore, make_mint_router
from hq.shortlinks import ShortLink, make_shortlink_router
from tests.harness import secure


@pytest.fixture
def db(tmp_path: Path) -> HqDb:
    return HqDb(f"sqlite:///{tmp_path}/hq.sqlite")


async def test_mint_resolve_and_unique_codes(db: HqDb) -> None:
    store = DbShortLinkStore(db, Ingest(db).store_events)
    links = [await store.mint("https://shop.example/p", tag=f"T-{i}", store="s1") for i in range(50)]
    assert len({link.code for link in links}) == 50
    assert await store.resolve(links[7].code) == links[7]
    assert await store.resolve("Nope123") is None
    assert not store.add(ShortLink(code=links[0].code, url="https://evil.example/"))  # no overwrite
    assert (await store.resolve(links[0].code)) == links[0]


async def test_insert_conflict_draws_again(db: HqDb, monkeypatch: pytest.MonkeyPatch) -> None:
    store = DbShortLinkStore(db, lambda events: None)
    store.add(ShortLink(code="AAAAAAA", url="https://a.example/"))
    # another worker took the code between mint_code's free check and our insert
    codes = itertools.chain(["AAAAAAA"], ["BBBBBBB"])

    async def racy_mint(_store: object, *, length: int) -> str:
        return next(codes)

    monkeypatch.setattr("hq.shortlink_store.mint_code", racy_mint)
    link = await store.mint("https://b.example/")
    assert link.code == "BBBBBBB" and store.stats.conflicts == 1
    monkeypatch.setattr("hq.shortlink_store.mint_code", lambda *a, **k: _always("AAAAAAA"))
    with pytest.raises(AislecastError, match="conflicted"):
        await store.mint("https://c.example/")


async def _always(code: str) -> str:
    return code


async def test_clicks_become_tap_events_by_source(db: HqDb) -> None:
    ingest = Ingest(db)
    seen: list[Event] = []
    ingest.listeners.append(seen.extend)
    store = DbShortLinkStore(db, ingest.store_events)
    link = await store.mint("https://shop.example/coffee", tag="T-5", store="s1", campaign="c1")
    for src in ("qr", "qr", "nfc", "other"):
        await store.record_click(link, ts=1.0, user_agent="Mozilla/5.0 (iPhone)", source=src)
    assert store.clicks(link.code) == {"qr": 2, "nfc": 1, "other": 1}
    rows = db.query("SELECT kind, reason, store, campaign, body FROM events ORDER BY reason")
    assert [r[:4] for r in rows] == [("tap", "scan", "s1", "c1")] * 2 + [("tap", "tap", "s1", "c1")] * 2
    assert all("iPhone" not in r[4] for r in rows)  # the user agent is not kept
    assert json.loads(rows[0][4])["detail"] == {"source": "qr", "code": link.code, "tag": "T-5"}
    assert len(seen) == 4  # live listeners see scans like any event


def test_http_mint_reuse_validation_and_redirect(db: HqDb) -> None:
    store = DbShortLinkStore(db, Ingest(db).store_events)
    app = FastAPI()
    app.include_router(make_shortlink_router(store))
    app.include_router(make_mint_router(store, public_base_url="https://hq.example"))
    client = TestClient(app, headers=secure(app, db))
    body = {"url": "https://shop.example/milk", "tag": "T-17", "store": "s1"}
    first = client.post("/api/shortlinks", json=body)
    assert first.status_code == 201
    made = first.json()
    assert made["nfc"] == f"https://hq.example/s/{made['code']}?src=nfc&t=T-17"
    assert made["short"] == f"https://hq.example/s/{made['code']}"
    assert client.post("/api/shortlinks", json=body).json()["code"] == made["code"]
    assert client.post("/api/shortlinks", json=body | {"tag": "T-18"}).json()["code"] != made["code"]
    for bad in ({"url": "javascript:alert(1)"}, {"url": "https://x.example", "tag": "a b"},
                {"tag": "T-1"}, {"url": "https://x.example", "extra": 1}):
        assert client.post("/api/shortlinks", json=bad).status_code == 422, bad
    assert client.post("/api/shortlinks", content=b"{").status_code == 400  # not JSON, as elsewhere
    rsp = client.get(f"/s/{made['code']}?src=nfc", follow_redirects=False)
    assert rsp.status_code == 302 and rsp.headers["location"] == body["url"]
    assert client.get(f"/api/shortlinks/{made['code']}").json()["clicks"] == {"nfc": 1}
    assert client.get("/api/shortlinks/zz").status_code == 404
