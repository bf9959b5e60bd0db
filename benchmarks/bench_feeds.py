"""``feeds``: how long from a feed item to its flash draft (issue 13).

HQ's feed watcher (:mod:`hq.feeds`) on a SQLite database, a feed file served on
127.0.0.1 (:class:`aislecast.apps.feed_server.FeedFiles`). Each round the feed gains one
new matching item and the clock runs from the fetch's start to the draft stored and
submitted for approval (fetch, parse, dedupe, rule and sentiment, validation, draft,
approval row, audit entry); the poll interval (60 s by default, ``[feeds] every_s``)
comes on top in production. Then a feed of 50 new items at once, and a social post
taken straight from the webhook's path (no HTTP fetch).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from aislecast.apps.feed_server import FeedFiles, rss
from aislecast.kernel.schema import Store
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from benchmarks._harness import BenchOptions, Measurement, benchmark, percentile
from hq.approvals import Approvals
from hq.db import HqDb
from hq.feed_rules import FeedItem, FeedRule, FeedSettings, FeedSource, FlashTemplate
from hq.feeds import FeedWatcher
from hq.service import HqService

__all__ = ["bench_feeds"]

_RULE = FeedRule(name="rain", keywords=["rain"], sentiment_min=-0.5,
                 flash=FlashTemplate(title="Umbrellas -30 %", stores=["s1"]))


def _items(start: int, n: int) -> list[tuple[str, str, str]]:
    return [(f"item-{i}", f"Heavy rain expected, item {i}", "Take an umbrella")
            for i in range(start, start + n)]


@benchmark("feeds")
async def bench_feeds(opts: BenchOptions) -> list[Measurement]:
    rounds = 20 if opts.quick else 100
    with tempfile.TemporaryDirectory(prefix="aislecast-bench-feeds-") as tmp:
        db = HqDb(f"sqlite:///{tmp}/hq.sqlite")
        service = HqService(db, Signer(load_or_create_signing_key(Path(tmp) / "k.pem")))
        service.upsert_store(Store(id="s1", name="Store 1", tz="Europe/Berlin"))
        async with FeedFiles({"/news.rss": rss("News", [])}) as files:
            src = FeedSource(name="news", url=files.url("/news.rss"))
            watcher = FeedWatcher(service, FeedSettings(sources=[src], rules=[_RULE]), Approvals(db))
            one: list[float] = []
            async with watcher.client() as http:
                for r in range(rounds):
                    files.put("/news.rss", rss("News", _items(r, 1)))
                    t0 = time.perf_counter()
                    made = await watcher.poll(http, src)
                    one.append((time.perf_counter() - t0) * 1000)
                    assert len(made) == 1, made
                files.put("/news.rss", rss("News", _items(10_000, 50)))
                t0 = time.perf_counter()
                batch = await watcher.poll(http, src)
                batch_ms = (time.perf_counter() - t0) * 1000
                assert len(batch) == 50, len(batch)
            posts: list[float] = []
            for i in range(rounds):
                t0 = time.perf_counter()
                cid = await watcher.take(FeedItem("social", f"post-{i}", "rain all day here", "en"))
                posts.append((time.perf_counter() - t0) * 1000)
                assert cid is not None
        db.close()
    extra: dict[str, float | int | str] = {"rounds": rounds}
    return [
        Measurement("feeds", "aislecast", "feed item -> flash draft p50", percentile(one, 0.5), "ms",
                    better="lower", extra=extra),
        Measurement("feeds", "aislecast", "feed item -> flash draft p95", percentile(one, 0.95), "ms",
                    better="lower", extra=extra),
        Measurement("feeds", "aislecast", "feed of 50 new items -> 50 drafts", batch_ms, "ms",
                    better="lower"),
        Measurement("feeds", "aislecast", "social post -> flash draft p50", percentile(posts, 0.5), "ms",
                    better="lower", extra=extra),
    ]
