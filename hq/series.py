"""The console's funnel breakdowns straight from the event log (a stand-in for rollups).

``GET /api/analytics/funnel?campaign=ID&by=hour|store|zone|variant`` answers
``{"by": ..., "rows": [{"key": ..., "impressions": n, "deliveries": n, "opens": n,
"clicks": n, "redemptions": n, "leads": n}, ...]}``: one row per hour (``key`` is the
hour's start, epoch seconds, ascending), store, zone (``key`` the zone, with its
``store``) or creative variant. Phones' feedback events carry no zone or variant, so
they are attributed through their offer's ``offer_published`` event (the ``events_offer``
index). ``leads`` are distinct shoppers who clicked, per row. ``hours`` (default and
at most 2160, 90 days) bounds how far back it reads.

This scans the event log (off the event loop, :meth:`hq.db.HqDb.offload`); hourly
rollups may replace it: :func:`mount_series` adds the route only when no other router
serves that path. Store staff get only their stores' events, and a campaign they may
not see is 404 like one that does not exist.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Final, Literal

import msgspec
from fastapi import APIRouter, FastAPI, Query, Response
from starlette.routing import Match

from hq.authz import visible_campaign
from hq.db import HqDb
from hq.deps import PrincipalDep, ServiceDep
from hq.service import NotFound

__all__ = ["FUNNEL_PATH", "MAX_HOURS", "SERIES", "funnel_rows", "mount_series"]

FUNNEL_PATH: Final = "/api/analytics/funnel"
MAX_HOURS: Final = 90 * 24
#: The counted series, in the order the console draws them.
SERIES: Final = ("impressions", "deliveries", "opens", "clicks", "redemptions", "leads")
_KINDS: Final = {"offer_published": "impressions", "offer_delivered": "deliveries",
                 "offer_opened": "opens", "offer_clicked": "clicks",
                 "offer_redeemed": "redemptions"}
By = Literal["hour", "store", "zone", "variant"]


def _key_sql(db: HqDb, by: By) -> str:
    if by == "hour":  # integer hour; PostgreSQL rounds a cast, so floor first
        ts = "CAST(floor(e.ts) AS BIGINT)" if db.dialect == "postgresql" else "CAST(e.ts AS INTEGER)"
        return f"({ts} / 3600) * 3600"
    if by == "store":
        return "e.store"
    if by == "zone":
        return "COALESCE(e.zone, p.zone)"
    return "COALESCE(e.variant, p.variant)"


def funnel_rows(db: HqDb, by: By, campaign: str | None = None,
                stores: frozenset[str] | None = None, since: float = 0.0) -> list[dict[str, Any]]:
    """The funnel of ``campaign`` (all when None) per ``by``; ``stores`` filters."""
    key = _key_sql(db, by)
    where = [f"e.kind IN ({','.join('?' * len(_KINDS))})", "e.ts >= ?"]
    params: list[Any] = [*_KINDS, since]
    if campaign is not None:
        where.append("e.campaign = ?")
        params.append(campaign)
    if stores is not None:
        if not stores:
            return []
        where.append(f"e.store IN ({','.join('?' * len(stores))})")
        params.extend(sorted(stores))
    join = ("" if by in {"hour", "store"} else  # feedback rows lack only zone and variant
            " LEFT JOIN events p ON p.offer = e.offer AND p.kind = 'offer_published'"
            " AND e.kind <> 'offer_published'")
    sql = (f"SELECT {key}, e.store, e.kind, count(*), count(DISTINCT e.inbox) FROM events e"  # noqa: S608 - fixed text, values are placeholders
           f"{join} WHERE {' AND '.join(where)} GROUP BY {key}, e.store, e.kind")
    rows: dict[tuple[Any, str], dict[str, Any]] = {}
    for k, store, kind, n, shoppers in db.query(sql, params):
        if k is None:
            continue
        ident = (k, store if by == "zone" else "")
        row = rows.setdefault(ident, {"key": int(k) if by == "hour" else str(k),
                                      **({"store": store} if by == "zone" else {}),
                                      **dict.fromkeys(SERIES, 0)})
        row[_KINDS[kind]] += int(n)
        if kind == "offer_clicked":
            row["leads"] += int(shoppers)
    return sorted(rows.values(), key=lambda r: (r["key"], r.get("store", "")))


def _router() -> APIRouter:
    router = APIRouter()

    @router.get(FUNNEL_PATH)
    async def funnel(service: ServiceDep, p: PrincipalDep,
                     by: Annotated[By, Query()] = "hour",
                     campaign: Annotated[str | None, Query(max_length=64)] = None,
                     hours: Annotated[int, Query(ge=1, le=MAX_HOURS)] = MAX_HOURS) -> Response:
        if campaign is not None and not visible_campaign(p, service.get_campaign(campaign)):
            raise NotFound("campaign", campaign)  # the same answer as an unknown id
        since = time.time() - hours * 3600.0
        rows = await service.db.offload(funnel_rows, by, campaign, p.stores, since)
        return Response(msgspec.json.encode({"by": by, "campaign": campaign, "rows": rows}),
                        media_type="application/json")

    return router


def mount_series(app: FastAPI) -> None:
    """Serve :data:`FUNNEL_PATH` unless another router (rollups) already does."""
    probe = {"type": "http", "path": FUNNEL_PATH, "method": "GET", "root_path": ""}
    if not any(r.matches(probe)[0] is Match.FULL for r in app.router.routes):
        app.include_router(_router())
