"""``GET /api/analytics/funnel``: a campaign's funnel from the rollups, as JSON or CSV.

Parameters: ``campaign`` (required), ``store``, ``by`` (store, zone, hour, variant or
trigger), ``since`` / ``until`` (epoch seconds or ISO 8601; a time without an offset is
UTC; rounded down to the hour, ``until`` exclusive) and ``format`` (``json`` or
``csv``). Admins, marketers, approvers and analysts see every store; store staff see
their stores only, and a campaign of none of their stores, an unknown campaign and
another store's ``store`` are the same 404::

    $ curl -s "http://hq:8080/api/analytics/funnel?campaign=coffee&by=variant" \\
        -H "Authorization: Bearer $TOKEN"
    {"campaign": "coffee", "by": "variant", "since": null, "until": null,
     "rows": [{"key": "A", "decisions": 812, "offered": 700, ...}, ...]}
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Final, Literal

import msgspec
from fastapi import APIRouter, Response

from hq.authz import visible_campaign
from hq.deps import PrincipalDep, ServiceDep, json_answer
from hq.funnel import Breakdown, FunnelRow, funnel, to_csv
from hq.refusals import Refused
from hq.service import NotFound

__all__ = ["FunnelAnswer", "funnel_router", "parse_time"]

_FILENAME_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_TS: Final = 1e12


class FunnelAnswer(msgspec.Struct):
    campaign: str
    by: str | None
    store: str | None
    since: float | None
    until: float | None
    rows: list[FunnelRow]


def parse_time(name: str, text: str | None) -> float | None:
    """``text`` (epoch seconds or ISO 8601) as epoch seconds; :class:`Refused` 422 if
    it is neither."""
    if text is None or text == "":
        return None
    try:
        ts = float(text)
    except ValueError:
        try:
            dt = datetime.fromisoformat(text)
            ts = (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()
        except (ValueError, OverflowError):
            raise Refused(422, "bad_parameter", f"{name}: {text[:40]!r} is neither epoch "
                          "seconds nor an ISO 8601 time (2026-12-01T09:00:00Z)") from None
    if not (math.isfinite(ts) and 0 <= ts < _MAX_TS):
        raise Refused(422, "bad_parameter", f"{name}: {text[:40]!r} is not a time after 1970")
    return ts


def _not_found(cid: str) -> Refused:
    return Refused(404, "not_found", f"campaign {cid[:64]!r} not found")


def funnel_router() -> APIRouter:
    router = APIRouter()

    @router.get("/api/analytics/funnel", responses={
        200: {"description": "the funnel as JSON, or as text/csv with format=csv",
              "content": {"text/csv": {"schema": {"type": "string"}}}},
        404: {"description": "no such campaign (or not one of a store staff's stores)"},
        422: {"description": "a bad parameter, named"}})
    async def campaign_funnel(service: ServiceDep, p: PrincipalDep, *, campaign: str,
                              store: str | None = None, by: Breakdown | None = None,
                              since: str | None = None, until: str | None = None,
                              format: Literal["json", "csv"] = "json") -> Response:
        t0, t1 = parse_time("since", since), parse_time("until", until)
        try:
            c = service.get_campaign(campaign)
        except NotFound:
            raise _not_found(campaign) from None
        if not visible_campaign(p, c):
            raise _not_found(campaign)
        stores: set[str] | None = None if p.stores is None else set(p.stores)
        if store is not None:
            if not p.sees(store):
                raise Refused(404, "not_found", f"store {store[:64]!r} not found")
            stores = {store}
        rows = await service.db.offload(funnel, c.id, by=by, stores=stores, since=t0, until=t1)
        if format == "csv":
            name = _FILENAME_UNSAFE.sub("_", f"funnel-{c.id}-{by or 'total'}")[:100]
            return Response(to_csv(rows, by), media_type="text/csv; charset=utf-8", headers={
                "Content-Disposition": f'attachment; filename="{name}.csv"',
                "Cache-Control": "no-store"})
        answer = FunnelAnswer(campaign=c.id, by=by, store=store, since=t0, until=t1, rows=rows)
        return json_answer(answer, headers={"Cache-Control": "no-store"})

    return router
