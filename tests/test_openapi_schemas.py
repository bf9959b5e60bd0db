"""HQ's /openapi.json documents every route's request and answer (generated from the
msgspec structs), and /docs renders it from HQ's own files (a vendored Redoc), with no CDN."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.mqtt import MqttSettings
from hq.api_schemas import ANSWERS
from hq.authz import ROUTE_ROLES
from hq.server import HqServer
from tests.harness import bearer, token_for
from tests.test_console import ARTIFACTS, browser_page

# POSTs that act on the path alone and read no body
_BODILESS = {("POST", "/api/stores/{store_id}/publish"), ("POST", "/api/campaigns/{cid}/pause"),
             ("POST", "/api/campaigns/{cid}/resume"), ("POST", "/api/shoppers/{inbox}/opt-out"),
             ("POST", "/api/shoppers/{inbox}/member")}


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return schema if ref is None else doc["components"]["schemas"][ref.rsplit("/", 1)[1]]


@pytest.fixture
async def hq(broker: MosquittoProcess, tmp_path: Path) -> Any:
    async with HqServer(db_url=f"sqlite:///{tmp_path}/hq.sqlite", key_path=tmp_path / "k.pem",
                        mqtt=MqttSettings(port=broker.port), http_port=0, learn_every_s=0) as server:
        yield server


async def test_every_operation_documents_its_body_and_its_answers(hq: HqServer) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hq.http_port}") as c:
        doc = (await c.get("/openapi.json")).json()
    seen = 0
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            key = (method.upper(), path)
            seen += 1
            if method in {"post", "put", "patch"} and key not in _BODILESS:
                schema = op["requestBody"]["content"]["application/json"]["schema"]
                assert _resolve(doc, schema).get("properties"), key
            answers = {code: r for code, r in op["responses"].items() if code[0] in "23"}
            assert answers, key
            for code, r in answers.items():
                if code.startswith("3") or code == "204":
                    assert "content" not in r, (key, code)  # nothing documented that never comes
                    continue  # a redirect, "not modified" or "no content" has no body
                (media, body), = r["content"].items()
                assert body["schema"], (key, code, "empty schema")
                if media == "application/json":
                    assert _resolve(doc, body["schema"]).get("type") in {"object", "array"}, key
    # a request struct says it takes nothing else: unknown fields are refused (422)
    assert doc["components"]["schemas"]["Store"]["additionalProperties"] is False
    assert doc["components"]["schemas"]["Trigger"]["additionalProperties"] is False
    # the table names only real routes, so a renamed route cannot leave a stale entry
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert set(ANSWERS) <= documented
    assert set(ROUTE_ROLES) <= documented and seen == len(documented)  # every /api route


async def test_answers_match_their_documented_schema(hq: HqServer) -> None:
    """A few answers checked against the schema the document declares for them."""
    jsonschema = pytest.importorskip("jsonschema")
    base = f"http://127.0.0.1:{hq.http_port}"
    headers = bearer(token_for(hq.db, "admin"))
    async with httpx.AsyncClient(base_url=base, headers=headers) as c:
        doc = (await c.get("/openapi.json")).json()
        await c.post("/api/stores", json={"id": "s1", "name": "One"})
        await c.post("/api/stores/s1/zones", json={"id": "z1", "name": "Z"})
        calls = [("GET", "/health", "/health"), ("GET", "/api/me", "/api/me"),
                 ("GET", "/api/stores", "/api/stores"),
                 ("GET", "/api/stores/{store_id}/zones", "/api/stores/s1/zones"),
                 ("GET", "/api/console/stores", "/api/console/stores")]
        for method, template, url in calls:
            r = await c.request(method, url)
            schema = doc["paths"][template][method.lower()]["responses"][str(r.status_code)][
                "content"]["application/json"]["schema"]
            full = {**schema, "components": doc["components"]}
            jsonschema.validate(r.json(), full)  # refs resolve against #/components


async def test_docs_page_loads_only_hq_files_and_renders_the_operations(
        hq: HqServer, tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{hq.http_port}"
    async with httpx.AsyncClient(base_url=base) as c:
        page = await c.get("/docs")  # public, like /openapi.json: shapes, never data
        assert page.status_code == 200
        urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", page.text)
        assert urls and all(u.startswith("/") and not u.startswith("//") for u in urls), urls
        for u in urls:
            assert (await c.get(u)).status_code == 200, u
        assert (await c.get("/redoc")).status_code == 404  # FastAPI's CDN page is off
    requests: list[str] = []
    async with browser_page(tmp_path / "profile") as browser:
        # answered requests: the CSP stops Redoc's CDN logo before it leaves the browser
        browser.on("response", lambda r: requests.append(r.url))
        await browser.goto(f"{base}/docs")
        operations = browser.locator('[data-section-id^="operation/"]')
        await operations.first.wait_for(timeout=30_000)
        ops = await operations.count()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await browser.screenshot(path=str(ARTIFACTS / "docs.png"), full_page=False)
    assert ops >= len(ROUTE_ROLES)
    fetched = [u for u in requests if u.startswith(("http:", "https:"))]  # not blob: workers
    assert f"{base}/openapi.json" in fetched
    assert all(u.startswith(base) for u in fetched), [u for u in fetched if not u.startswith(base)]
