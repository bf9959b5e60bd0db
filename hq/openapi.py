"""HQ's OpenAPI document with its security schemes: a bearer token or the console's
session cookie on every ``/api`` operation, and who may call it (``x-roles``, from
:data:`hq.authz.ROUTE_ROLES`). Built when first asked for, so routers included after
:func:`hq.api.create_app` (short links) are in it too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from hq.auth import SESSION_COOKIE
from hq.authz import allowed

__all__ = ["SECURITY_SCHEMES", "secured_openapi"]

SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "bearer": {"type": "http", "scheme": "bearer",
               "description": "a token from `aislecast hq tokens issue`"},
    "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
                "description": "the console's login (POST /console/login); changes also "
                               "need the X-CSRF-Token header"},
}


def secured_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
            doc.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            for path, ops in doc.get("paths", {}).items():
                if not path.startswith("/api/"):
                    continue
                for method, op in ops.items():
                    op["security"] = [{"bearer": []}, {"session": []}]
                    op["x-roles"] = sorted(allowed(method.upper(), path) or ())
                    op.setdefault("responses", {}).update({
                        "401": {"description": "no credential, or a bad, expired or revoked one"},
                        "403": {"description": "the caller's role may not do this"},
                        "413": {"description": "the body is over [http] max_body_bytes"}})
            app.openapi_schema = doc
        return app.openapi_schema

    return openapi
