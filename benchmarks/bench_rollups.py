"""The console's funnel queries on rollups of 10 M events, and ingest with rollups on.

Two parts, on SQLite and PostgreSQL in the same run:

- ``query``: 10 M events are drawn (90 days, 20 stores of 6 zones, 30 campaigns with
  variants A and B, five trigger kinds; each decision followed by its funnel,
  published, delivered, opened, clicked, redeemed, at falling rates; zone events beside
  them), stored in ``events`` in bulk (SQLite ``executemany``, PostgreSQL ``COPY``), and
  the rollups built from them by the migration's backfill SQL
  (:func:`hq.rollup_schema.rebuild`): the tables ingest would have left. Then the
  console's questions are asked through :func:`hq.funnel.funnel`, rotating over the
  campaigns: a campaign's funnel (``funnel``), its hourly series over the 90 days
  (``by_hour_90d``), its breakdown by store (``by_store``), by variant over the last 7
  days (``by_variant_7d``, the finest table), and every campaign's funnel (the
  console's poll, ``all_campaigns``); p50 and p99 in ms.
- ``ingest``: :func:`benchmarks.bench_ingest.over_mqtt`, a real ``aislecast hq serve``
  process on an authenticated Mosquitto taking simulated gateways' QoS 1 batches, the
  clock stopped at the last end-to-end ack; rollups are kept in each batch's
  transaction (they always are).

``aislecast bench rollups --events N`` (or ``AISLECAST_BENCH_ROLLUP_EVENTS``) sets the
number of events drawn (default 10,000,000; ``--quick`` 50,000), for a reduced run on a
busy machine; the build time is reported as ``load_s``.

    python -m benchmarks.bench_rollups            # or: aislecast bench rollups
"""

from __future__ import annotations

import asyncio
import itertools
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from benchmarks._harness import BenchOptions, Measurement, benchmark, env_count, percentile
from benchmarks.bench_ingest import BATCH, GATEWAYS, INFLIGHT, over_mqtt, pg_schema
from hq.db import HqDb
from hq.funnel import funnel, funnel_totals
from hq.inbox_index import catch_up
from hq.rollup_schema import ROLLUPS, rebuild

__all__ = ["bench_rollups", "draw", "events"]

DAYS = 90
STORES = 20
ZONES = 6
CAMPAIGNS = 30
TRIGGERS = ("enter", "dwell", "tap", "scan", "schedule")
# each decision's funnel: (kind, probability given the decision made an offer)
FUNNEL = (("offer_published", 0.97), ("offer_delivered", 0.9), ("offer_opened", 0.35),
          ("offer_clicked", 0.12), ("offer_redeemed", 0.04))
END = 1_764_000_000  # a whole hour; the 90 days end here

Key = tuple[str, int, str, str, str, str, str, str]  # rollup_hours' key


Row = tuple[str, str, float, str, str | None, str | None, str, str | None, str, str]
#: the events columns the generator writes (the rest stay NULL, as ingest leaves them)
ROW_COLUMNS = ("id", "kind", "ts", "store", "campaign", "variant", "zone", "reason",
               "trigger_kind", "body")


def events(n_events: int, seed: int = 7) -> Iterator[tuple[Key, float]]:
    """``n_events`` drawn events (a few more: a decision's funnel is not cut), each as
    its ``rollup_hours`` key and its time in the hour."""
    rng = random.Random(seed)
    hours = DAYS * 24
    start = END - hours * 3600
    made = 0
    while made < n_events:
        hour = start + rng.randrange(hours) * 3600
        ts = hour + rng.random() * 3599.0
        store = f"s{rng.randrange(STORES):02d}"
        zone = f"z{rng.randrange(ZONES)}"
        trig = TRIGGERS[rng.randrange(len(TRIGGERS))]
        yield ("", hour, store, zone, "", "enter", "zone_enter", ""), ts
        camp = f"c{rng.randrange(CAMPAIGNS):02d}"
        variant = "AB"[rng.randrange(2)]
        roll = rng.random()
        reason = "offer" if roll < 0.8 else "holdout" if roll < 0.9 else "cap_per_visit"
        yield (camp, hour, store, zone, variant, trig, "decision", reason), ts
        made += 2
        if reason != "offer":
            continue
        for kind, p in FUNNEL:
            if rng.random() >= p:
                break
            yield (camp, hour, store, zone, variant, trig, kind, ""), ts
            made += 1


def draw(n_events: int, seed: int = 7) -> Counter[Key]:
    """``rollup_hours`` as the events of :func:`events` leave it."""
    return Counter(key for key, _ in events(n_events, seed))


def _rows(n_events: int) -> Iterator[Row]:
    """:func:`events` as ``events`` rows (:data:`ROW_COLUMNS`; a short body)."""
    for i, ((camp, _, store, zone, variant, trig, kind, reason), ts) in \
            enumerate(events(n_events)):
        yield (f"e{i}", kind, ts, store, camp or None, variant or None, zone, reason or None,
               trig, "{}")


def _fill(db: HqDb, n_events: int) -> int:
    """Store the drawn events, then build the rollups from them with the migration's
    backfill SQL (:func:`hq.rollup_schema.rebuild`): the tables ingest would have left.
    Returns the events stored."""
    cols = ", ".join(ROW_COLUMNS)
    stored = 0
    if db.dialect == "postgresql":
        import psycopg  # noqa: PLC0415 - optional dependency (extra "postgres")

        with psycopg.connect(db.url, autocommit=True) as conn, conn.cursor() as cur, \
                cur.copy(f"COPY events ({cols}) FROM STDIN") as copy:
            for row in _rows(n_events):
                copy.write_row(row)
                stored += 1
    else:
        rows = _rows(n_events)
        sql = f"INSERT INTO events ({cols}) VALUES ({', '.join('?' * len(ROW_COLUMNS))})"  # noqa: S608
        while chunk := list(itertools.islice(rows, 200_000)):
            stored += db.executemany(sql, chunk)
        with db.transaction(immediate=True):  # the shoppers' index's mark, as ingest leaves it
            catch_up(db, stored, tail_max=0)
    rebuild(db)
    # statistics, and on PostgreSQL the visibility map an index-only scan needs: a live
    # database has them from autovacuum; a bulk load would otherwise be queried before
    # autovacuum got to it
    db.execute("VACUUM ANALYZE" if db.dialect == "postgresql" else "ANALYZE")
    return stored


def _time(fn: Callable[[int], object], reps: int) -> tuple[float, float]:
    times = []
    for i in range(reps):
        t = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t) * 1000)
    return percentile(times, 0.5), percentile(times, 0.99)


def _queries(db: HqDb, reps: int) -> dict[str, tuple[float, float]]:
    def camp(i: int) -> str:
        return f"c{i % CAMPAIGNS:02d}"

    since = END - DAYS * 86400
    return {
        "funnel": _time(lambda i: funnel(db, camp(i)), reps),
        "by_hour_90d": _time(lambda i: funnel(db, camp(i), by="hour", since=since, until=END), reps),
        "by_store": _time(lambda i: funnel(db, camp(i), by="store"), reps),
        "by_variant_7d": _time(lambda i: funnel(db, camp(i), by="variant",
                                                since=END - 7 * 86400, until=END), reps),
        "all_campaigns": _time(lambda _: funnel_totals(db), reps),
    }


def _query_part(url: str, n_events: int, reps: int, backend: str) -> list[Measurement]:
    t = time.perf_counter()
    db = HqDb(url)
    stored = _fill(db, n_events)
    built = time.perf_counter() - t
    sizes: dict[str, float | int | str] = {"events": stored, "load_s": round(built, 1)}
    sizes |= {r.table: int(db.query(f"SELECT count(*) FROM {r.table}")[0][0])  # noqa: S608
              for r in ROLLUPS}
    print(f"[bench] rollups: {backend}: {stored:,} events stored and rolled up in {built:.0f} s",
          file=sys.stderr)
    out = []
    for name, (p50, p99) in _queries(db, reps).items():
        out += [Measurement("rollups", "aislecast", f"{name}_p50_{backend}", p50, "ms",
                            better="lower", extra=sizes),
                Measurement("rollups", "aislecast", f"{name}_p99_{backend}", p99, "ms",
                            better="lower", extra=sizes)]
    db.close()
    return out


def _size(opts: BenchOptions) -> int:
    if opts.events is not None:
        return opts.events
    return env_count("AISLECAST_BENCH_ROLLUP_EVENTS", 50_000 if opts.quick else 10_000_000,
                     minimum=1, what="a count of events",
                     hint="set a whole number such as 1000000, or unset it")


@benchmark("rollups")
async def bench_rollups(opts: BenchOptions) -> list[Measurement]:
    n_events = _size(opts)
    reps = 20 if opts.quick else 200
    n_batches = 100 if opts.quick else 300
    rows: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="aislecast-rollups-") as tmp, \
            pg_schema("rollups") as pg_q, pg_schema("rollups") as pg_i:
        work = Path(tmp)
        backends = [("sqlite", f"sqlite:///{work}/q.sqlite", f"sqlite:///{work}/i.sqlite")]
        if pg_q is not None and pg_i is not None:
            backends.append(("postgresql", pg_q, pg_i))
        for name, query_url, ingest_url in backends:
            rows += await asyncio.to_thread(_query_part, query_url, n_events, reps, name)
            rate = await over_mqtt(ingest_url, work, n_batches)
            rows.append(Measurement("rollups", "aislecast", f"ingest_mqtt_{name}", rate,
                                    "events/s", extra={"batch": BATCH, "inflight": INFLIGHT,
                                                       "gateways": GATEWAYS,
                                                       "events": n_batches * BATCH}))
    return rows


if __name__ == "__main__":
    from benchmarks._harness import run_benchmarks

    raise SystemExit(asyncio.run(run_benchmarks(["rollups"], as_json=False, opts=BenchOptions())))
