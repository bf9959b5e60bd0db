"""The console's per-campaign lift and till-code correction, cached until their inputs change.

:func:`hq.analytics.campaign_stats` runs on every console refresh (every 2 s). Its
funnel comes from the rollups (a few rows), but lift joins each exposed shopper's
first decision with their purchases (:mod:`hq.lift`), and the till-code correction is
a correlated ``EXISTS`` over ``events``: together seconds at 100k decisions. Both are
kept here per campaign, each under the signature of what it reads, and recomputed only
when that signature changes:

- lift of a campaign: its ``offer``/``holdout`` decisions per store (``rollup_totals``,
  kept by ingest in the same transaction as the events), the purchases of those
  stores (count and newest ``ts`` per store, from the ``purchases_store`` index),
  the erasures done (the ``erasures`` tombstones, written in the erasure's own
  transaction: an erasure nulls an inbox in events and purchases without changing a
  count) and the campaign's attribution settings;
- the correction of a campaign: its impressions and redemptions in the rollups (a
  phone's ``offer_redeemed`` or a till-code ``offer_published`` arriving changes one);
- the reach of a campaign (:mod:`hq.reach`, an indexed count per stage): its stage
  counts in the rollups (a row is added only with a stage event) and the erasures
  (which delete the shopper's rows).

Rows are only added to ``events`` and ``purchases`` (erasure aside, covered above),
so an unchanged signature means an unchanged answer. Event retention deletes events
older than its window without an audit entry; :data:`MAX_AGE_S` bounds how long a
cached answer lives whatever the signature, so a purge shows within minutes.
One cache per :class:`~hq.db.HqDb` (a worker's own; other workers' writes show
through the database-read signatures).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from aislecast.kernel.counters import count
from hq.db import HqDb

__all__ = ["MAX_AGE_S", "StatsCache", "StatsCacheStats", "cache_of", "lift_inputs"]

MAX_AGE_S: Final = 300.0
_CACHES: weakref.WeakKeyDictionary[HqDb, StatsCache] = weakref.WeakKeyDictionary()
_GUARD = threading.Lock()


@dataclass(slots=True)
class StatsCacheStats:
    hits: int = count("console stats answered from the cache (inputs unchanged)")
    misses: int = count("console stats recomputed (a new decision, purchase or erasure)")


@dataclass
class _Entry:
    signature: object
    value: Any
    at: float


@dataclass
class StatsCache:
    """Per-campaign answers under their signatures; :meth:`inputs` reads the shared ones
    once per refresh."""

    clock: Callable[[], float] = time.monotonic
    stats: StatsCacheStats = field(default_factory=StatsCacheStats)
    _entries: dict[tuple[str, str], _Entry] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, kind: str, campaign: str, signature: object,
            compute: Callable[[], Any]) -> Any:
        key = (kind, campaign)
        now = self.clock()
        with self._lock:
            e = self._entries.get(key)
            if e is not None and e.signature == signature and now - e.at < MAX_AGE_S:
                self.stats.hits += 1
                return e.value
        value = compute()
        with self._lock:
            self.stats.misses += 1
            self._entries[key] = _Entry(signature, value, now)
        return value


def lift_inputs(db: HqDb) -> tuple[dict[str, tuple[tuple[str, int], ...]],
                                   dict[str, tuple[int, float]], tuple[int, float]]:
    """(campaign -> its decisions per store, store -> its purchases' count and newest
    ts, erasures' count and newest ts): three small indexed queries."""
    decided: dict[str, list[tuple[str, int]]] = {}
    for cid, store, n in db.query(
            "SELECT campaign, store, CAST(sum(n) AS BIGINT) FROM rollup_totals"
            " WHERE kind = 'decision' AND reason IN ('offer', 'holdout') AND campaign <> ''"
            " GROUP BY campaign, store ORDER BY campaign, store"):
        decided.setdefault(str(cid), []).append((str(store), int(n)))
    bought = {str(s): (int(n), float(ts or 0)) for s, n, ts in db.query(
        "SELECT store, count(*), max(ts) FROM purchases GROUP BY store")}
    row = db.one("SELECT count(*), max(at) FROM erasures")
    erased = (0, 0.0) if row is None else (int(row[0]), float(row[1] or 0))
    return {c: tuple(v) for c, v in decided.items()}, bought, erased


def cache_of(db: HqDb) -> StatsCache:
    """The cache of ``db`` (made on first use)."""
    with _GUARD:
        cache = _CACHES.get(db)
        if cache is None:
            cache = _CACHES[db] = StatsCache()
        return cache
