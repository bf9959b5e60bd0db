"""``GET /api/campaigns/{cid}/leads``: a campaign's submitted lead forms, JSON or CSV.

Admins and marketers only (``hq.authz``); every read is audit-logged
(``leads.read`` on ``campaign:{cid}``, with how many rows went out), because the rows
are personal data. An unknown campaign is 404. ``format=csv`` gives one line a lead
and a column per form field (``hq.leads.leads_csv``); ``limit`` caps the rows (newest
first, at most 5000).
"""

from __future__ import annotations

import re
from typing import Annotated, Final, Literal

import msgspec
from fastapi import APIRouter, Query, Request, Response

from hq.deps import ServiceDep, audit, json_answer
from hq.leads import MAX_LEADS_PAGE, LeadRow, campaign_leads, leads_csv
from hq.refusals import Refused
from hq.service import NotFound

__all__ = ["LeadsAnswer", "leads_router"]

_FILENAME_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]+")


class LeadsAnswer(msgspec.Struct):
    campaign: str
    leads: list[LeadRow]


def leads_router() -> APIRouter:
    router = APIRouter()

    @router.get("/api/campaigns/{cid}/leads", responses={
        200: {"description": "the leads as JSON, or as text/csv with format=csv",
              "content": {"text/csv": {"schema": {"type": "string"}}}},
        404: {"description": "no such campaign"}})
    async def campaign_leads_route(
            request: Request, service: ServiceDep, cid: str,
            format: Literal["json", "csv"] = "json",
            limit: Annotated[int, Query(ge=1, le=MAX_LEADS_PAGE)] = MAX_LEADS_PAGE) -> Response:
        try:
            c = service.get_campaign(cid)
        except NotFound:
            raise Refused(404, "not_found", f"campaign {cid[:64]!r} not found") from None
        rows = await service.db.offload(campaign_leads, c.id, limit=limit)
        audit(request, "leads.read", f"campaign:{c.id}", after={"rows": len(rows),
                                                                "format": format})
        if format == "csv":
            name = _FILENAME_UNSAFE.sub("_", f"leads-{c.id}")[:100]
            return Response(leads_csv(rows), media_type="text/csv; charset=utf-8", headers={
                "Content-Disposition": f'attachment; filename="{name}.csv"',
                "Cache-Control": "no-store"})
        return json_answer(LeadsAnswer(campaign=c.id, leads=rows),
                           headers={"Cache-Control": "no-store"})

    return router
