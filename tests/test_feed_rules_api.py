"""Feed rules over HTTP (hq.feeds_api, hq.feed_rule_store): stored rules override
hq.toml's of the same name, apply from the next webhook call or feed round without a
restart, are validated field by field (422 naming the field, counted), are written by
approvers and admins only, and every change is in the audit log."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aislecast.kernel.schema import Store
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from hq.api import create_app
from hq.approvals import Approvals
from hq.audit import AuditLog
from hq.db import HqDb
from hq.feed_rules import FeedItem, FeedRule, FeedSettings, FlashTemplate
from hq.feeds import FeedWatcher
from hq.ingest import Ingest
from hq.service import HqService
from tests.conftest_pg import BACKENDS, hq_url
from tests.harness import bearer, token_for

CONFIG = FeedRule(name="rain", keywords=["rain"],
                  flash=FlashTemplate(title="Umbrellas -30 %", stores=["s1"]))


def _rule(name: str, **kw: Any) -> dict[str, Any]:
    flash = {"title": "Sun cream -20 %", "stores": ["s1"]} | kw.pop("flash", {})
    return {"name": name, "keywords": ["sunny"], "flash": flash} | kw


@pytest.fixture(params=BACKENDS)
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HqService]:
    with hq_url(request.param, tmp_path) as url:
        db = HqDb(url)
        svc = HqService(db, Signer(load_or_create_signing_key(tmp_path / "k.pem")))
        for s in ("s1", "s2"):
            svc.upsert_store(Store(id=s, name=s, tz="Europe/Berlin"))
        yield svc
        db.close()


@pytest.fixture
async def api(service: HqService) -> AsyncIterator[tuple[httpx.AsyncClient, FeedWatcher, dict[str, Any]]]:
    watcher = FeedWatcher(service, FeedSettings(rules=[CONFIG]), Approvals(service.db))
    app = create_app(service, Ingest(service.db), feeds=watcher)
    who = {r: bearer(token_for(service.db, r))
           for r in ("admin", "approver", "marketer", "analyst", "social_feed")}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hq") as c:
        yield c, watcher, who


async def _post(http: httpx.AsyncClient, who: dict[str, Any], pid: str, text: str) -> dict[str, Any]:
    r = await http.post("/api/feeds/social", json={"posts": [{"id": pid, "text": text}]},
                        headers=who["social_feed"])
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()["posts"][0]
    return result


async def test_stored_rules_override_config_apply_at_once_and_are_audited(
        api: tuple[httpx.AsyncClient, FeedWatcher, dict[str, Any]], service: HqService) -> None:
    http, watcher, who = api
    listed = (await http.get("/api/feeds/rules", headers=who["marketer"])).json()
    assert [(r["rule"]["name"], r["source"]) for r in listed] == [("rain", "config")]
    assert (await _post(http, who, "p0", "sunny all week"))["result"] == "no_match"

    # a new rule: stored, listed after the config's, and the next webhook call uses it
    r = await http.put("/api/feeds/rules/sun", json=_rule("sun"), headers=who["approver"])
    assert r.status_code == 201, r.text
    assert r.json()["source"] == "db" and r.json()["updated_by"].startswith("token:")
    assert (await _post(http, who, "p1", "sunny all week"))["result"] == "proposed"
    # one of the config's name replaces it in its place: now s2 and "storm"
    over = _rule("rain", keywords=["storm"], flash={"stores": ["s2"], "title": "Candles"})
    r = await http.put("/api/feeds/rules/rain", json=over, headers=who["admin"])
    assert r.status_code == 201 and r.json()["replaces_config"] is True, r.text
    listed = (await http.get("/api/feeds/rules", headers=who["marketer"])).json()
    assert [(r["rule"]["name"], r["source"]) for r in listed] == [("rain", "db"), ("sun", "db")]
    assert [r.name for r in watcher.rules()] == ["rain", "sun"]
    assert (await _post(http, who, "p2", "rain today"))["result"] == "no_match"
    got = await _post(http, who, "p3", "storm warning tonight")
    assert got["result"] == "proposed"
    assert service.get_campaign(got["campaign"]).stores == ["s2"]
    r = await http.put("/api/feeds/rules/rain", json=over | {"keywords": ["thunder"]},
                       headers=who["approver"])
    assert r.status_code == 200  # replaced: 200, not 201

    # deleting the stored one brings hq.toml's back; a config rule itself is not deleted here
    r = await http.delete("/api/feeds/rules/rain", headers=who["approver"])
    assert r.status_code == 200 and r.json()["rule"]["keywords"] == ["thunder"]
    assert (await http.get("/api/feeds/rules/rain", headers=who["marketer"])).json()["source"] == "config"
    assert (await _post(http, who, "p4", "rain today"))["result"] == "proposed"
    r = await http.delete("/api/feeds/rules/rain", headers=who["approver"])
    assert r.status_code == 409 and r.json()["reason"] == "config_rule"
    assert (await http.delete("/api/feeds/rules/nope", headers=who["approver"])).status_code == 404
    assert (await http.get("/api/feeds/rules/nope", headers=who["marketer"])).status_code == 404

    actions = [(e.action, e.object) for e in AuditLog(service.db).entries()
               if e.action.startswith("feed_rule.")]
    assert actions == [("feed_rule.put", "feed_rule:sun"), ("feed_rule.put", "feed_rule:rain"),
                       ("feed_rule.put", "feed_rule:rain"), ("feed_rule.delete", "feed_rule:rain")]


async def test_a_feed_round_reads_the_stored_rules(
        api: tuple[httpx.AsyncClient, FeedWatcher, dict[str, Any]], service: HqService) -> None:
    """take() without rules reads the merged set afresh (poll() reads it once a round)."""
    http, watcher, who = api
    item = FeedItem("news", "n1", "Sunny weekend ahead", "en")
    assert await watcher.take(item) is None
    assert (await http.put("/api/feeds/rules/sun", json=_rule("sun"),
                           headers=who["approver"])).status_code == 201
    assert await watcher.take(FeedItem("news", "n2", "Sunny weekend ahead", "en")) is not None


@pytest.mark.parametrize(("body", "field"), [
    (_rule("sun", languages=["xx"]), "languages[0]"),
    (_rule("sun", languages=[]), "languages"),
    (_rule("sun", flash={"stores": ["s1", "nowhere"]}), "flash.stores[1]"),
    (_rule("sun", sentiment_min=0.5, sentiment_max=0.2), "sentiment_min"),
    (_rule("sun", sentiment_min=-3), "$.sentiment_min"),
    (_rule("sun", keywords=[]), "keywords"),
    (_rule("sun", flash={"validity_s": 0}), "$.flash.validity_s"),
    (_rule("sun", flash={"format": "hologram"}), "flash: "),
    (_rule("sun", colour="red"), "colour"),
    (_rule("other"), "name"),
])
async def test_a_bad_rule_is_a_422_naming_its_field(
        api: tuple[httpx.AsyncClient, FeedWatcher, dict[str, Any]], body: dict[str, Any],
        field: str) -> None:
    http, watcher, who = api
    refused = watcher.service.stats.refused.get("feed_rule", 0)
    r = await http.put("/api/feeds/rules/sun", json=body, headers=who["approver"])
    assert r.status_code == 422, r.text
    assert any(field in p for p in r.json()["detail"]), r.json()
    assert watcher.service.stats.refused["feed_rule"] == refused + 1
    assert not watcher.stored.exists("sun")
    # the witness: the same rule fixed is stored
    assert (await http.put("/api/feeds/rules/sun", json=_rule("sun"),
                           headers=who["approver"])).status_code == 201


async def test_who_may_read_and_write_rules(
        api: tuple[httpx.AsyncClient, FeedWatcher, dict[str, Any]]) -> None:
    http, watcher, who = api
    for role in ("marketer", "analyst", "social_feed"):
        r = await http.put("/api/feeds/rules/sun", json=_rule("sun"), headers=who[role])
        assert r.status_code == 403, (role, r.text)
    assert (await http.get("/api/feeds/rules", headers=who["analyst"])).status_code == 403
    assert not watcher.stored.exists("sun")
    r = await http.put("/api/feeds/rules/bad.name", json=_rule("bad.name"), headers=who["approver"])
    assert r.status_code == 422 and "name" in r.json()["detail"][0]
    r = await http.put("/api/feeds/rules/sun", content=b"{", headers=who["approver"])
    assert r.status_code == 400
    r = await http.put("/api/feeds/rules/sun", json=_rule("sun"), headers=who["approver"])
    assert r.status_code == 201  # the witness: an approver's is stored
    assert (await http.delete("/api/feeds/rules/sun", headers=who["marketer"])).status_code == 403
    assert watcher.stored.exists("sun")
