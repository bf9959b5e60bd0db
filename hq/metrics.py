"""HQ's metrics: Prometheus text at ``GET /metrics``, the same numbers as JSON at
``GET /api/metrics``, and the HTTP request counters.

Every component keeps its counters in one stats dataclass (ingest, router, acks,
service, console board, short links, learner, republisher, the MQTT link, HTTP);
:class:`HqMetrics` puts them on a :class:`~prometheus_client.CollectorRegistry` of its
own through :class:`~aislecast.kernel.counters.StatsCollector`, so two HQs in one
process (tests) never share a counter, and nothing is listed twice. Names are
``aislecast_hq_<component>_<counter>``, e.g. ``aislecast_hq_ingest_events_ingested_total``
and ``aislecast_hq_http_requests_total{method="GET",route="/health",status="200"}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aislecast.kernel.counters import StatsCollector, by, count, snapshot
from hq.deps import json_answer, state_of

__all__ = ["NAMESPACE", "HqMetrics", "HttpMetricsMiddleware", "HttpStats", "metrics_router"]

NAMESPACE: Final = "aislecast_hq"

# Requests that matched no route are counted under this label, never under their raw
# path: a scanner probing random URLs must not create a time series per URL.
_UNROUTED: Final = "<unrouted>"


@dataclass(slots=True)
class HttpStats:
    requests: dict[tuple[str, str, str], int] = by(
        ("method", "route", "status"), "HTTP requests answered, per route template and status")
    refusals: dict[str, int] = by("status", "HTTP requests refused with a 4xx status")
    errors: int = count("HTTP requests whose handler raised (answered 500)")


class HttpMetricsMiddleware:
    """Counts every HTTP response by method, route template and status (pure ASGI)."""

    def __init__(self, app: ASGIApp, stats: HttpStats) -> None:
        self.app = app
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        except Exception:
            self.stats.errors += 1
            raise
        finally:
            self._count(scope, status)

    def _count(self, scope: Scope, status: int) -> None:
        route = scope.get("route")  # set by FastAPI's router on the scope it was given
        path = getattr(route, "path", None) or _UNROUTED
        key = (str(scope.get("method", "")), str(path), str(status))
        self.stats.requests[key] = self.stats.requests.get(key, 0) + 1
        if 400 <= status < 500:
            self.stats.refusals[str(status)] = self.stats.refusals.get(str(status), 0) + 1


class HqMetrics:
    """One registry over ``sources`` (component name -> its stats dataclass)."""

    def __init__(self, sources: Mapping[str, object]) -> None:
        self.sources = dict(sources)
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(StatsCollector(NAMESPACE, self.sources))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return snapshot(self.sources)


def metrics_router() -> APIRouter:
    """``GET /metrics`` (Prometheus text) and ``GET /api/metrics`` (JSON) from
    ``app.state.metrics``."""
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def prometheus(request: Request) -> Response:
        return Response(state_of(request, "metrics", HqMetrics).exposition(), media_type=CONTENT_TYPE_LATEST)

    @router.get("/api/metrics")
    async def metrics_json(request: Request) -> Response:
        return json_answer(state_of(request, "metrics", HqMetrics).snapshot())

    return router
