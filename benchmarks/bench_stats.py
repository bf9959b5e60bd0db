"""The console's campaign stats (:func:`hq.analytics.campaign_stats`) at 100k decisions,
with the stats cache (:mod:`hq.stats_cache`) and without, on SQLite and PostgreSQL.

``stats``: 20 campaigns over 4 stores, 100,000 decisions (a fifth holdout) of 40,000
shoppers stored through HQ's ingest (so the rollups are kept), a purchase line for a
third of them within the attribution window, 2,000 till-code offers of which half the
phones also report redeemed. Rows, per backend, the median time of one console refresh
(every campaign's stats with lift):

- ``refresh_unchanged``: nothing changed since the last refresh (the console polling
  a quiet database);
- ``refresh_after_purchase``: one purchase line at one store before each refresh (the
  campaigns of that store recompute their lift, the others keep theirs);
- ``refresh_after_decision``: one decision of one campaign before each refresh.

Subject ``no cache`` is the same call with ``cache=False`` (what every refresh cost
before the cache): the ratio is how many times cheaper the cached refresh is. The
answers are checked equal before timing.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import msgspec

from aislecast.kernel.campaign import Attribution, Campaign, Creative
from aislecast.kernel.errors import AislecastError
from aislecast.kernel.schema import Event
from benchmarks._harness import BenchOptions, Measurement, benchmark, env_count
from benchmarks.bench_ingest import pg_schema
from hq.analytics import campaign_stats
from hq.db import HqDb
from hq.ingest import Ingest
from hq.stats_cache import StatsCache

__all__ = ["bench_stats"]

_CAMPAIGNS, _STORES, _T0 = 20, 4, 1_780_000_000.0


def _size(opts: BenchOptions) -> int:
    return env_count("AISLECAST_BENCH_STATS_DECISIONS", 10_000 if opts.quick else 100_000,
                     minimum=100, what="a count", hint="set a whole number of at least 100, or unset it")


def _fill(db: HqDb, n: int) -> None:
    for c in range(_CAMPAIGNS):
        camp = Campaign(id=f"c{c:02d}", name=f"c{c:02d}", stores=[f"s{c % _STORES}"],
                        creatives=[Creative("a", "A"), Creative("b", "B")],
                        attribution=Attribution(window_s=7200.0, min_per_arm=30))
        db.execute("INSERT INTO campaigns (id, body, status, updated_at) VALUES (?, ?, 'live', 0)",
                   (camp.id, msgspec.json.encode(camp).decode()))
    shoppers = max(10, n * 2 // 5)
    events, buys = [], []
    for i in range(n):
        c = i % _CAMPAIGNS
        store, inbox, ts = f"s{c % _STORES}", f"i{i % shoppers}", _T0 + i
        held = i % 5 == 0
        events.append(Event(id=f"d{i}", kind="decision", ts=ts, store=store, campaign=f"c{c:02d}",
                            inbox=inbox, reason="holdout" if held else "offer",
                            variant=None if held else "ab"[i % 2], holdout=True if held else None))
        if i % 3 == 0:
            buys.append((uuid.uuid4().hex, store, inbox, ts + 600, f"t{i}", 250 + i % 500))
    for k in range(n // 50):  # till-code offers, half also "redeemed" by the phone
        c, offer = k % _CAMPAIGNS, f"{k:010x}" + "0" * 22
        store = f"s{c % _STORES}"
        events.append(Event(id=f"p{k}", kind="offer_published", ts=_T0 + k, store=store,
                            campaign=f"c{c:02d}", variant="a", offer=offer, inbox=f"i{k}",
                            reason="till_code"))
        if k % 2 == 0:
            events.append(Event(id=f"r{k}", kind="offer_redeemed", ts=_T0 + k + 1, store=store,
                                campaign=f"c{c:02d}", variant="a", offer=offer, inbox=f"i{k}"))
    ingest = Ingest(db)
    for at in range(0, len(events), 2_000):
        ingest.store_events(events[at:at + 2_000])
    db.executemany("INSERT INTO purchases (id, store, inbox, member, ts, till, txn, product,"
                   " category, quantity, value_cents) VALUES (?, ?, ?, NULL, ?, 'till-1', ?,"
                   " 'sku', NULL, 1, ?)", buys)
    db.execute("ANALYZE")


def _median_ms(refresh: Callable[[], object], before: Callable[[int], object], reps: int) -> float:
    times = []
    for i in range(reps):
        before(i)
        t = time.perf_counter()
        refresh()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def _part(url: str, n: int, reps: int, backend: str) -> list[Measurement]:
    db = HqDb(url)
    t = time.perf_counter()
    _fill(db, n)
    extra: dict[str, float | int | str] = {"decisions": n, "campaigns": _CAMPAIGNS,
                                           "load_s": round(time.perf_counter() - t, 1)}
    cache = StatsCache()
    if msgspec.to_builtins(campaign_stats(db, cache=cache)) != msgspec.to_builtins(
            campaign_stats(db, cache=False)):
        raise AislecastError("stats: the cached answer differs from the fresh one")
    ingest = Ingest(db)

    def purchase(i: int) -> None:
        db.execute("INSERT INTO purchases (id, store, inbox, member, ts, till, txn, product,"
                   " category, quantity, value_cents) VALUES (?, 's0', 'i1', NULL, ?, 'till-1',"
                   " ?, 'sku', NULL, 1, 100)", (uuid.uuid4().hex, _T0 + 60 + i, f"b{i}"))

    def decision(i: int) -> None:
        ingest.store_events([Event(id=f"late{i}-{uuid.uuid4().hex[:6]}", kind="decision",
                                   ts=_T0 + n + i, store="s1", campaign="c01", inbox=f"x{i}",
                                   reason="offer", variant="a")])

    cases: list[tuple[str, Callable[[int], object]]] = [
        ("refresh_unchanged", lambda _: None), ("refresh_after_purchase", purchase),
        ("refresh_after_decision", decision)]
    out = []
    for name, before in cases:
        cached = _median_ms(lambda: campaign_stats(db, cache=cache), before, reps * 4)
        fresh = _median_ms(lambda: campaign_stats(db, cache=False), before, reps)
        out += [Measurement("stats", "aislecast", f"{name}_{backend}", cached, "ms",
                            better="lower", extra=extra),
                Measurement("stats", "no cache", f"{name}_{backend}", fresh, "ms",
                            better="lower", extra=extra)]
    if msgspec.to_builtins(campaign_stats(db, cache=cache)) != msgspec.to_builtins(
            campaign_stats(db, cache=False)):
        raise AislecastError("stats: the cached answer differs from the fresh one after changes")
    db.close()
    return out


@benchmark("stats")
async def bench_stats(opts: BenchOptions) -> list[Measurement]:
    n = _size(opts)
    reps = 3 if opts.quick else 5
    rows: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="aislecast-stats-") as tmp, pg_schema("stats") as pg:
        backends = [("sqlite", f"sqlite:///{Path(tmp)}/stats.sqlite")]
        if pg is not None:
            backends.append(("postgresql", pg))
        for backend, url in backends:
            rows += await asyncio.to_thread(_part, url, n, reps, backend)
    return rows


if __name__ == "__main__":
    from benchmarks._harness import run_benchmarks

    raise SystemExit(asyncio.run(run_benchmarks(["stats"], as_json=False, opts=BenchOptions())))
