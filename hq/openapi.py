"""HQ's OpenAPI document with its security schemes: a bearer token or the console's
session cookie on every ``/api`` operation, and who may call it (``x-roles``, from
:data:`hq.authz.ROUTE_ROLES`). Every refusal HQ gives (400 bad JSON, 401, 403, 404,
413, 422) is declared with the body it really has (a route's own declaration wins:
the short link pages are HTML) (:data:`REFUSAL_SCHEMA`: ``detail``
is a sentence or a list of ``field: problem`` lines, a bad query or path parameter
included: :func:`hq.refusals.parameter_refusal`), instead of FastAPI's
``HTTPValidationError``, so a
schema-driven client (``make fuzz``) can check the responses against it. Every 2xx
answer has its schema, generated from msgspec types: the route's own
(:func:`json_response`, :func:`json_io`) or :data:`hq.api_schemas.ANSWERS`; msgspec's
struct schemas are closed (``additionalProperties: false``). Built when
first asked for, so routers included after :func:`hq.api.create_app` (short links) are
in it too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from hq.api_schemas import ANSWERS, TEXT
from hq.auth import SESSION_COOKIE
from hq.authz import allowed

__all__ = ["REFUSAL_SCHEMA", "SECURITY_SCHEMES", "json_body", "json_io", "json_response",
           "secured_openapi"]

SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "bearer": {"type": "http", "scheme": "bearer",
               "description": "a token from `aislecast hq tokens issue`"},
    "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
                "description": "the console's login (POST /console/login); changes also "
                               "need the X-CSRF-Token header"},
}

REFUSAL_SCHEMA: dict[str, Any] = {
    "type": "object", "title": "Refusal", "required": ["detail"],
    "properties": {
        "detail": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
                   "description": "why, naming the field or parameter and the fix (a list of "
                                  "`field: problem` lines for a body with several problems)"},
        "reason": {"type": "string", "description": "a stable code, e.g. wrong_role, bad_parameter"},
    },
}
# FastAPI's own validation error objects, which HQ never sends (hq.refusals answers them)
_UNUSED_SCHEMAS = ("HTTPValidationError", "ValidationError")
_REFUSED = {"application/json": {"schema": {"$ref": "#/components/schemas/Refusal"}}}
_EVERYWHERE = {
    "400": "the body is not valid JSON",
    "404": "no such resource (or not in the caller's stores)",
    "422": "a field is missing or out of bounds: `detail` names it",
}
_API = {
    "401": "no credential, or a bad, expired or revoked one",
    "403": "the caller's role may not do this",
    "413": "the body is over [http] max_body_bytes",
}


_COMPONENTS = "x-components"  # carried on an operation by json_body, moved to components


def json_body(cls: type) -> dict[str, Any]:
    """A route's ``openapi_extra`` declaring its JSON body as msgspec's schema of ``cls``
    (the handler decodes the raw body with ``cls`` itself, so FastAPI cannot see it)."""
    (schema,), components = msgspec.json.schema_components(
        (cls,), ref_template="#/components/schemas/{name}")
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
            _COMPONENTS: components}


def json_response(cls: Any, description: str, status: int = 200) -> dict[str, Any]:
    """A route's ``openapi_extra`` declaring its ``status`` answer as msgspec's schema of
    ``cls`` (a struct, or e.g. ``list[Store]``; the handler encodes it itself and returns
    a plain Response)."""
    (schema,), components = msgspec.json.schema_components(
        (cls,), ref_template="#/components/schemas/{name}")
    return {"responses": {str(status): {"description": description,
                                        "content": {"application/json": {"schema": schema}}}},
            _COMPONENTS: components}


def json_io(body: type, answer: Any, description: str, status: int = 200) -> dict[str, Any]:
    """:func:`json_body` and :func:`json_response` in one ``openapi_extra``."""
    a, b = json_body(body), json_response(answer, description, status)
    return a | b | {_COMPONENTS: a[_COMPONENTS] | b[_COMPONENTS]}


# Refusals only some routes give, with the reason they carry.
_ROUTE_REFUSALS: dict[tuple[str, str], dict[str, str]] = {
    ("POST", "/api/campaigns/{cid}/submit"): {"409": "not a draft or paused campaign, or an "
                                                     "edit made the submission stale"},
    ("POST", "/api/campaigns/{cid}/approve"): {"409": "nothing submitted, or the content changed"},
    ("POST", "/api/campaigns/{cid}/reject"): {"409": "nothing submitted to reject"},
    ("POST", "/api/shoppers/{inbox}/loyalty"): {"409": "loyalty_taken: another shopper has it"},
    ("DELETE", "/api/shoppers/{inbox}/loyalty"): {
        "404": "not_linked: not this shopper's (linked to no one, or to someone else)"},
    ("GET", "/api/shoppers/{inbox}/pass.pkpass"): {"409": "passes_not_configured: [passes]"},
    ("GET", "/api/shoppers/{inbox}/pass/google"): {"409": "passes_not_configured: [passes]"},
}


def _refusals(descriptions: dict[str, str]) -> dict[str, Any]:
    return {code: {"description": text, "content": _REFUSED} for code, text in descriptions.items()}


def _schema(cls: Any, generated: dict[str, Any]) -> dict[str, Any]:
    (schema,), components = msgspec.json.schema_components(
        (cls,), ref_template="#/components/schemas/{name}")
    generated.update(components)
    return schema


def _answers(key: tuple[str, str], responses: dict[str, Any], generated: dict[str, Any]) -> None:
    """Each 2xx/3xx answer :data:`hq.api_schemas.ANSWERS` names for ``key``, its schema
    generated from the type (a route's own schema wins); FastAPI's empty default answer
    is dropped when the table names the route's real ones."""
    answers = ANSWERS.get(key, {})
    if answers and "200" in responses and 200 not in answers:
        responses.pop("200")
    for status, cls in answers.items():
        entry = responses.setdefault(str(status), {"description": "answer"})
        if entry.get("content", {}).get("application/json", {}).get("schema"):
            continue  # declared by the route itself
        media = TEXT.get(key)
        if cls is not None:
            entry["content"] = {"application/json": {"schema": _schema(cls, generated)}}
        elif media is not None:
            entry["content"] = {media: {"schema": {"type": "string"}}}
        else:
            entry.pop("content", None)


def secured_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
            components = doc.setdefault("components", {})
            components["securitySchemes"] = SECURITY_SCHEMES
            components.setdefault("schemas", {})["Refusal"] = REFUSAL_SCHEMA
            generated: dict[str, Any] = {}  # msgspec's component schemas
            for path, ops in doc.get("paths", {}).items():
                for method, op in ops.items():
                    generated.update(op.pop(_COMPONENTS, {}))
                    responses = op.setdefault("responses", {})
                    _answers((method.upper(), path), responses, generated)
                    for code, refusal in _refusals(_EVERYWHERE).items():
                        if code == "422" or code not in responses:  # a route's own wins
                            responses[code] = refusal
                    if not path.startswith("/api/"):
                        continue
                    op["security"] = [{"bearer": []}, {"session": []}]
                    op["x-roles"] = sorted(allowed(method.upper(), path) or ())
                    responses.update(_refusals(_API))
                    responses.update(_refusals(_ROUTE_REFUSALS.get((method.upper(), path), {})))
            for schema in generated.values():  # a struct's fields are all it takes or has
                if "properties" in schema:
                    schema["additionalProperties"] = False
            components["schemas"].update(generated)
            for name in _UNUSED_SCHEMAS:
                components["schemas"].pop(name, None)
            app.openapi_schema = doc
        return app.openapi_schema

    return openapi
