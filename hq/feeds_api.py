"""``POST /api/feeds/social``: social posts and mentions, for flash proposals (:mod:`hq.feeds`).

Callers: a ``social_feed`` service token (the social-listening tool's) or an admin.
The body is ``{"posts": [{"id", "text", "lang"?, "url"?, "source"?}, ...]}``, at most
:data:`MAX_WEBHOOK_BYTES` and :data:`MAX_POSTS` posts, decoded against that schema
(unknown fields refused): anything else is refused whole (400 not JSON or too deep, 413
too big, 422 wrong shape), counted twice (the refusal by reason, the feed's skip by
kind) and logged once (the refusal's line). A post over the text limit is
skipped with its reason and the others are taken. The answer names what became of each
post: ``proposed`` (with the draft's id), ``duplicate``, ``no_match`` or ``skipped``.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec
from fastapi import APIRouter, Request, Response
from msgspec import Meta

from aislecast.kernel.schema import decode
from hq.feed_rules import FeedItem
from hq.feeds import FeedWatcher, Skipped
from hq.openapi import json_body
from hq.refusals import Refused

__all__ = ["MAX_POSTS", "MAX_WEBHOOK_BYTES", "SocialPost", "SocialPosts", "feeds_router"]

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
    w = request.app.state.feeds
    assert isinstance(w, FeedWatcher), "HqServer sets app.state.feeds"
    return w


def feeds_router() -> APIRouter:
    router = APIRouter()

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
        for post in body.posts:
            item = FeedItem(f"social-{post.source}", post.id, post.text, post.lang, post.url)
            before = watcher.stats.duplicates
            try:
                cid = await watcher.take(item)
            except Skipped as why:
                results.append({"id": post.id, "result": "skipped", "reason": why.reason})
                continue
            if cid is not None:
                results.append({"id": post.id, "result": "proposed", "campaign": cid})
            else:
                dup = watcher.stats.duplicates > before
                results.append({"id": post.id, "result": "duplicate" if dup else "no_match"})
        request.state.audited = True  # each proposal wrote its own entry; the rest changes nothing
        return Response(msgspec.json.encode({"posts": results}), media_type="application/json")

    return router
