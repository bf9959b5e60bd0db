"""How HQ's HTTP side says no: one JSON shape, one log line, one counter per refusal.

Every refusal is ``{"detail": "...", "reason": "..."}`` (:data:`hq.openapi.REFUSAL_SCHEMA`):
``detail`` a sentence naming the field or parameter and the fix, ``reason`` a stable code
(``bad_token``, ``wrong_role``, ``method_not_allowed``, ``bad_parameter``,
``login_rate_limited``...). It is logged once at warning level with the caller (actor id,
the login name tried, or ``anonymous``) and the client address, and counted in
``aislecast_hq_auth_refusals_total{reason=...}`` (the HTTP counters also count it by
status). :class:`Refused` carries it from wherever it is decided: the ASGI middlewares
answer it with :func:`refuse`, handlers raise it and ``create_app``'s exception handler
answers with :func:`refusal_response`. :func:`parameter_refusal` turns FastAPI's
validation error for a query or path parameter into one, :func:`router_refusal` the
router's own 404 and 405 outside ``/api`` (inside, :class:`hq.auth.AuthMiddleware`
answers them before any router).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.types import Scope, Send

from aislecast.kernel.counters import by, count
from aislecast.kernel.logs import get_logger
from hq.accounts import Principal

__all__ = ["AuthStats", "Refused", "note_refusal", "parameter_refusal", "principal_of_scope",
           "refusal_response", "refuse", "router_refusal"]

log = get_logger(__name__)

# the fix for FastAPI's (pydantic's) error types that a query or path parameter can have
_FIXES: Final = {
    "int_parsing": "send a whole number",
    "int_from_float": "send a whole number",
    "float_parsing": "send a number",
    "bool_parsing": "send true or false",
    "missing": "add it",
}
_INPUT_SHOWN: Final = 40  # characters of a bad value repeated back


@dataclass(slots=True)
class AuthStats:
    refusals: dict[str, int] = by("reason", "HTTP requests refused by authentication, "
                                            "authorisation, CSRF, rate limit, parameter or "
                                            "body size checks")
    unaudited: int = count("state changes a handler did not audit (recorded generically)")
    login_failures: int = count("console logins refused for a wrong name or password")


class Refused(Exception):
    """A refusal: ``status``, a stable ``reason`` code and a ``detail`` sentence, with
    extra response ``headers`` (``Allow``, ``Retry-After``) and, when the caller is not
    an authenticated principal, who it claimed to be (``caller``, e.g. ``login:alice``)."""

    def __init__(self, status: int, reason: str, detail: str, *,
                 headers: Sequence[tuple[str, str]] = (), caller: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail
        self.headers, self.caller = tuple(headers), caller


def principal_of_scope(scope: Scope) -> Principal | None:
    p = scope.get("state", {}).get("principal")
    return p if isinstance(p, Principal) else None


def note_refusal(scope: Scope, stats: AuthStats, why: Refused) -> None:
    """The one log line and the count of a refusal."""
    p = principal_of_scope(scope)
    client = scope.get("client")
    log.warning("http refused", status=why.status, reason=why.reason,
                caller=p.actor if p else why.caller or "anonymous",
                method=scope.get("method"), path=scope.get("path"),
                client=client[0] if client else None)
    stats.refusals[why.reason] = stats.refusals.get(why.reason, 0) + 1


def _body(why: Refused) -> bytes:
    return msgspec.json.encode({"detail": why.detail, "reason": why.reason})


def refusal_response(request: Request, stats: AuthStats, exc: Refused) -> Response:
    note_refusal(request.scope, stats, exc)
    return Response(_body(exc), status_code=exc.status, media_type="application/json",
                    headers=dict(exc.headers))


async def refuse(scope: Scope, send: Send, stats: AuthStats, why: Refused) -> None:
    """Answer ``why`` from ASGI middleware; log it once and count it."""
    note_refusal(scope, stats, why)
    body = _body(why)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in why.headers]
    if why.status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="aislecast-hq"'))
    await send({"type": "http.response.start", "status": why.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _problem(error: dict[str, Any]) -> str:
    loc = [str(part) for part in error.get("loc", ())]
    where, name = (loc[0], ".".join(loc[1:])) if len(loc) > 1 else ("request", ".".join(loc))
    got = "" if error.get("type") == "missing" else f" (got {str(error.get('input'))[:_INPUT_SHOWN]!r})"
    fix = _FIXES.get(str(error.get("type")), "see its type in /openapi.json")
    return f"{where} parameter {name!r}: {error.get('msg', 'invalid')}{got}: {fix}"


def parameter_refusal(exc: RequestValidationError) -> Refused:
    """422 ``bad_parameter`` naming every bad query, path or header parameter, one line."""
    problems = [_problem(dict(e)) for e in exc.errors()]
    return Refused(422, "bad_parameter", "; ".join(problems) or "invalid request parameters")


def router_refusal(request: Request, exc: HTTPException) -> Refused | None:
    """The router's 404 (no such path) or 405 (with its ``Allow``) as a refusal; None
    for any other status (a handler's own HTTPException keeps FastAPI's answer)."""
    path, method = request.url.path, request.method
    if exc.status_code == 404:
        return Refused(404, "no_such_route", f"no route {path}: see /openapi.json")
    if exc.status_code == 405:
        allow = (exc.headers or {}).get("Allow", "")
        return Refused(405, "method_not_allowed", f"{path} does not take {method}; it takes {allow}",
                       headers=[("Allow", allow)])
    return None
