"""The approval routes, and the two ways a campaign reaches them.

``POST /api/campaigns/{id}/submit`` (editors), ``/approve`` and ``/reject`` (approvers
and admins; a rejection needs a comment), ``GET /api/approvals?state=submitted``
(editors: the queue). :func:`live_save` is what every save that may make a campaign
live goes through (:func:`hq.approvals.gate`), :func:`propose` saves a draft and
submits it in one step: a flash under four-eyes (``POST /api/flash`` answers 202 with
the draft) and every proposal from a feed (:mod:`hq.feeds`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

import msgspec
from fastapi import APIRouter, HTTPException, Request, Response

from aislecast.kernel.schema import Campaign, decode
from hq.accounts import Principal
from hq.approvals import LIVE, Approval, Approvals, Decision, Submit, gate
from hq.audit import AuditLog
from hq.authz import visible_campaign
from hq.campaigns import FlashRequest, flash_campaign, save_campaign
from hq.db import HqDb
from hq.deps import PrincipalDep, ServiceDep, audit, json_answer, state_of
from hq.openapi import json_body
from hq.refusals import Refused
from hq.service import HqService, NotFound

__all__ = ["approval_router", "approvals_of", "flash_route", "live_save", "person_of", "propose"]

_STATES: Final = ("submitted", "approved", "rejected", "all")


def approvals_of(request: Request) -> Approvals:
    return state_of(request, "approvals", Approvals)


async def _decision(request: Request, cls: type[Submit] | type[Decision]) -> Any:
    raw = await request.body()
    try:
        return decode(raw or b"{}", cls)
    except msgspec.ValidationError as exc:
        raise HTTPException(422, detail=f"invalid {cls.__name__}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise HTTPException(400, detail=f"body is not valid JSON: {exc}") from exc


async def live_save(request: Request, service: HqService, p: Principal, c: Campaign,
                    before: Campaign | None) -> Campaign:
    """Save ``c`` if the approval policy lets ``p`` do it; an approver's own live save
    under ``single`` is recorded as the approval (the save's audit entry names them)."""
    approvals = approvals_of(request)
    current = approvals.get(c.id)
    by_self = gate(approvals.policy, p.role, c, before, current)
    c = await save_campaign(service, c)
    if by_self:  # the caller's own audit entry of the save (an approver's) records it
        approvals.self_approved(c, person_of(service.db, p))
    return c


async def propose(service: HqService, approvals: Approvals, c: Campaign, *, actor: str,
                  comment: str, audit_log: AuditLog) -> tuple[Campaign, Approval]:
    """Save ``c`` as a draft (validated; nothing reaches a store) and submit it as ``actor``."""
    before = approvals.get(c.id)
    target: Literal["live", "scheduled"] = "scheduled" if c.status == "scheduled" else "live"
    c = await save_campaign(service, msgspec.structs.replace(c, status="draft"), push=False)
    a = approvals.submit(c, actor, Submit(comment=comment, status=target))
    audit_log.record(actor, "approval.submit", f"campaign:{c.id}", before=before,
                     after={"approval": a, "campaign": c})
    return c, a


def person_of(db: HqDb, p: Principal) -> str:
    """The person behind ``p``: a personal token is its owner (``user:NAME``), so one
    person's two tokens are still one pair of eyes; a service token is itself."""
    if p.actor.startswith("token:"):
        row = db.one("SELECT owner FROM api_tokens WHERE id = ?", (p.actor.removeprefix("token:"),))
        if row is not None and row[0]:
            return f"user:{row[0]}"
    return p.actor


def _visible(p: Principal, service: HqService, cid: str) -> Campaign:
    c = service.get_campaign(cid)
    if not visible_campaign(p, c):
        raise NotFound("campaign", cid)
    return c


@dataclass(frozen=True, slots=True)
class _Round:
    """What each approval route starts from: the body, the campaign (404 if unseen),
    the caller as a person and the approval round before the call."""

    req: Any
    campaign: Campaign
    approvals: Approvals
    before: Approval | None
    person: str

    @classmethod
    async def open(cls, request: Request, service: HqService, p: Principal, cid: str,
                   body: type[Submit] | type[Decision]) -> _Round:
        req = await _decision(request, body)
        c = _visible(p, service, cid)
        approvals = approvals_of(request)
        return cls(req, c, approvals, approvals.get(cid), person_of(service.db, p))


def approval_router() -> APIRouter:
    router = APIRouter()

    @router.post("/api/campaigns/{cid}/submit", openapi_extra=json_body(Submit))
    async def submit(cid: str, request: Request, service: ServiceDep, p: PrincipalDep) -> Response:
        r = await _Round.open(request, service, p, cid, Submit)
        a = r.approvals.submit(r.campaign, r.person, r.req)
        audit(request, "approval.submit", f"campaign:{cid}", before=r.before,
              after={"approval": a, "campaign": r.campaign})
        return json_answer(a)

    @router.post("/api/campaigns/{cid}/approve", openapi_extra=json_body(Decision))
    async def approve(cid: str, request: Request, service: ServiceDep, p: PrincipalDep) -> Response:
        r = await _Round.open(request, service, p, cid, Decision)
        a = r.approvals.approve(r.campaign, r.person, p.role, r.req)
        try:
            live = await save_campaign(service, msgspec.structs.replace(r.campaign, status=a.target))
        except BaseException:
            if r.before is not None:  # the approval stands only with the campaign live
                r.approvals.put(r.before, r.campaign)
            raise
        audit(request, "approval.approve", f"campaign:{cid}",
              before={"approval": r.before, "campaign": r.campaign},
              after={"approval": a, "campaign": live})
        return json_answer({"approval": a, "campaign": live})

    @router.post("/api/campaigns/{cid}/reject", openapi_extra=json_body(Decision))
    async def reject(cid: str, request: Request, service: ServiceDep, p: PrincipalDep) -> Response:
        r = await _Round.open(request, service, p, cid, Decision)
        a = r.approvals.reject(r.campaign, r.person, r.req)
        audit(request, "approval.reject", f"campaign:{cid}", before=r.before, after=a)
        return json_answer(a)

    @router.get("/api/approvals")
    async def listing(request: Request, service: ServiceDep, p: PrincipalDep,
                      state: str = "submitted") -> Response:
        if state not in _STATES:
            raise Refused(422, "bad_parameter", f"query parameter 'state': one of {', '.join(_STATES)}")
        rows = approvals_of(request).listing(None if state == "all" else state)
        out = []
        for a in rows:
            try:
                c = service.get_campaign(a.campaign)
            except NotFound:
                continue
            if visible_campaign(p, c):
                out.append({"approval": a, "campaign": c})
        return json_answer(out)

    return router


async def flash_route(request: Request, service: HqService, p: Principal,
                      req: FlashRequest) -> Response:
    """``POST /api/flash``: live at once (201) where the policy lets the caller; under
    four-eyes a submitted draft (202) that another approver approves."""
    approvals = approvals_of(request)
    c = flash_campaign(req)
    if approvals.policy.flash != "four_eyes":
        c = await live_save(request, service, p, c, None)
        audit(request, "campaign.flash", f"campaign:{c.id}", after=c)
        return json_answer(c, 201)
    c, a = await propose(service, approvals, c, actor=person_of(service.db, p), comment="flash",
                         audit_log=AuditLog(service.db))
    request.state.audited = True  # propose() wrote the entry
    assert a.state == "submitted" and c.status not in LIVE
    return json_answer(c, 202)
