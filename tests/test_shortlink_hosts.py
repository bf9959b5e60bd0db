"""Short links land only on configured hosts (hq.landing), and their printed URLs use
HQ's own address, never the request's Host header."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.errors import ConfigError
from aislecast.kernel.mqtt import MqttSettings
from hq.config import load_hq_config
from hq.db import HqDb
from hq.ingest import Ingest
from hq.landing import LandingHosts
from hq.server import HqServer
from hq.shortlink_store import DbShortLinkStore, make_mint_router
from hq.shortlinks import ShortLink, make_shortlink_router
from tests.harness import bearer, secure, token_for

ALLOWED = ["shop.example", "bücher.example", "promo.example:8443"]


async def _api(client: httpx.AsyncClient, method: str, path: str,
               body: dict[str, Any] | None = None, **kw: Any) -> httpx.Response:
    """Every API call of this file (the place to add a credential header)."""
    return await client.request(method, path, json=body, **kw)


@pytest.mark.parametrize(("url", "code"), [
    ("https://shop.example/coffee", None),
    ("http://shop.example/coffee", None),
    ("https://SHOP.Example/coffee", None),  # mixed case: the same host
    ("https://shop.example./coffee", None),  # trailing dot: the same host
    ("https://shop.example:443/coffee", None),  # the scheme's default port, written out
    ("https://xn--bcher-kva.example/", None),  # IDNA: punycode of an allowed name
    ("https://bücher.example/", None),  # ... and its Unicode form
    ("https://promo.example:8443/", None),
    ("https://bank.example@evil.example/", "userinfo"),
    ("https://shop.example@evil.example/", "userinfo"),
    ("https://evil.example@shop.example/", "userinfo"),  # urllib says shop: still refused
    ("https://user:pw@shop.example/", "userinfo"),
    ("https://evil.example\\@shop.example/", "bad_characters"),  # browsers: evil.example
    ("https:\\\\evil.example/", "bad_characters"),
    ("https://shop.example /", "bad_characters"),
    ("https://shop.example/\n", "bad_characters"),
    ("https://shop.example.evil.example/", "host_not_allowed"),
    ("https://evilshop.example/", "host_not_allowed"),
    ("https://sub.shop.example/", "host_not_allowed"),  # exact host, no subdomains
    ("https://shop.example:8443/", "host_not_allowed"),  # another port
    ("https://promo.example/", "host_not_allowed"),  # only its listed port
    ("https://sh\u043ep.example/", "host_not_allowed"),  # Cyrillic o: a look-alike, other punycode
    ("https://shop%2eexample/", "bad_host"),
    ("https://shop.example:99999/", "bad_host"),
    ("https://[::1]/", "bad_host"),
    ("javascript:alert(1)", "not_http"),
    ("data:text/html,<script>", "not_http"),
    ("ftp://shop.example/", "not_http"),
    ("//evil.example/", "not_http"),
    ("https://shop.example/" + "a" * 3000, "too_long"),
])
def test_landing_url_rules(url: str, code: str | None) -> None:
    refusal = LandingHosts(ALLOWED).problem(url)
    assert (refusal.code if refusal else None) == code, refusal


def test_config_names_a_bad_landing_host(tmp_path: Path) -> None:
    path = tmp_path / "hq.toml"
    path.write_text('[links]\nlanding_hosts = ["shop.example", "https://bad.example/"]\n')
    with pytest.raises(ConfigError) as err:
        load_hq_config(str(path))
    assert err.value.field == "links.landing_hosts[1]"
    path.write_text('[links]\nlanding_hosts = ["shop.example", "promo.example:8443"]\n')
    assert load_hq_config(str(path)).links.hosts().names() == ["promo.example:8443",
                                                               "shop.example"]
    assert load_hq_config(None).links.landing_hosts == []


def _app(db: HqDb, hosts: LandingHosts) -> tuple[FastAPI, DbShortLinkStore, dict[str, str]]:
    """The short-link routers behind HQ's auth middleware, and a staff caller's headers."""
    store = DbShortLinkStore(db, Ingest(db).store_events)
    app = FastAPI()
    app.include_router(make_shortlink_router(store, landing_hosts=hosts))
    app.include_router(make_mint_router(store, public_base_url="https://hq.example",
                                        landing_hosts=hosts))
    return app, store, secure(app, db, "marketer")


async def test_minting_refuses_other_hosts_with_a_422_and_counts_it(tmp_path: Path) -> None:
    hosts = LandingHosts(ALLOWED)
    app, store, auth = _app(HqDb(f"sqlite:///{tmp_path}/hq.sqlite"), hosts)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://hq", headers=auth) as c:
        good = await _api(c, "POST", "/api/shortlinks", {"url": "https://shop.example/coffee"})
        assert good.status_code == 201, good.text
        for url in ("https://bank.example@evil.example/", "https://evil.example\\@shop.example/",
                    "https://evil.example/", "javascript:alert(1)"):
            r = await _api(c, "POST", "/api/shortlinks", {"url": url})
            assert r.status_code == 422, (url, r.text)
            assert r.json()["detail"].startswith("url: ")
            assert "landing_hosts" in r.json()["hint"]
    assert store.stats.minted == 1
    assert hosts.stats.refused == {("mint", "userinfo"): 1, ("mint", "bad_characters"): 1,
                                   ("mint", "host_not_allowed"): 1, ("mint", "not_http"): 1}


async def test_a_stored_link_to_a_host_no_longer_allowed_is_never_followed(tmp_path: Path) -> None:
    hosts = LandingHosts(["shop.example"])
    app, store, _ = _app(HqDb(f"sqlite:///{tmp_path}/hq.sqlite"), hosts)
    store.add(ShortLink(code="Good123", url="https://shop.example/p"))
    store.add(ShortLink(code="Gone123", url="https://old-partner.example/p"))  # before the list
    store.add(ShortLink(code="Evil123", url="https://bank.example@evil.example/"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://hq") as c:
        ok = await _api(c, "GET", "/s/Good123?src=qr")
        assert ok.status_code == 302 and ok.headers["location"] == "https://shop.example/p"
        for code in ("Gone123", "Evil123"):
            r = await _api(c, "GET", f"/s/{code}?src=qr")
            assert r.status_code == 410
            assert "location" not in r.headers
            assert "retired" in r.text
    assert store.stats.clicks == {"qr": 1}  # the refused ones were not counted as clicks
    assert hosts.stats.refused == {("follow", "host_not_allowed"): 1, ("follow", "userinfo"): 1}


async def test_printed_urls_use_hqs_address_not_the_host_header(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    async with HqServer(db_url=f"sqlite:///{tmp_path}/hq.sqlite", key_path=tmp_path / "k.pem",
                        mqtt=MqttSettings(port=broker.port), http_port=0, learn_every_s=0) as hq, \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{hq.http_port}",
                              headers=bearer(token_for(hq.db, "marketer"))) as c:
        own = f"http://127.0.0.1:{hq.http_port}"
        r = await _api(c, "POST", "/api/shortlinks",
                       {"url": "https://shop.example/p", "tag": "T-1"},
                       headers={"Host": "attacker.example", "X-Forwarded-Host": "attacker.example"})
        assert r.status_code == 201, r.text
        minted = r.json()
        assert minted["short"] == f"{own}/s/{minted['code']}"
        assert all(minted[k].startswith(own + "/s/") for k in ("qr", "nfc"))
        stats = await _api(c, "GET", f"/api/shortlinks/{minted['code']}",
                           headers={"Host": "attacker.example"})
        assert stats.json()["short"].startswith(own + "/s/")
        # the body cannot choose the host either: the field is gone, and says so
        r = await _api(c, "POST", "/api/shortlinks",
                       {"url": "https://shop.example/q", "base_url": "https://attacker.example"})
        assert r.status_code == 422 and "base_url" in r.json()["detail"]
