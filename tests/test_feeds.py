"""Flash proposals from feeds and social posts (hq.feeds): the sentiment lexicon per
language, rule matching, feed files served on 127.0.0.1 by a real HTTP server (valid in
two languages, malformed, huge, unchanged), and hostile webhook bodies."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from aislecast.apps.feed_server import FeedFiles, rss
from aislecast.kernel.schema import Store
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from hq.api import create_app
from hq.approvals import Approvals
from hq.db import HqDb
from hq.feed_rules import FeedItem, FeedRule, FeedSettings, FeedSource, FlashTemplate, matches
from hq.feeds import FeedWatcher
from hq.feeds_api import MAX_WEBHOOK_BYTES
from hq.ingest import Ingest
from hq.sentiment import LEXICON, score
from hq.service import HqService
from tests.conftest_pg import BACKENDS, hq_url
from tests.harness import bearer, token_for

RAIN = FeedRule(name="rain", keywords=["rain", "regen", "pluie", "lluvia"], sentiment_min=-0.5,
                flash=FlashTemplate(title="Umbrellas -30 %", stores=["s1"], validity_s=1200))
ACME = FeedRule(name="acme", keywords=["wins", "gagne"], entities=["Acme FC"],
                flash=FlashTemplate(title="Acme won: beer -20 %", stores=["s1"]))

ATOM_FR = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="fr"><title>Actu</title>
<id>urn:actu</id><updated>2026-12-01T10:00:00Z</updated>
<entry><id>urn:actu:1</id><title>Acme FC gagne la finale, la f\xc3\xaate continue</title>
<updated>2026-12-01T10:00:00Z</updated><summary>Victoire magnifique</summary></entry>
</feed>"""


def test_the_lexicon_scores_each_language() -> None:
    assert set(LEXICON) >= {"en", "de", "fr", "es"}
    assert all(len(words) >= 30 for words in LEXICON.values())
    cases = {
        "en": ("Sunny weekend ahead, fans celebrate the record", "Flood: two dead, many injured"),
        "de": ("Sonniges Wochenende, Jubel nach dem Sieg", "Hochwasser: Tote und Verletzte"),
        "fr": ("Victoire des Bleus, quelle joie", "Inondation et incendie : deux morts"),
        "es": ("Fiesta y alegría tras la victoria", "Tragedia: incendio y heridos"),
    }
    for lang, (good, bad) in cases.items():
        assert score(good, lang) > 0.5, (lang, good)
        assert score(bad, lang) < -0.5, (lang, bad)
    assert score("nothing to see here", "en") == 0.0
    assert score("not happy", "en") < 0 < score("happy", "en")  # a negation turns it
    assert score("Katastrophe", "de-AT") < 0  # a region tag, a stem's prefix


def test_rules_match_keywords_entities_language_and_sentiment() -> None:
    item = FeedItem("n", "1", "Heavy rain expected all afternoon", "en")
    assert matches(RAIN, item) is not None
    assert matches(RAIN, FeedItem("n", "2", "Starker Regen am Nachmittag", "de")) is not None
    # a disaster headline is kept away from a cheerful offer by the sentiment floor
    assert matches(RAIN, FeedItem("n", "3", "Rain floods the town, two dead", "en")) is None
    assert matches(ACME, FeedItem("n", "4", "Acme FC wins the cup", "en")) is not None
    assert matches(ACME, FeedItem("n", "5", "acme fc wins the cup", "en")) is None  # entities as written
    only_de = FeedRule(name="de", keywords=["regen"], languages=["de"], flash=RAIN.flash)
    assert matches(only_de, FeedItem("n", "6", "Regen", "en")) is None


@pytest.fixture(params=BACKENDS)
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HqService]:
    """HQ's service on SQLite and on PostgreSQL (approvals, feed_items, feed_state)."""
    with hq_url(request.param, tmp_path) as url:
        db = HqDb(url)
        svc = HqService(db, Signer(load_or_create_signing_key(tmp_path / "k.pem")))
        svc.upsert_store(Store(id="s1", name="Store 1", tz="Europe/Berlin"))
        yield svc
        db.close()


async def test_feed_files_on_127_0_0_1_valid_malformed_huge_and_unchanged(service: HqService) -> None:
    de = rss("Lokales", [("de-1", "Regen ab Mittag", "Schirme nicht vergessen"),
                         ("de-2", "Neues Rathaus eröffnet", "")], language="de")
    huge = rss("Big", [(f"b{i}", "rain " * 50, "x" * 500) for i in range(400)])
    files = {"/de.rss": de, "/fr.atom": ATOM_FR, "/broken.rss": b"<rss><channel><item>oops",
             "/html": b"<html><body>not a feed</body></html>", "/huge.rss": huge}
    async with FeedFiles(files) as served:
        sources = [FeedSource(name=n, url=served.url(p)) for n, p in (
            ("de", "/de.rss"), ("fr", "/fr.atom"), ("broken", "/broken.rss"), ("html", "/html"),
            ("huge", "/huge.rss"), ("gone", "/missing.rss"))]
        settings = FeedSettings(sources=sources, rules=[RAIN, ACME], max_bytes=64 * 1024)
        watcher = FeedWatcher(service, settings, Approvals(service.db))
        async with watcher.client() as http:
            drafts = {s.name: await watcher.poll(http, s) for s in sources}
            again = await watcher.poll(http, sources[0])  # unchanged: a 304, nothing new
        assert served.hits[("/de.rss", 304)] == 1
    assert len(drafts["de"]) == 1 and len(drafts["fr"]) == 1, drafts
    assert drafts["broken"] == drafts["html"] == drafts["huge"] == drafts["gone"] == again == []
    s = watcher.stats
    assert s.skipped["malformed_feed"] == 2
    assert s.skipped["feed_too_big"] == 1
    assert s.skipped["http_error"] == 1
    assert s.fetches["not_modified"] == 1
    assert s.proposals == 2 and s.last_draft_ms > 0
    rain = service.get_campaign(drafts["de"][0])
    assert rain.status == "draft" and rain.scenario == "flash" and rain.validity_s == 1200
    assert rain.creatives[0].title == "Umbrellas -30 %" and rain.stores == ["s1"]
    pending = Approvals(service.db).listing()
    assert sorted(a.campaign for a in pending) == sorted(drafts["de"] + drafts["fr"])
    assert {a.submitted_by for a in pending} == {"feed:de", "feed:fr"}
    # the same item again (a feed that changed elsewhere) is not proposed twice
    assert await watcher.take(FeedItem("de", "de-1", "Regen ab Mittag", "de")) is None
    assert watcher.stats.duplicates == 1


@pytest.fixture
async def app_http(service: HqService) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    approvals = Approvals(service.db)
    watcher = FeedWatcher(service, FeedSettings(rules=[RAIN], max_post_chars=1000), approvals)
    app = create_app(service, Ingest(service.db), feeds=watcher)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hq") as c:
        yield app, c


async def test_the_webhook_refuses_hostile_bodies_and_skips_huge_posts(
        app_http: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, http = app_http
    db = app.state.service.db
    token = bearer(token_for(db, "social_feed"))
    url = "/api/feeds/social"
    assert (await http.post(url, json={"posts": [{"id": "1", "text": "rain"}]},
                            headers=bearer(token_for(db, "marketer")))).status_code == 403
    hostile = [
        (b"not json", 400), (b"[" * 5000 + b"]" * 5000, 422), (b'{"posts": [{"id": "1"', 400),
        (b'{"posts": []}', 422),
        (b'{"posts": [{"id": "1"}]}', 422), (b'{"posts": [{"id": "1", "text": "x", "evil": 1}]}', 422),
        (b'{"posts": [{"id": 5, "text": "x"}]}', 422),
        (b'{"posts": [' + b",".join([b'{"id": "i", "text": "x"}'] * 101) + b"]}", 422),
        (b'{"posts": [{"id": "1", "text": "' + b"a" * MAX_WEBHOOK_BYTES + b'"}]}', 413),
    ]
    for body, status in hostile:
        r = await http.post(url, content=body, headers=token | {"content-type": "application/json"})
        assert r.status_code == status, (body[:40], r.text)
        assert r.json()["reason"] in {"bad_body", "body_too_large"}
    skipped = app.state.metrics.snapshot()["feeds"]["skipped"]
    assert skipped["webhook_not_json"] == 2 and skipped["webhook_bad_shape"] == 6
    assert skipped["webhook_too_big"] == 1
    posts = {"posts": [{"id": "p1", "text": "Rain all day, grab an umbrella", "lang": "en"},
                       {"id": "p2", "text": "rain " * 300, "lang": "en"},
                       {"id": "p3", "text": "Nice weather", "lang": "en"}]}
    r = await http.post(url, json=posts, headers=token)
    assert r.status_code == 200, r.text
    results = r.json()["posts"]
    assert [x["result"] for x in results] == ["proposed", "skipped", "no_match"]
    assert results[1]["reason"] == "huge_post"
    r = await http.post(url, json={"posts": posts["posts"][:1]}, headers=token)
    assert r.json()["posts"][0]["result"] == "duplicate"
    # a rule whose template names a store HQ does not have: skipped with the reason
    watcher = app.state.feeds
    watcher.add(rules=[FeedRule(name="ghost", keywords=["snow"], flash=FlashTemplate(
        title="Sledges", stores=["nowhere"]))])
    r = await http.post(url, json={"posts": [{"id": "p4", "text": "snow tonight"}]}, headers=token)
    assert r.json()["posts"][0] == {"id": "p4", "result": "skipped", "reason": "bad_template"}
    pending = (await http.get("/api/approvals", headers=bearer(token_for(db, "approver")))).json()
    assert [p["campaign"]["id"] for p in pending] == [results[0]["campaign"]]
    assert pending[0]["approval"]["submitted_by"] == "feed:social-social"
