"""The console's login: ``GET /console/login`` (the page), ``POST /console/login``
(JSON ``{"name": ..., "password": ...}``) and ``POST /console/logout``.

A login sets two cookies, both ``SameSite=Strict`` (a link or form from another site
never carries them) and ``Secure`` when HQ is reached over HTTPS:

- ``aislecast_session``: the session's secret, ``HttpOnly`` (page scripts never see it);
  HQ keeps its SHA-256 with the user and an expiry (:data:`hq.accounts.SESSION_S`);
- ``aislecast_csrf``: readable by the console's script, which sends it back in
  ``X-CSRF-Token`` with every change (:class:`hq.auth.AuthMiddleware` checks it).

The login itself takes JSON only (a cross-site form cannot send it without a preflight
HQ does not grant) and refuses a foreign ``Origin``; a wrong name or password is one
401 for both, after the same argon2 work, counted in
``aislecast_hq_auth_login_failures_total``. Repeated failures are refused with 429 and
``Retry-After`` before any password is checked (:mod:`hq.login_limits`: per user and
address, with looser bounds per address and per user). Logging out deletes the session
row.
"""

from __future__ import annotations

import asyncio
import hmac
from importlib.resources import files

import msgspec
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from aislecast.kernel.schema import decode
from hq.accounts import Accounts, Principal
from hq.audit import AuditLog
from hq.auth import CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE, cookie
from hq.deps import state_of
from hq.login_limits import LoginLimiter
from hq.refusals import AuthStats, Refused

__all__ = ["LoginRequest", "login_router", "session_of"]

_STATIC = files("hq") / "static"
_BOUNDS = {"pair": "for this user from this address", "address": "from this address",
           "account": "for this user, and this address has failed on it"}


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    password: str


def session_of(request: Request) -> Principal | None:
    """The console user of ``request``'s session cookie, if it is live."""
    secret = cookie(request.scope, SESSION_COOKIE)
    return None if secret is None else state_of(request, "accounts", Accounts).session_principal(secret)


def _same_origin(request: Request) -> None:
    origin = request.headers.get("origin")
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if origin is not None and origin != own:
        raise Refused(403, "cross_origin", f"Origin {origin} is not this HQ's")


def login_router() -> APIRouter:
    page = (_STATIC / "login.html").read_text(encoding="utf-8")
    router = APIRouter()

    @router.get("/console/login", include_in_schema=False)
    async def login_page() -> Response:
        return HTMLResponse(page)

    @router.post("/console/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        _same_origin(request)
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise Refused(415, "not_json", "log in with a JSON body "
                          '{"name": ..., "password": ...} (Content-Type: application/json)')
        try:
            req = decode(await request.body(), LoginRequest)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise Refused(422, "bad_login_body", f"invalid login: {exc}") from None
        accounts = state_of(request, "accounts", Accounts)
        limiter = state_of(request, "login_limiter", LoginLimiter)
        address = request.client.host if request.client else "unknown"
        caller = f"login:{req.name[:64]}"
        if (verdict := limiter.attempt(req.name, address)) is not None:
            raise Refused(429, "login_rate_limited",
                          f"too many failed logins ({_BOUNDS[verdict.bound]}); try again in "
                          f"{verdict.retry_after_s} s", caller=caller,
                          headers=[("Retry-After", str(verdict.retry_after_s))])
        p = await asyncio.to_thread(accounts.check_password, req.name, req.password)
        if p is None:  # the limiter counted it already
            state_of(request, "auth_stats", AuthStats).login_failures += 1
            raise Refused(401, "bad_login", "wrong user name or password, or a disabled user",
                          caller=caller)
        limiter.succeeded(req.name, address)
        session = accounts.open_session(req.name)
        state_of(request, "audit", AuditLog).record(p.actor, "session.login", p.actor)
        secure = request.url.scheme == "https"
        resp = Response(msgspec.json.encode({"user": req.name, "role": p.role,
                                             "csrf": session.csrf,
                                             "expires_at": session.expires_at}),
                        media_type="application/json")
        max_age = int(accounts.session_s)
        resp.set_cookie(SESSION_COOKIE, session.cookie, max_age=max_age, httponly=True,
                        samesite="strict", secure=secure, path="/")
        resp.set_cookie(CSRF_COOKIE, session.csrf, max_age=max_age, httponly=False,
                        samesite="strict", secure=secure, path="/")
        return resp

    @router.post("/console/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        _same_origin(request)
        p = session_of(request)
        secret = cookie(request.scope, SESSION_COOKIE)
        if p is None or secret is None:
            raise Refused(401, "no_credential", "not logged in")
        if not hmac.compare_digest(request.headers.get(CSRF_HEADER, ""), p.csrf or ""):
            raise Refused(403, "csrf", f"missing or wrong {CSRF_HEADER} header")
        state_of(request, "accounts", Accounts).close_session(secret)
        resp = Response(b'{"logged_out":true}', media_type="application/json")
        resp.delete_cookie(SESSION_COOKIE, path="/")
        resp.delete_cookie(CSRF_COOKIE, path="/")
        return resp

    return router
