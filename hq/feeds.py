"""Flash proposals from the world: RSS/Atom feeds HQ polls and social posts it is sent.

The leader polls every ``[[feeds.sources]]`` feed every ``every_s`` (task ``hq-feeds``)
with httpx: a timeout, at most ``max_bytes`` read (a bigger document is skipped, not
buffered), and the feed's ETag and Last-Modified sent back so an unchanged feed costs a
304. feedparser parses what came. Social posts and mentions arrive at ``POST
/api/feeds/social`` (:mod:`hq.feeds_api`). Either way each item goes through
:meth:`FeedWatcher.take`: an item seen before (same source and id) is skipped; the
first rule that matches (:mod:`hq.feed_rules`; hq.toml's rules with those written over
HTTP in place of theirs, :meth:`FeedWatcher.rules`, read afresh each round) proposes
its flash template as a draft submitted for approval, by ``feed:SOURCE``; an approver
approves it and the stores have it through the ordinary flash path within seconds.
Nothing a feed says ever goes live by itself.

Bad input is skipped with a reason, counted (``aislecast_hq_feeds_skipped_total``) and
logged once: a feed that is not XML or not a feed, one over the size cap, an HTTP
error, a post over ``max_post_chars``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import feedparser
import httpx
import msgspec

from aislecast.kernel.counters import by, count, gauge
from aislecast.kernel.logs import get_logger
from hq.approval_api import propose
from hq.approvals import Approvals
from hq.audit import AuditLog
from hq.campaigns import CampaignInvalid, flash_campaign
from hq.feed_rule_store import FeedRuleStore, merged
from hq.feed_rules import FeedItem, FeedRule, FeedSettings, FeedSource, first_match, proposal
from hq.service import HqService

__all__ = ["FeedStats", "FeedWatcher", "Skipped"]

log = get_logger(__name__)

_HARMLESS = (feedparser.CharacterEncodingOverride, feedparser.NonXMLContentType)


class Skipped(ValueError):
    """An item or a document HQ did not take, and why (a stable ``reason``)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(slots=True)
class FeedStats:
    fetches: dict[str, int] = by("result", "feed fetches by result (ok, not_modified, error)")
    items: int = count("feed items and social posts looked at")
    duplicates: int = count("items seen before, skipped")
    proposals: int = count("flash drafts proposed from feeds and posts")
    skipped: dict[str, int] = by("reason", "feeds, items and posts skipped or refused, by reason")
    last_draft_ms: float = gauge("ms from an item's arrival to its flash draft, the last one")


class FeedWatcher:
    """Polls ``settings.sources`` and turns matching items into flash drafts."""

    def __init__(self, service: HqService, settings: FeedSettings, approvals: Approvals,
                 stats: FeedStats | None = None) -> None:
        self.service = service
        self.settings = settings
        self.approvals = approvals
        self.audit = AuditLog(service.db)
        self.stats = stats or FeedStats()
        self.stored = FeedRuleStore(service.db)  # PUT /api/feeds/rules (hq.feeds_api)

    def rules(self) -> list[FeedRule]:
        """The rules applied now: ``settings.rules`` (hq.toml and :meth:`add`) with the
        stored ones over those of their names (:func:`hq.feed_rule_store.merged`)."""
        return [r.rule for r in merged(self.settings.rules, self.stored.rows())]

    def skip(self, reason: str, detail: str, *, logged: bool = True, **where: object) -> Skipped:
        """Count a skip and log it once (``logged=False``: the caller's refusal is the
        line); returns it for raising."""
        self.stats.skipped[reason] = self.stats.skipped.get(reason, 0) + 1
        if logged:
            log.warning("feed input skipped", reason=reason, detail=detail[:200], **where)
        return Skipped(reason, detail)

    def _first_sight(self, item: FeedItem) -> str | None:
        """The item's key if it was never seen (recorded now), else None."""
        key = hashlib.sha256(f"{item.source}\0{item.id}".encode()).hexdigest()
        n = self.service.db.execute(
            "INSERT INTO feed_items (key, source, seen_at) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO NOTHING", (key, item.source, time.time()))
        return key if n else None

    async def take(self, item: FeedItem, *, arrived: float | None = None,
                   rules: list[FeedRule] | None = None) -> str | None:
        """Look at one item against ``rules`` (default: :meth:`rules`, read now); returns
        the proposed flash draft's id, or None."""
        arrived = time.perf_counter() if arrived is None else arrived
        self.stats.items += 1
        if len(item.text) > self.settings.max_post_chars:
            raise self.skip("huge_post", f"{len(item.text)} characters, at most "
                            f"{self.settings.max_post_chars}", source=item.source)
        key = self._first_sight(item)  # one indexed write, as HQ's other small writes
        if key is None:
            self.stats.duplicates += 1
            return None
        hit = first_match(self.rules() if rules is None else rules, item)
        if hit is None:
            return None
        rule, sentiment = hit
        cid = f"flash-{rule.name[:40]}-{key[:10]}"
        try:
            c, _ = await propose(self.service, self.approvals, flash_campaign(proposal(rule, cid)),
                                 actor=f"feed:{item.source}", audit_log=self.audit,
                                 comment=f"rule {rule.name} (sentiment {sentiment:+.2f}): "
                                         f"{item.text[:300]} {item.url or ''}".strip())
        except CampaignInvalid as exc:  # a template naming a store HQ does not have
            raise self.skip("bad_template", "; ".join(exc.problems)[:300], rule=rule.name) from None
        self._link(key, c.id)
        self.stats.proposals += 1
        self.stats.last_draft_ms = (time.perf_counter() - arrived) * 1000
        log.info("flash proposed", campaign=c.id, rule=rule.name, source=item.source,
                 sentiment=round(sentiment, 2))
        return c.id

    def _link(self, key: str, cid: str) -> None:
        self.service.db.execute("UPDATE feed_items SET campaign = ? WHERE key = ?", (cid, key))

    # ---- feeds ---------------------------------------------------------------------
    def _validators(self, url: str) -> dict[str, str]:
        row = self.service.db.one("SELECT etag, modified FROM feed_state WHERE url = ?", (url,))
        out: dict[str, str] = {}
        if row is not None and row[0]:
            out["if-none-match"] = str(row[0])
        if row is not None and row[1]:
            out["if-modified-since"] = str(row[1])
        return out

    def _remember(self, url: str, etag: str | None, modified: str | None) -> None:
        self.service.db.execute(
            "INSERT INTO feed_state (url, etag, modified) VALUES (?, ?, ?) ON CONFLICT (url)"
            " DO UPDATE SET etag = excluded.etag, modified = excluded.modified",
            (url, etag, modified))

    async def _fetch(self, http: httpx.AsyncClient, src: FeedSource) -> bytes | None:
        """The feed's document, or None when unchanged (304)."""
        headers = self._validators(src.url)
        async with http.stream("GET", src.url, headers=headers) as resp:
            if resp.status_code == 304:
                self.stats.fetches["not_modified"] = self.stats.fetches.get("not_modified", 0) + 1
                return None
            if resp.status_code != 200:
                raise self.skip("http_error", f"HTTP {resp.status_code}", source=src.name)
            declared = resp.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.settings.max_bytes:
                raise self.skip("feed_too_big", f"{declared} bytes, at most "
                                f"{self.settings.max_bytes}", source=src.name)
            chunks, size = [], 0
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > self.settings.max_bytes:
                    raise self.skip("feed_too_big", f"more than {self.settings.max_bytes} bytes",
                                    source=src.name)
                chunks.append(chunk)
            self._remember(src.url, resp.headers.get("etag"), resp.headers.get("last-modified"))
        self.stats.fetches["ok"] = self.stats.fetches.get("ok", 0) + 1
        return b"".join(chunks)

    def _parse(self, src: FeedSource, raw: bytes) -> list[FeedItem]:
        doc = feedparser.parse(raw, sanitize_html=True, resolve_relative_uris=False)
        bozo = doc.get("bozo_exception")
        # a wrong declared encoding or content type is harmless; broken XML is not (a
        # truncated document recovered by the loose parser would be half a feed)
        if (bozo is not None and not isinstance(bozo, _HARMLESS)) or not doc.get("version"):
            why = str(bozo or "not an RSS or Atom document")
            raise self.skip("malformed_feed", why, source=src.name)
        lang = src.language or doc.feed.get("language")
        items = []
        for e in doc.entries:
            ident = str(e.get("id") or e.get("link") or e.get("title") or "")[:500]
            text = " ".join(str(e.get(k, "")) for k in ("title", "summary")).strip()
            if ident and text:
                items.append(FeedItem(src.name, ident, text, e.get("language") or lang,
                                      e.get("link")))
        return items

    async def poll(self, http: httpx.AsyncClient, src: FeedSource) -> list[str]:
        """One feed, once: the drafts it proposed (its problems are skipped, counted)."""
        arrived = time.perf_counter()
        try:
            raw = await self._fetch(http, src)
        except httpx.HTTPError as exc:
            self.stats.fetches["error"] = self.stats.fetches.get("error", 0) + 1
            self.skip("fetch_failed", type(exc).__name__, source=src.name)
            return []
        except Skipped:
            return []
        if raw is None:
            return []
        try:
            items = await asyncio.to_thread(self._parse, src, raw)
        except Skipped:
            return []
        out, rules = [], self.rules()  # read once a round: stored rules change without a restart
        for item in items:
            try:
                cid = await self.take(item, arrived=arrived, rules=rules)
            except Skipped:
                continue
            if cid is not None:
                out.append(cid)
        return out

    def add(self, *, sources: Sequence[FeedSource] = (), rules: Sequence[FeedRule] = ()) -> None:
        """More sources and rules from now on (the next round polls them)."""
        s = self.settings
        self.settings = msgspec.structs.replace(s, sources=[*s.sources, *sources],
                                                rules=[*s.rules, *rules])

    def remove(self, source: str) -> None:
        """Stop polling the source named ``source`` (its items stay deduplicated)."""
        s = self.settings
        self.settings = msgspec.structs.replace(
            s, sources=[x for x in s.sources if x.name != source])

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=self.settings.timeout_s, follow_redirects=False,
                                 headers={"user-agent": "aislecast-hq-feeds"})

    async def run(self) -> None:
        """Poll every source every ``every_s`` until cancelled (the leader's task)."""
        async with self.client() as http:
            while True:
                for src in self.settings.sources:
                    try:
                        await self.poll(http, src)
                    except Exception:  # one feed's surprise must not end the leader's duties
                        self.stats.skipped["poll_failed"] = self.stats.skipped.get("poll_failed", 0) + 1
                        log.exception("feed poll failed", source=src.name)
                await asyncio.sleep(self.settings.every_s)
