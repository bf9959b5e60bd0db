"""The store registry over HTTP: list, read, replace, delete, with referential checks,
unknown fields refused by name, store staff kept to their stores, every change audited."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aislecast.kernel.schema import Campaign, Creative, Trigger
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from hq.api import create_app
from hq.audit import AuditLog
from hq.db import HqDb
from hq.ingest import Ingest
from hq.service import HqService
from tests.conftest_pg import BACKENDS, hq_url
from tests.harness import bearer, token_for


class Hq:
    def __init__(self, tmp_path: Path, url: str) -> None:
        self.db = HqDb(url)
        self.service = HqService(self.db, Signer(load_or_create_signing_key(tmp_path / "k.pem")))
        self.app = create_app(self.service, Ingest(self.db))

    def client(self, role: str = "admin", stores: list[str] | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://hq",
                                 headers=bearer(token_for(self.db, role, stores=stores)))


@pytest.fixture(params=BACKENDS)  # SQLite, and PostgreSQL when it runs (a fresh schema)
def hq(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Hq]:
    with hq_url(request.param, tmp_path) as url:
        h = Hq(tmp_path, url)
        yield h
        h.db.close()


async def _store(c: httpx.AsyncClient, sid: str = "s1", zones: tuple[str, ...] = ("dairy",)) -> None:
    assert (await c.post("/api/stores", json={"id": sid, "name": sid.upper()})).status_code == 201
    for z in zones:
        assert (await c.post(f"/api/stores/{sid}/zones", json={"id": z, "name": z})).status_code == 201


async def test_list_read_replace_and_delete_a_store_zone_and_beacon(hq: Hq) -> None:
    async with hq.client() as c:
        await _store(c)
        r = await c.post("/api/stores/s1/beacons", json={"id": "b1", "zone": "dairy", "major": 1})
        assert r.status_code == 201
        assert [s["id"] for s in (await c.get("/api/stores")).json()] == ["s1"]
        assert (await c.get("/api/stores/s1")).json() == {
            "id": "s1", "name": "S1", "tz": "UTC", "latitude": None, "longitude": None}
        assert [z["id"] for z in (await c.get("/api/stores/s1/zones")).json()] == ["dairy"]
        assert (await c.get("/api/stores/s1/beacons/b1")).json()["major"] == 1

        r = await c.put("/api/stores/s1", json={"id": "s1", "name": "Main St", "tz": "Europe/Berlin",
                                                "latitude": 52.52, "longitude": -13.4})
        assert r.status_code == 200 and hq.service.get_store("s1").name == "Main St"
        got = (await c.get("/api/stores/s1")).json()
        assert (got["latitude"], got["longitude"]) == (52.52, -13.4)
        r = await c.put("/api/stores/s1/zones/dairy", json={"id": "dairy", "name": "Milk", "x": 2})
        assert r.status_code == 200 and hq.service.zones("s1")[0].name == "Milk"
        r = await c.put("/api/stores/s1/beacons/b1", json={"id": "b1", "zone": "dairy", "major": 7})
        assert r.status_code == 200 and hq.service.beacons("s1")[0].major == 7
        # the next bundle ships what is stored now
        bundle = hq.service.build_bundle("s1")
        assert (bundle.store.name, bundle.zones[0].name, bundle.beacons[0].major) == ("Main St", "Milk", 7)
        assert (bundle.store.latitude, bundle.store.longitude) == (52.52, -13.4)

        assert (await c.delete("/api/stores/s1/beacons/b1")).json()["id"] == "b1"
        assert (await c.get("/api/stores/s1/beacons/b1")).status_code == 404
        assert (await c.delete("/api/stores/s1/zones/dairy")).status_code == 200
        assert (await c.delete("/api/stores/s1")).status_code == 200
        assert (await c.get("/api/stores/s1")).status_code == 404
        assert (await c.get("/api/stores")).json() == []
    actions = [e.action for e in AuditLog(hq.db).entries()]
    assert actions[-6:] == ["store.update", "zone.upsert", "beacon.upsert", "beacon.delete",
                            "zone.delete", "store.delete"]


async def test_a_beacon_in_a_zone_the_store_lacks_is_refused_naming_it(hq: Hq) -> None:
    async with hq.client() as c:
        await _store(c, zones=("dairy", "bakery"))
        r = await c.post("/api/stores/s1/beacons", json={"id": "b1", "zone": "frozen"})
        assert r.status_code == 422
        detail = " ".join(r.json()["detail"])
        assert "'frozen'" in detail and "bakery, dairy" in detail
        r = await c.put("/api/stores/s1/beacons/b1", json={"id": "b1", "zone": "frozen"})
        assert r.status_code == 422
        assert hq.service.beacons("s1") == []  # nothing stored, nothing shipped


async def test_deleting_what_is_still_referred_to_is_409_naming_the_referrers(hq: Hq) -> None:
    async with hq.client() as c:
        await _store(c)
        await c.post("/api/stores/s1/beacons", json={"id": "b1", "zone": "dairy"})
        hq.service.upsert_campaign(Campaign(id="c1", name="milk", stores=["s1"],
                                            trigger=Trigger(kind="enter", zones=["dairy"]),
                                            creatives=[Creative(id="a", title="t")]))
        r = await c.delete("/api/stores/s1/zones/dairy")
        assert r.status_code == 409
        assert r.json()["users"] == ["beacon:b1", "campaign:c1"]
        assert "beacon:b1" in r.json()["detail"]
        r = await c.delete("/api/stores/s1")
        assert r.status_code == 409 and r.json()["users"] == ["campaign:c1"]
        hq.service.db.execute("DELETE FROM campaigns")
        hq.service.credentials.issue_gateway("s1", "gw-1")
        r = await c.delete("/api/stores/s1")
        assert r.status_code == 409 and r.json()["users"] == ["gateway:gw-1"]
        assert [g["gateway"] for g in (await c.get("/api/stores/s1/gateways")).json()] == ["gw-1"]
        r = await c.delete("/api/stores/s1/gateways/gw-1")
        assert r.status_code == 200 and r.json()["active"] is False
        assert hq.service.credentials.gateways_of("s1") == []
        assert (await c.get("/api/stores/s1/gateways/gw-1")).status_code == 404
        assert (await c.delete("/api/stores/s1")).status_code == 200  # zones and beacons with it
        assert hq.db.query("SELECT id FROM zones") == [] and hq.db.query("SELECT id FROM beacons") == []


async def test_unknown_fields_are_refused_with_their_name(hq: Hq) -> None:
    async with hq.client() as c:
        r = await c.post("/api/stores", json={"id": "s1", "name": "x", "timezone": "UTC"})
        assert r.status_code == 422
        assert "timezone: unknown field" in r.json()["detail"]
        await _store(c)
        r = await c.post("/api/campaigns", json={
            "id": "c1", "name": "x", "stores": ["s1"], "creatives": [{"id": "a", "title": "t",
                                                                      "colour": "red"}],
            "trigger": {"kind": "enter", "zone": ["dairy"]}})
        assert r.status_code == 422
        assert r.json()["detail"][0].startswith("creatives[0].colour: unknown field")
        assert r.json()["detail"][1].startswith("trigger.zone: unknown field; Trigger has kind")
        r = await c.post("/api/campaigns", json={
            "id": "c1", "name": "x", "stores": ["s1"], "creatives": [{"id": "a", "title": "t"}],
            "trigger": {"kind": "walk_by"}})
        assert r.status_code == 422
        assert "unknown kind 'walk_by'; one of dwell, enter, exit, flash, scan, schedule, tap" in \
            " ".join(r.json()["detail"])
        assert hq.service.campaigns() == []


async def test_store_staff_see_and_change_only_their_stores(hq: Hq) -> None:
    async with hq.client() as admin:
        await _store(admin, "s1")
        await _store(admin, "s2")
    async with hq.client("store_staff", ["s1"]) as staff:
        assert [s["id"] for s in (await staff.get("/api/stores")).json()] == ["s1"]
        mine = await staff.put("/api/stores/s1/zones/bakery", json={"id": "bakery", "name": "B"})
        assert mine.status_code == 200
        theirs = await staff.put("/api/stores/s2/zones/bakery", json={"id": "bakery", "name": "B"})
        missing = await staff.get("/api/stores/s9/zones")
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json()["detail"].replace("s2", "s9") == missing.json()["detail"]
        assert [z.id for z in hq.service.zones("s2")] == ["dairy"]
        assert (await staff.delete("/api/stores/s1")).status_code == 403  # stores: admins


async def test_shelf_tags_are_registered_with_who_and_when(hq: Hq) -> None:
    async with hq.client() as admin:
        await _store(admin)
    async with hq.client("store_staff", ["s1"]) as staff:
        r = await staff.put("/api/stores/s1/tags/T-1", json={"zone": "dairy", "code": "Ab3xY7q",
                                                             "url": "https://hq/s/Ab3xY7q?src=nfc"})
        assert r.status_code == 200
        tag = r.json()
        assert tag["zone"] == "dairy" and tag["written_by"].startswith("token:")  # the actor, as audited
        assert tag["written_at"] > 0
        assert (await staff.get("/api/stores/s1/tags")).json() == [tag]
        r = await staff.put("/api/stores/s1/tags/T-2", json={"zone": "frozen", "campaign": "nope"})
        assert r.status_code == 422
        assert "no zone 'frozen'" in " ".join(r.json()["detail"])
        assert "campaign: no campaign 'nope'" in " ".join(r.json()["detail"])
        r = await staff.delete("/api/stores/s1/zones/dairy")
        assert r.status_code == 409 and r.json()["users"] == ["tag:T-1"]
        assert (await staff.delete("/api/stores/s1/tags/T-1")).status_code == 200
        assert (await staff.get("/api/stores/s1/tags/T-1")).status_code == 404


async def test_a_campaign_edit_that_fails_validation_leaves_the_live_campaign_untouched(hq: Hq) -> None:
    async with hq.client() as c:
        await _store(c)
        live = {"id": "c1", "name": "milk", "stores": ["s1"], "status": "live",
                "trigger": {"kind": "enter", "zones": ["dairy"]},
                "creatives": [{"id": "a", "title": "Milk -10%"}]}
        assert (await c.post("/api/campaigns", json=live)).status_code == 201
        before = (await c.get("/api/campaigns/c1")).json()
        for bad in ({**live, "title": "typo"},  # unknown field
                    {**live, "trigger": {"kind": "walk_by"}},  # unknown trigger kind
                    {**live, "trigger": {"kind": "enter", "zones": ["frozen"]}}):  # no such zone
            r = await c.put("/api/campaigns/c1", json={**bad, "name": "edited"})
            assert r.status_code == 422, bad
        assert (await c.get("/api/campaigns/c1")).json() == before
        assert hq.service.get_campaign("c1").status == "live"
