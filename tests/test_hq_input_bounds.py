"""Long and odd values on every write route of a real HQ: 4xx with a reason, never 5xx.

Hypothesis drives a synchronous HTTP client in a worker thread against the real HQ
(uvicorn, SQLite, Mosquitto) running on the test's event loop; examples are bounded
and the seed is printed by hypothesis on failure.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.mqtt import MqttSettings
from hq.server import HqServer
from tests.harness import bearer, token_for

ODD = st.one_of(
    st.text(min_size=0, max_size=80),
    st.text(min_size=65, max_size=5_000),  # past every bound
    st.sampled_from(["", "+", "#", "a/b", "..", "../../etc/passwd", "\x00", " ", "Europe/Berlin",
                     "A" * 300, "é" * 70, "x" * 2_001, "UTC", "store-1"]),
)


def _api(c: httpx.Client, method: str, path: str, body: object = None) -> httpx.Response:
    """Every API call of this file (the place to add a credential header)."""
    return c.request(method, path, json=body)


def _write_calls(v: str) -> list[tuple[str, str, Any]]:
    """Each write route with ``v`` in one field or path segment of a valid request."""
    p = quote(v, safe="")
    creative = {"id": "a", "title": "t"}
    campaign = {"id": "c1", "name": "n", "stores": ["s1"], "creatives": [creative]}
    return [
        ("POST", "/api/stores", {"id": v, "name": "n", "tz": "UTC"}),
        ("POST", "/api/stores", {"id": "s1", "name": v, "tz": "UTC"}),
        ("POST", "/api/stores", {"id": "s1", "name": "n", "tz": v}),
        ("POST", f"/api/stores/{p}/zones", {"id": "z1", "name": "Z"}),
        ("POST", "/api/stores/s1/zones", {"id": v, "name": "Z"}),
        ("POST", "/api/stores/s1/zones", {"id": "z1", "name": v, "kind": v}),
        ("POST", "/api/stores/s1/beacons", {"id": v, "zone": "z1"}),
        ("POST", "/api/stores/s1/beacons", {"id": "b1", "zone": v, "uuid": v}),
        ("POST", f"/api/stores/{p}/publish", None),
        ("POST", "/api/campaigns", campaign | {"id": v}),
        ("POST", "/api/campaigns", campaign | {"name": v}),
        ("POST", "/api/campaigns", campaign | {"stores": [v]}),
        ("POST", "/api/campaigns", campaign | {"schedule": {"tz": v}}),
        ("POST", "/api/campaigns", campaign | {"creatives": [{"id": v, "title": v}]}),
        ("POST", "/api/campaigns", campaign | {"trigger": {"kind": "enter", "zones": [v]}}),
        ("PUT", f"/api/campaigns/{p}", campaign | {"id": v}),
        ("POST", f"/api/campaigns/{p}/pause", None),
        ("POST", "/api/flash", {"title": v, "stores": ["s1"]}),
        ("POST", "/api/flash", {"title": "t", "stores": [v], "id": v}),
        ("POST", "/api/shoppers", {"consents": [v]}),
        ("POST", f"/api/shoppers/{p}/opt-out", None),
        ("POST", "/api/shortlinks", {"url": v}),
        ("POST", "/api/shortlinks", {"url": "https://shop.example/", "tag": v, "store": v}),
    ]


@pytest.mark.slow
async def test_odd_values_on_every_write_route_get_4xx_never_5xx(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    async with HqServer(db_url=f"sqlite:///{tmp_path}/hq.sqlite", key_path=tmp_path / "k.pem",
                        mqtt=MqttSettings(port=broker.port), http_port=0, learn_every_s=0) as hq:
        base = f"http://127.0.0.1:{hq.http_port}"
        auth = bearer(token_for(hq.db, "admin"))
        seen: dict[int, int] = {}

        @settings(max_examples=40, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow])
        @given(ODD)
        def fuzz(v: str) -> None:
            with httpx.Client(base_url=base, timeout=30, headers=auth) as c:
                _api(c, "POST", "/api/stores", {"id": "s1", "name": "n", "tz": "UTC"})
                _api(c, "POST", "/api/stores/s1/zones", {"id": "z1", "name": "Z"})
                for method, path, body in _write_calls(v):
                    r = _api(c, method, path, body)
                    seen[r.status_code] = seen.get(r.status_code, 0) + 1
                    assert r.status_code < 500, (method, path, v[:80], r.text[:300])

        await asyncio.to_thread(fuzz)
        assert hq.app.state.metrics.snapshot()["http"]  # the routes were really served
        assert seen.get(422, 0) > 0 and seen.get(201, 0) > 0  # both refused and accepted


async def test_the_reported_values_are_422s_naming_the_field(
    broker: MosquittoProcess, tmp_path: Path
) -> None:
    async with HqServer(db_url=f"sqlite:///{tmp_path}/hq.sqlite", key_path=tmp_path / "k.pem",
                        mqtt=MqttSettings(port=broker.port), http_port=0, learn_every_s=0) as hq:
        def run() -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{hq.http_port}", timeout=30,
                              headers=bearer(token_for(hq.db, "admin"))) as c:
                ok = _api(c, "POST", "/api/stores", {"id": "s1", "name": "n", "tz": "Europe/Berlin"})
                assert ok.status_code == 201  # the witness: a good store is taken
                cases = [
                    ({"id": "s2", "name": "n", "tz": "A" * 300}, "tz: "),
                    ({"id": "s2", "name": "n", "tz": "../../../etc/passwd"}, "tz: "),
                    ({"id": "s" * 65, "name": "n", "tz": "UTC"}, "id: "),
                    ({"id": "a/b", "name": "n", "tz": "UTC"}, "id: "),
                    ({"id": "s2", "name": "n" * 201, "tz": "UTC"}, "name: "),
                ]
                for body, field in cases:
                    r = _api(c, "POST", "/api/stores", body)
                    assert r.status_code == 422, r.text
                    assert any(p.startswith(field) for p in r.json()["detail"]), r.text
                r = _api(c, "POST", "/api/campaigns", {
                    "id": "c1", "name": "n", "stores": ["s1"], "creatives": [{"id": "a", "title": "t"}],
                    "schedule": {"tz": "B" * 300}})
                assert r.status_code == 422
                assert any(p.startswith("schedule.tz: ") for p in r.json()["detail"]), r.text

        await asyncio.to_thread(run)
        assert hq.service.stats.refused == {"store": 5, "campaign": 1}
        text = hq.metrics.exposition().decode()
        assert 'aislecast_hq_service_refused_total{what="store"} 5.0' in text
