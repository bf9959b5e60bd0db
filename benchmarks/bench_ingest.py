"""HQ ingest throughput, SQLite and PostgreSQL side by side in the same run.

Two paths per backend:

- ``mqtt``: the product's path, as deployed. A real ``aislecast hq serve`` process
  (:class:`benchmarks.hq_workers.WorkerPool`: one worker, its own CPU, logged in to an
  authenticated Mosquitto whose credentials and ACL HQ renders) takes event batches of
  ``BATCH`` events from ``GATEWAYS`` simulated gateways (:class:`benchmarks.hq_workers.
  SimGateway`, logged in as their own gateway). Each publishes at QoS 1 with up to
  ``INFLIGHT`` batches not yet taken by the broker and, as a real gateway's outbox does,
  goes on publishing without waiting for HQ's end-to-end acknowledgements; the clock
  runs from the first publish to the last acknowledgement (every event stored with its
  rollups), and the acks must account for every event.
- ``mqtt_1m``: the same with 1,000,000 events into a fresh database (full runs only):
  the rate as the log grows, which is what a busy day holds (the 100,000 of ``mqtt``
  flatter a database whose indexes still fit its cache).
- ``shopper_lookup``: p50 and p99 of export's query of one shopper's events (~1,000 of
  them) in that million-event log: on SQLite the index is written in bulk and a lookup
  also scans the tail not yet indexed (:mod:`hq.inbox_index`), so this is its price.
- ``db``: :meth:`hq.ingest.Ingest.store_events` called directly, which is the time each
  batch takes to store; p99 of that is reported as ``batch_ms_p99``.

Until 2026-12 the ``mqtt`` path ran HQ and the publisher in the benchmark's own process
and event loop, and stopped the clock on HQ's counter: the publisher's MQTT work took
HQ's CPU, which a gateway (another machine) does not.

SQLite is a real file in WAL mode; PostgreSQL is the server at ``AISLECAST_BENCH_PG``
(default ``postgresql://postgres@127.0.0.1:5432/test``) in a fresh schema, dropped after.
When the server is absent the PostgreSQL rows are left out and the reason printed.

    python -m benchmarks.bench_ingest            # or: aislecast bench ingest
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from aislecast.kernel.schema import Event
from benchmarks._harness import BenchOptions, Measurement, benchmark, percentile
from benchmarks.hq_workers import SimGateway, WorkerPool
from hq.db import HqDb
from hq.inbox_index import of_inbox
from hq.ingest import Ingest

__all__ = ["PG_URL", "bench_ingest", "over_mqtt", "pg_schema"]

BATCH = 100  # events per batch (a gateway's batches hold up to 500: smaller is harder)
INFLIGHT = 16  # QoS 1 batches each gateway has not yet had taken by the broker
GATEWAYS = 4  # simulated gateways publishing at once
SUSTAINED = 1_000_000  # events of the mqtt_1m_* rows: a log that grows as a day's would
PG_URL = os.environ.get("AISLECAST_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _events(n: int, tag: str, gateway: str = "g1") -> list[Event]:
    """As a gateway sends them: a decision names its trigger, and the offer it made is
    the one the next event publishes."""
    kinds = ("zone_enter", "zone_dwell", "decision", "offer_published", "zone_exit")
    return [Event(id=f"{tag}-{i}", kind=kinds[i % 5], ts=1_700_000_000.0 + i, store="s1",  # type: ignore[arg-type]
                  gateway=gateway, inbox=f"in{i % 997}", zone="produce", campaign=f"c{i % 20}",
                  reason="offer" if i % 5 == 2 else None,
                  offer=f"{tag}-o{i - 1 if i % 5 == 3 else i}",
                  detail={"trigger": "enter"} if i % 5 == 2 else None)
            for i in range(n)]


@contextlib.contextmanager
def pg_schema(bench: str = "ingest") -> Iterator[str | None]:
    """A fresh schema's URL on the server at ``PG_URL`` (dropped after), or None with
    the reason printed when the server or psycopg is missing."""
    try:
        import psycopg  # noqa: PLC0415
    except ImportError:
        print(f"[bench] {bench}: PostgreSQL rows skipped: psycopg is not installed", file=sys.stderr)
        yield None
        return
    try:
        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        print(f"[bench] {bench}: PostgreSQL rows skipped: {PG_URL} unreachable: {exc}",
              file=sys.stderr)
        yield None
        return
    schema = f"aislecast_bench_{uuid.uuid4().hex[:10]}"
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{schema}"
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _direct(url: str, n_batches: int) -> tuple[float, float]:
    """(events/s, p99 ms per batch) for store_events straight into the database."""
    db = HqDb(url)
    ing = Ingest(db)
    evs = _events(n_batches * BATCH, "d")
    times = []
    t0 = time.perf_counter()
    for b in range(n_batches):
        t = time.perf_counter()
        ing.store_events(evs[b * BATCH:(b + 1) * BATCH], index=True)  # as HQ's groups do
        times.append(time.perf_counter() - t)
    total = time.perf_counter() - t0
    db.close()
    p99 = statistics.quantiles(times, n=100)[98] if len(times) >= 2 else times[0]
    return n_batches * BATCH / total, p99 * 1000


async def over_mqtt(url: str, work: Path, n_batches: int) -> float:
    """Events/s of ``n_batches`` batches into a real HQ process on the database at
    ``url``, from the first publish to the last end-to-end ack (see the module)."""
    names = tuple(f"g{i + 1}" for i in range(GATEWAYS))
    tag = uuid.uuid4().hex[:6]
    per = n_batches * BATCH // GATEWAYS
    async with WorkerPool(work / f"hq-{tag}", url, gateways=names) as pool:
        await pool.start("1")
        sims = [SimGateway(pool, gw, batch=BATCH, inflight=INFLIGHT, window=per,
                           resend_s=120.0) for gw in names]
        loads = [s.batches(_events(per, f"{tag}{gw}", gw), f"{tag}{gw}")
                 for s, gw in zip(sims, names, strict=True)]
        t0 = time.perf_counter()
        await asyncio.gather(*(s.send(load) for s, load in zip(sims, loads, strict=True)))
        took = time.perf_counter() - t0
    stored = sum(sum(s.acked.values()) for s in sims)
    if stored != per * GATEWAYS:  # the witness: every event acknowledged as stored once
        raise RuntimeError(f"HQ acknowledged {stored} events stored, not {per * GATEWAYS}")
    return per * GATEWAYS / took


@benchmark("ingest")
async def bench_ingest(opts: BenchOptions) -> list[Measurement]:
    n_batches = 20 if opts.quick else 1000
    rows: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="aislecast-ingest-") as tmp, pg_schema() as pg:
        work = Path(tmp)
        backends = [("sqlite", f"sqlite:///{work}/direct.sqlite", f"sqlite:///{work}/mqtt.sqlite")]
        if pg is not None:
            backends.append(("postgresql", pg, pg))
        for name, direct_url, mqtt_url in backends:
            rate, p99 = await asyncio.to_thread(_direct, direct_url, n_batches)
            rows += [Measurement("ingest", "aislecast", f"db_{name}", rate, "events/s",
                                 extra={"batch": BATCH}),
                     Measurement("ingest", "aislecast", f"batch_ms_p99_{name}", p99, "ms",
                                 better="lower", extra={"batch": BATCH})]
            if name == "postgresql":  # same schema for both paths: start the table afresh
                db = HqDb(mqtt_url)
                db.execute("DELETE FROM events")
                db.close()
            rate = await over_mqtt(mqtt_url, work, n_batches)  # a broker and an HQ of its own
            rows.append(_mqtt_row(f"mqtt_{name}", rate, n_batches))
            if not opts.quick:  # sustained: the log grows to a million events meanwhile
                big_url = f"sqlite:///{work}/mqtt-1m.sqlite" if name == "sqlite" else mqtt_url
                if name == "postgresql":
                    db = HqDb(mqtt_url)
                    db.execute("DELETE FROM events")
                    db.close()
                rate = await over_mqtt(big_url, work, SUSTAINED // BATCH)
                rows.append(_mqtt_row(f"mqtt_1m_{name}", rate, SUSTAINED // BATCH))
                rows += await asyncio.to_thread(_lookups, big_url, name)
    return rows


def _lookups(url: str, name: str, n: int = 200) -> list[Measurement]:
    """p50/p99 ms of export's query of one shopper's events (:func:`hq.inbox_index.
    of_inbox`) in the million-event log ingest just left: the price, on SQLite, of an
    index written in bulk (a lookup also scans the tail not yet indexed)."""
    db = HqDb(url)
    times, found = [], 0
    for i in range(n):
        cond, params = of_inbox(db, f"in{(i * 37) % 997}")
        t = time.perf_counter()
        found += len(db.query(f"SELECT body FROM events WHERE {cond} ORDER BY ts, id", params))  # noqa: S608
        times.append((time.perf_counter() - t) * 1000)
    tail = (db.one("SELECT count(*) FROM events WHERE rowid > (SELECT upto FROM events_by_inbox_mark)")
            if db.dialect == "sqlite" else (0,))
    db.close()
    if found < n * 100:  # the witness: each shopper has ~1,000 events in that log
        raise RuntimeError(f"{n} shopper lookups found only {found} events")
    extra: dict[str, float | int | str] = {"events": SUSTAINED, "shoppers_events": found // n,
                                           "tail": int(tail[0]) if tail else 0}
    return [Measurement("ingest", "aislecast", f"shopper_lookup_p{q}_{name}",
                        percentile(times, q / 100), "ms", better="lower", extra=extra)
            for q in (50, 99)]


def _mqtt_row(metric: str, rate: float, n_batches: int) -> Measurement:
    return Measurement("ingest", "aislecast", metric, rate, "events/s",
                       extra={"batch": BATCH, "inflight": INFLIGHT, "gateways": GATEWAYS,
                              "events": n_batches * BATCH})


if __name__ == "__main__":
    from benchmarks._harness import run_benchmarks

    raise SystemExit(asyncio.run(run_benchmarks(["ingest"], as_json=False, opts=BenchOptions())))
