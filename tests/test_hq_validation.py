"""HQ refuses what would break gateways or HQ later: ids, time zones, validity, links."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from aislecast.kernel.schema import SCHEMA_VERSION, BundleDelta, Store
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from aislecast.kernel.verify import Verifier
from gateway.bundles import BundleStore
from gateway.storage import open_db
from hq.api import create_app
from hq.db import HqDb
from hq.ingest import Ingest
from hq.service import HqService
from tests.harness import bearer, token_for


@pytest.fixture
def http(tmp_path: Path) -> httpx.AsyncClient:
    db = HqDb(f"sqlite:///{tmp_path}/hq.sqlite")
    service = HqService(db, Signer(load_or_create_signing_key(tmp_path / "k.pem")))
    app = create_app(service, Ingest(db))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hq",
                             headers=bearer(token_for(db, "admin")))


@pytest.mark.parametrize(("body", "needle"), [
    ({"id": "pop+up", "name": "x"}, "id:"),
    ({"id": "a.b", "name": "x"}, "id:"),
    ({"id": "s1", "name": "x", "tz": "Mars/Olympus"}, "tz:"),
    ({"id": "s1", "name": "x", "tz": "../../etc/passwd"}, "tz:"),
])
async def test_store_ids_and_time_zones_are_checked(http: httpx.AsyncClient, body: dict[str, str],
                                                    needle: str) -> None:
    r = await http.post("/api/stores", json=body)
    assert r.status_code == 422
    assert any(needle in p for p in r.json()["detail"])


@pytest.mark.parametrize(("position", "needle"), [
    ({"latitude": 52.5}, "longitude: missing while latitude is set; give both or neither"),
    ({"longitude": 13.4}, "latitude: missing while longitude is set; give both or neither"),
    ({"latitude": 90.5, "longitude": 13.4}, "latitude: 90.5 is not between -90 and 90 degrees"),
    ({"latitude": 52.5, "longitude": -180.01}, "longitude: -180.01 is not between -180 and 180 degrees"),
])
async def test_store_positions_are_both_or_neither_and_in_range(
        http: httpx.AsyncClient, position: dict[str, float], needle: str) -> None:
    r = await http.post("/api/stores", json={"id": "s1", "name": "x"} | position)
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == [needle]
    assert (await http.get("/api/stores/s1")).status_code == 404  # nothing stored
    # the witness: the extremes themselves are positions
    ok = await http.post("/api/stores", json={"id": "s1", "name": "x", "latitude": -90,
                                              "longitude": 180})
    assert ok.status_code == 201, ok.text
    assert (ok.json()["latitude"], ok.json()["longitude"]) == (-90.0, 180.0)


async def test_campaign_validity_and_links_are_checked(http: httpx.AsyncClient) -> None:
    assert (await http.post("/api/stores", json={"id": "s1", "name": "x"})).status_code == 201
    r = await http.post("/api/campaigns", json={
        "id": "c1", "name": "x", "stores": ["s1"], "validity_s": 1e10,
        "creatives": [{"id": "a", "title": "t", "url": "javascript:alert(1)"}]})
    assert r.status_code == 422
    text = " ".join(r.json()["detail"])
    assert "validity_s" in text
    assert "creatives[0].url" in text


def test_a_replayed_delta_is_stale_even_after_a_restart(tmp_path: Path) -> None:
    signer = Signer(load_or_create_signing_key(tmp_path / "k.pem"))
    db = HqDb(f"sqlite:///{tmp_path}/hq.sqlite")
    service = HqService(db, signer)
    service.upsert_store(Store(id="s1", name="x"))
    now = time.time()
    old = BundleDelta(v=SCHEMA_VERSION, seq=1, store="s1", issued_at=now, expires_at=now + 600,
                      paused=["c1"])
    service._bump("delta_seq", "s1")  # HQ sent delta 1 before building this bundle
    bundle = service.build_bundle("s1")
    gw_db = open_db(tmp_path / "gw.sqlite")
    applied: list[BundleDelta] = []
    store = BundleStore(gw_db, Verifier(signer.public_raw), "s1", on_bundle=lambda b: None,
                        on_delta=applied.append)
    assert store.offer_bundle(signer.sign("bundle", bundle))
    assert not store.offer_delta(signer.sign("delta", old))  # delta 1 is already in the bundle
    assert store.rejected == {"stale": 1}
    restarted = BundleStore(gw_db, Verifier(signer.public_raw), "s1", on_bundle=lambda b: None,
                            on_delta=applied.append)
    assert restarted.load_persisted()
    assert not restarted.offer_delta(signer.sign("delta", old))
    assert applied == []


@pytest.mark.parametrize("path", ["/api/stores", "/api/campaigns"])
async def test_a_deeply_nested_body_is_refused_not_a_server_error(http: httpx.AsyncClient,
                                                                  path: str) -> None:
    """msgspec recurses to skip an unknown field: 50,000 levels once raised RecursionError (500)."""
    deep = b'{"id":"s1","name":"x","junk":' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    r = await http.post(path, content=deep, headers={"content-type": "application/json"})
    assert r.status_code in (400, 422), r.text
    assert "nested too deeply" in r.text
