"""HQ's HTTP trust boundary: who is calling, may they, and how big may the body be.

:class:`AuthMiddleware` (pure ASGI, so it covers every router whoever included it):

- ``/api/*`` needs ``Authorization: Bearer TOKEN`` or a console session cookie; none or a
  bad one is 401, before any route is looked at (an anonymous caller learns nothing,
  not even which routes exist);
- the route's roles come from :data:`hq.authz.ROUTE_ROLES`, matched on the path
  templates there (not on FastAPI's router, so no router can slip past): a wrong role
  is 403; a method and path the app serves but the table lacks is 403 too (deny by
  default, logged as an error: a programming error), another method of a listed path is
  405 with ``Allow``, and a path the table does not have is 404;
- a cookie-authenticated POST/PUT/PATCH/DELETE must carry the session's CSRF token in
  ``X-CSRF-Token`` (double submit: the console reads it from the ``aislecast_csrf``
  cookie, which another origin cannot read), and an ``Origin`` header, when the
  browser sends one, must be HQ's own. A cross-site form or a ``text/plain`` fetch
  can carry the cookie but not the header, so it is refused. Bearer calls need neither:
  browsers never attach an ``Authorization`` header by themselves;
- an unsafe call answered 2xx that did not write an audit entry gets a generic one.

:class:`BodyLimitMiddleware` refuses a body over ``max_bytes`` with 413: at once when
``Content-Length`` says so, else (chunked) as soon as the bytes received pass the limit,
without reading the rest.

Every refusal is JSON ``{"detail": ..., "reason": ...}``, logged once and counted
(:mod:`hq.refusals`).
"""

from __future__ import annotations

import hmac
from http.cookies import SimpleCookie
from typing import Final

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aislecast.kernel.logs import get_logger
from hq.accounts import Accounts, Principal
from hq.audit import AuditLog
from hq.authz import methods_of, route_of
from hq.refusals import AuthStats, Refused, refuse

__all__ = [
    "CSRF_COOKIE",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "AuthMiddleware",
    "BodyLimitMiddleware",
    "BodyTooLarge",
    "cookie",
]

log = get_logger(__name__)

SESSION_COOKIE: Final = "aislecast_session"
CSRF_COOKIE: Final = "aislecast_csrf"
CSRF_HEADER: Final = "x-csrf-token"
_SAFE: Final = frozenset({"GET", "HEAD", "OPTIONS"})


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over {limit} bytes")
        self.limit = limit


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k == name:
            return bytes(v).decode("latin-1")
    return None


def _served(scope: Scope) -> bool:
    """Whether the app behind the middleware has a route for this method and path."""
    app = scope.get("app")
    return any(route.matches(scope)[0] is Match.FULL for route in getattr(app, "routes", ()))


def _unlisted(scope: Scope, method: str, path: str) -> Refused:
    """Why a request outside :data:`hq.authz.ROUTE_ROLES` is refused: a route the app
    serves but the table forgot is a programming error (403, deny by default, logged as
    an error); another method of a listed path is 405 with ``Allow``; else 404."""
    if _served(scope):
        log.error("route missing from hq.authz.ROUTE_ROLES: refused", method=method, path=path)
        return Refused(403, "route_not_listed",
                       f"{method} {path} is not in HQ's route table; nobody may call it")
    if allow := methods_of(path):
        return Refused(405, "method_not_allowed",
                       f"{path} does not take {method}; it takes {', '.join(allow)}",
                       headers=[("Allow", ", ".join(allow))])
    return Refused(404, "no_such_route", f"no API route {path}: see /openapi.json")


def _own_origin(scope: Scope) -> str:
    host = _header(scope, b"host") or ""
    return f"{scope.get('scheme', 'http')}://{host}"


def cookie(scope: Scope, name: str) -> str | None:
    raw = _header(scope, b"cookie")
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except Exception:  # noqa: BLE001 - a malformed Cookie header is simply no cookie
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


class AuthMiddleware:
    """See the module docstring. ``accounts`` and ``audit`` are read per request."""

    def __init__(self, app: ASGIApp, *, accounts: Accounts, audit: AuditLog,
                 stats: AuthStats) -> None:
        self.app = app
        self.accounts = accounts
        self.audit = audit
        self.stats = stats

    def identify(self, scope: Scope) -> tuple[Principal | None, str]:
        """The caller, or None with the reason."""
        auth = _header(scope, b"authorization")
        if auth is not None:
            scheme, _, secret = auth.partition(" ")
            if scheme.lower() != "bearer" or not secret.strip():
                return None, "malformed_authorization"
            p = self.accounts.token_principal(secret.strip())
            return p, "" if p else "bad_token"
        session = cookie(scope, SESSION_COOKIE)
        if session is None:
            return None, "no_credential"
        p = self.accounts.session_principal(session)
        return p, "" if p else "session_expired"


    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or not path.startswith("/api/"):
            await self.app(scope, receive, send)
            return
        principal, why = self.identify(scope)
        if principal is None:
            await refuse(scope, send, self.stats, Refused(401, why,
                         "authentication required: send 'Authorization: Bearer TOKEN' "
                         "(aislecast hq tokens issue) or log in at /console/login"))
            return
        scope.setdefault("state", {})["principal"] = principal
        method = str(scope.get("method", ""))
        route, roles = route_of(method, path)
        if roles is None:
            await refuse(scope, send, self.stats, _unlisted(scope, method, path))
            return
        if principal.role not in roles:
            await refuse(scope, send, self.stats, Refused(403, "wrong_role",
                         f"a {principal.role} may not {method} {route}; "
                         f"allowed: {', '.join(sorted(roles))}"))
            return
        if principal.via == "session" and method not in _SAFE:
            sent = _header(scope, CSRF_HEADER.encode()) or ""
            origin = _header(scope, b"origin")
            if origin is not None and origin != _own_origin(scope):
                await refuse(scope, send, self.stats, Refused(403, "cross_origin",
                             f"Origin {origin} is not this HQ's; log in at this HQ's console"))
                return
            if not principal.csrf or not hmac.compare_digest(sent, principal.csrf):
                await refuse(scope, send, self.stats, Refused(403, "csrf",
                             f"missing or wrong {CSRF_HEADER} header: send the value of the "
                             f"{CSRF_COOKIE} cookie with every change"))
                return
        await self._audited(scope, receive, send, route=route or path, principal=principal)

    async def _audited(self, scope: Scope, receive: Receive, send: Send, *, route: str,
                       principal: Principal) -> None:
        method = str(scope.get("method", ""))
        if method in _SAFE:
            await self.app(scope, receive, send)
            return
        status = 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        await self.app(scope, receive, watch)
        if 200 <= status < 300 and not scope["state"].get("audited"):
            self.stats.unaudited += 1
            log.warning("state change without an audit entry: recorded generically",
                        method=method, route=route)
            self.audit.record(principal.actor, f"{method} {route}", str(scope.get("path", "")))


class BodyLimitMiddleware:
    """413 for bodies over ``max_bytes`` (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, stats: AuthStats) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.stats = stats

    async def _too_large(self, scope: Scope, send: Send) -> None:
        await refuse(scope, send, self.stats, Refused(413, "body_too_large",
                     f"request body is over {self.max_bytes} bytes (hq.toml [http] max_body_bytes)"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdecimal() and int(declared) > self.max_bytes:
            await self._too_large(scope, send)
            return
        seen, started = 0, False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if started:
                raise
            await self._too_large(scope, send)

