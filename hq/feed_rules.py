"""What turns a news item or a social post into a flash proposal: ``[feeds]`` in hq.toml.

A rule matches an item when the item's language is one of the rule's, at least one of
its ``keywords`` (case-folded words or phrases) occurs, every one of its ``entities``
(names, compared case-sensitively as whole words: "Acme" but not "acme" or "Acmes")
occurs, and the item's sentiment (:func:`hq.sentiment.score` in the item's language)
lies within ``sentiment_min`` .. ``sentiment_max``. The first matching rule proposes
its ``flash`` template (creative, stores, validity) as a flash draft waiting for
approval (:func:`hq.approval_api.propose`).
"""

from __future__ import annotations

import re
from typing import Annotated, Final

import msgspec
from msgspec import Meta

from hq.campaigns import FlashRequest
from hq.sentiment import LANGUAGES, language_of, score

__all__ = ["MAX_POST_CHARS", "FeedItem", "FeedRule", "FeedSettings", "FeedSource",
           "FlashTemplate", "first_match", "matches", "proposal"]

MAX_POST_CHARS: Final = 5_000  # a post's text; longer ones are skipped as "huge"

_NAME = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}\Z", description=(
    "1-64 letters, digits, '-' or '_'"))]
_WORDS = Annotated[list[Annotated[str, Meta(min_length=1, max_length=100)]], Meta(max_length=100)]
_STORE = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}\Z")]


class FlashTemplate(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The flash a rule proposes: its creative, stores and validity."""

    title: Annotated[str, Meta(min_length=1, max_length=200)]
    stores: Annotated[list[_STORE], Meta(min_length=1, max_length=1000)]
    body: Annotated[str, Meta(max_length=2000)] = ""
    format: str = "banner"
    coupon_code: Annotated[str, Meta(max_length=64)] | None = None
    url: Annotated[str, Meta(max_length=2000)] | None = None
    zones: list[_STORE] = msgspec.field(default_factory=list)
    validity_s: Annotated[float, Meta(gt=0, le=86_400)] = 900.0


class FeedRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    name: _NAME
    flash: FlashTemplate
    keywords: _WORDS = msgspec.field(default_factory=list)
    entities: _WORDS = msgspec.field(default_factory=list)
    languages: list[str] = msgspec.field(default_factory=lambda: list(LANGUAGES))
    sentiment_min: Annotated[float, Meta(ge=-1, le=1)] = -1.0
    sentiment_max: Annotated[float, Meta(ge=-1, le=1)] = 1.0


class FeedSource(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """An RSS or Atom feed HQ polls."""

    name: _NAME
    url: Annotated[str, Meta(pattern=r"^https?://[^\s]{1,2000}\Z")]
    language: str | None = None  # when the feed does not say


class FeedSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[feeds]``: feeds polled by the leader every ``every_s``, and the rules."""

    every_s: Annotated[float, Meta(ge=0.05, le=86_400)] = 60.0
    timeout_s: Annotated[float, Meta(gt=0, le=120)] = 10.0
    max_bytes: Annotated[int, Meta(ge=1024, le=64 << 20)] = 1 << 20  # a feed document
    max_post_chars: Annotated[int, Meta(ge=100, le=100_000)] = MAX_POST_CHARS
    sources: list[FeedSource] = msgspec.field(default_factory=list)
    rules: list[FeedRule] = msgspec.field(default_factory=list)


class FeedItem(msgspec.Struct, frozen=True):
    """One news item or social post, whatever it came from."""

    source: str
    id: str
    text: str  # title and summary, or the post
    lang: str | None = None
    url: str | None = None


def _words(text: str) -> set[str]:
    return set(re.findall(r"[^\W_]+", text))


def matches(rule: FeedRule, item: FeedItem, *, default_lang: str = "en") -> float | None:
    """The item's sentiment if ``rule`` matches ``item``, else None."""
    lang = language_of(item.lang, default_lang)
    if lang not in {language_of(x, "") for x in rule.languages}:
        return None
    folded = item.text.casefold()
    if rule.keywords and not any(_has(folded, k.casefold()) for k in rule.keywords):
        return None
    if rule.entities:
        words = _words(item.text)
        if not all(e in words or (" " in e and _has(item.text, e)) for e in rule.entities):
            return None
    if not rule.keywords and not rule.entities:
        return None  # a rule must name something to look for
    s = score(item.text, lang)
    return s if rule.sentiment_min <= s <= rule.sentiment_max else None


def _has(text: str, phrase: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text) is not None


def first_match(rules: list[FeedRule], item: FeedItem) -> tuple[FeedRule, float] | None:
    for rule in rules:
        s = matches(rule, item)
        if s is not None:
            return rule, s
    return None


def proposal(rule: FeedRule, cid: str) -> FlashRequest:
    t = rule.flash
    return FlashRequest(title=t.title, stores=list(t.stores), body=t.body, format=t.format,
                        coupon_code=t.coupon_code, url=t.url, validity_s=t.validity_s,
                        zones=list(t.zones), id=cid)
