"""``POST /api/feeds/social``: social posts and mentions, for flash proposals (:mod:`hq.feeds`).

Callers: a ``social_feed`` service token (the social-listening tool's) or an admin.
The body is ``{"posts": [{"id", "text", "lang"?, "url"?, "source"?}, ...]}``, at most
:data:`MAX_WEBHOOK_BYTES` and :data:`MAX_POSTS` posts, decoded against that schema
(unknown fields refused): anything else is refused whole (400 not JSON or too deep, 413
too big, 422 wrong shape), counted twice (the refusal by reason, the feed's skip by
kind) and logged once (the refusal's line). A post over the text limit is
skipped with its reason and the others are taken. The answer names what became of each
post: ``proposed`` (with the draft's id), ``duplicate``, ``no_match`` or ``skipped``.

The rules (:mod:`hq.feed_rule_store`): ``GET /api/feeds/rules`` lists the rules applied,
in the order they are tried, each with its ``source`` (``config``: hq.toml, ``db``:
written here; ``replaces_config`` when it overrides hq.toml's rule of its name);
``GET /api/feeds/rules/{name}`` one of them; ``PUT /api/feeds/rules/{name}`` (approvers
and admins) stores a rule (201 new, 200 replaced; the body's ``name`` is the path's),
``DELETE`` removes a stored one and answers it (a config rule is changed in hq.toml: 409). A rule
that fails its schema or :func:`~hq.feed_rule_store.rule_problems` is a 422 naming the
field, counted in ``aislecast_hq_service_refused_total{what="feed_rule"}``. Each change
is an audit entry (``feed_rule.put``, ``feed_rule.delete``) and applies from the next
feed round or webhook call.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec
from fastapi import APIRouter, Request, Response
from msgspec import Meta

from aislecast.kernel.schema import decode
from hq.deps import PrincipalDep, ServiceDep, audit, json_answer, state_of
from hq.feed_rule_store import RuleRow, merged, rule_problems
from hq.feed_rules import FeedItem, FeedRule
from hq.feeds import FeedWatcher, Skipped
from hq.openapi import json_body, json_io, json_response
from hq.refusals import Refused
from hq.service import NotFound, check_id

__all__ = ["MAX_POSTS", "MAX_RULE_BYTES", "MAX_WEBHOOK_BYTES", "SocialPost", "SocialPosts",
           "feeds_router"]

MAX_RULE_BYTES: Final = 64 * 1024
_RULES: Final = "/api/feeds/rules"

MAX_WEBHOOK_BYTES: Final = 256 * 1024
MAX_POSTS: Final = 100

_ID = Annotated[str, Meta(min_length=1, max_length=200)]


class SocialPost(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: _ID
    text: str  # its length is checked per post (a huge one is skipped, not the batch)
    lang: Annotated[str, Meta(max_length=16)] | None = None
    url: Annotated[str, Meta(max_length=2000)] | None = None
    source: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}\Z")] = "social"


class SocialPosts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    posts: Annotated[list[SocialPost], Meta(min_length=1, max_length=MAX_POSTS)]


def _watcher(request: Request) -> FeedWatcher:
    return state_of(request, "feeds", FeedWatcher)


def _applied(watcher: FeedWatcher) -> list[RuleRow]:
    return merged(watcher.settings.rules, watcher.stored.rows())


def _one(watcher: FeedWatcher, name: str) -> RuleRow:
    for row in _applied(watcher):
        if row.rule.name == name:
            return row
    raise NotFound("feed rule", name[:64])


async def _rule_body(request: Request, service: ServiceDep, name: str) -> FeedRule:
    service.refuse("feed_rule", check_id("name", name))
    raw = await request.body()
    if len(raw) > MAX_RULE_BYTES:
        raise Refused(413, "body_too_large", f"a feed rule: at most {MAX_RULE_BYTES} bytes")
    try:
        rule = decode(raw, FeedRule)
    except msgspec.ValidationError as exc:  # names the field: "... - at `$.sentiment_min`"
        service.refuse("feed_rule", [f"invalid FeedRule: {exc}"])
        raise AssertionError("refuse() raises for a problem") from exc
    except msgspec.DecodeError as exc:
        raise Refused(400, "bad_body", f"body is not valid JSON: {exc}") from None
    if rule.name != name:
        service.refuse("feed_rule", [f"name: {rule.name!r} is not the rule of the path, {name!r}"])
    service.refuse("feed_rule", rule_problems(service, rule))
    return rule


def _rule_routes(router: APIRouter) -> None:
    @router.get(_RULES, openapi_extra=json_response(list[RuleRow], "the rules, in the order tried"))
    async def rules(request: Request) -> Response:
        return json_answer(_applied(_watcher(request)))

    @router.get(_RULES + "/{name}", openapi_extra=json_response(RuleRow, "the rule as applied"))
    async def rule(name: str, request: Request) -> Response:
        return json_answer(_one(_watcher(request), name))

    @router.put(_RULES + "/{name}", openapi_extra=json_io(FeedRule, RuleRow, "the rule as applied"))
    async def put_rule(name: str, request: Request, service: ServiceDep,
                       p: PrincipalDep) -> Response:
        watcher = _watcher(request)
        rule = await _rule_body(request, service, name)
        new = not watcher.stored.exists(name)
        if new and watcher.stored.full():
            raise Refused(409, "too_many_rules", "HQ stores at most 500 feed rules; delete some")
        before = next((r for r in _applied(watcher) if r.rule.name == name), None)
        watcher.stored.put(rule, p.actor)
        after = _one(watcher, name)
        audit(request, "feed_rule.put", f"feed_rule:{name}", before=before, after=after)
        return json_answer(after, 201 if new else 200)

    @router.delete(_RULES + "/{name}", openapi_extra=json_response(RuleRow, "the rule deleted"))
    async def delete_rule(name: str, request: Request) -> Response:
        watcher = _watcher(request)
        before = _one(watcher, name)
        if before.source == "config":
            raise Refused(409, "config_rule", f"feed rule {name!r} is in hq.toml "
                          "([[feeds.rules]]): change it there, or PUT a rule of that name over it")
        watcher.stored.delete(name)
        audit(request, "feed_rule.delete", f"feed_rule:{name}", before=before)
        return json_answer(before)


def feeds_router() -> APIRouter:
    router = APIRouter()
    _rule_routes(router)

    @router.post("/api/feeds/social", openapi_extra=json_body(SocialPosts))
    async def social(request: Request) -> Response:
        watcher = _watcher(request)
        raw = await request.body()
        if len(raw) > MAX_WEBHOOK_BYTES:
            watcher.skip("webhook_too_big", f"{len(raw)} bytes", logged=False)
            raise Refused(413, "body_too_large", f"posts: at most {MAX_WEBHOOK_BYTES} bytes "
                          f"a request; send at most {MAX_POSTS} posts at a time")
        try:
            body = decode(raw, SocialPosts)
        except msgspec.ValidationError as exc:
            watcher.skip("webhook_bad_shape", str(exc), logged=False)
            raise Refused(422, "bad_body", f"invalid posts: {exc}") from None
        except msgspec.DecodeError as exc:
            watcher.skip("webhook_not_json", str(exc), logged=False)
            raise Refused(400, "bad_body", f"body is not valid JSON: {exc}") from None
        results: list[dict[str, object]] = []
        rules = watcher.rules()  # read once a call (stored rules change without a restart)
        for post in body.posts:
            item = FeedItem(f"social-{post.source}", post.id, post.text, post.lang, post.url)
            before = watcher.stats.duplicates
            try:
                cid = await watcher.take(item, rules=rules)
            except Skipped as why:
                results.append({"id": post.id, "result": "skipped", "reason": why.reason})
                continue
            if cid is not None:
                results.append({"id": post.id, "result": "proposed", "campaign": cid})
            else:
                dup = watcher.stats.duplicates > before
                results.append({"id": post.id, "result": "duplicate" if dup else "no_match"})
        request.state.audited = True  # each proposal wrote its own entry; the rest changes nothing
        return json_answer({"posts": results})

    return router
