"""HQ's audit log: who changed what, when, with the object before and after.

Every state-changing API call writes one row (``actor`` is ``user:NAME``,
``token:ID`` or ``cli:USER``; ``action`` names the operation, e.g.
``campaign.update``; ``object`` is ``campaign:c1``, ``store:s1``...; ``before`` and
``after`` are the JSON of the object, ``null`` when it did not exist or was removed).
Handlers record their own entries with the objects they read and wrote; a state change
that finished without one is still recorded by :class:`hq.auth.AuthMiddleware` (action
``METHOD /route``) and logged as a warning, so nothing changes unrecorded.

``GET /api/audit?since=UNIX_TS&object=campaign:c1&limit=100`` (admins) lists entries
oldest first.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Final

import msgspec
from fastapi import APIRouter, Request, Response

from hq.db import HqDb

__all__ = ["AUDIT_PAGE_MAX", "AuditEntry", "AuditLog", "audit_router"]

AUDIT_PAGE_MAX: Final = 1_000  # entries per GET /api/audit; page on with ?since=


class AuditEntry(msgspec.Struct, frozen=True):
    id: str
    ts: float
    actor: str
    action: str
    object: str
    before: Any = None
    after: Any = None


def _json_text(obj: object) -> str | None:
    return None if obj is None else msgspec.json.encode(obj).decode()


class AuditLog:
    def __init__(self, db: HqDb) -> None:
        self.db = db

    def record(self, actor: str, action: str, obj: str, *, before: object = None,
               after: object = None) -> AuditEntry:
        e = AuditEntry(uuid.uuid4().hex, time.time(), actor, action, obj,
                       msgspec.to_builtins(before), msgspec.to_builtins(after))
        self.db.execute("INSERT INTO audit (id, ts, actor, action, object, before, after)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (e.id, e.ts, actor, action, obj, _json_text(e.before), _json_text(e.after)))
        return e

    def entries(self, *, since: float | None = None, obj: str | None = None,
                limit: int = AUDIT_PAGE_MAX) -> list[AuditEntry]:
        sql = "SELECT id, ts, actor, action, object, before, after FROM audit WHERE 1 = 1"
        args: list[object] = []
        if since is not None:
            sql, args = sql + " AND ts >= ?", [*args, since]
        if obj is not None:
            sql, args = sql + " AND object = ?", [*args, obj]
        rows = self.db.query(sql + " ORDER BY ts, id LIMIT ?", [*args, min(limit, AUDIT_PAGE_MAX)])
        return [AuditEntry(r[0], float(r[1]), r[2], r[3], r[4],
                           None if r[5] is None else msgspec.json.decode(r[5]),
                           None if r[6] is None else msgspec.json.decode(r[6])) for r in rows]


def audit_router(log: AuditLog) -> APIRouter:
    router = APIRouter()

    @router.get("/api/audit")
    async def audit(request: Request, since: float | None = None, object: str | None = None,
                    limit: int = AUDIT_PAGE_MAX) -> Response:
        del request
        if limit < 1:
            return Response(b'{"detail":"limit: must be at least 1"}', 422,
                            media_type="application/json")
        return Response(msgspec.json.encode(log.entries(since=since, obj=object, limit=limit)),
                        media_type="application/json")

    return router
