"""HQ ingest throughput, SQLite and PostgreSQL side by side in the same run.

Two paths per backend:

- ``mqtt``: the product's path. A real HQ (:class:`hq.server.HqServer`: shared
  subscription, decode, one transaction per batch, end-to-end batch ack) on a private
  Mosquitto; a gateway-like publisher sends event batches of ``BATCH`` events at QoS 1
  with up to ``INFLIGHT`` unacknowledged; the clock stops when the last event is in the
  table.
- ``db``: :meth:`hq.ingest.Ingest.store_events` called directly, which is the time each
  batch holds the event loop (HQ runs the insert on the loop, see ``hq/db.py``); p99 of
  that is reported as ``batch_ms_p99``.

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

from aislecast.kernel import topics
from aislecast.kernel.broker import BrokerConfig, MosquittoProcess, free_port
from aislecast.kernel.mqtt import MqttLink, MqttSettings
from aislecast.kernel.schema import SCHEMA_VERSION, Event, EventBatch, encode
from benchmarks._harness import BenchOptions, Measurement, benchmark
from hq.db import HqDb
from hq.ingest import Ingest
from hq.server import HqServer

__all__ = ["PG_URL", "bench_ingest", "over_mqtt", "pg_schema"]

BATCH = 100  # events per batch: the gateway publisher's batch size order of magnitude
INFLIGHT = 16  # QoS 1 batches in flight from the publisher
PG_URL = os.environ.get("AISLECAST_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _events(n: int, tag: str) -> list[Event]:
    """As a gateway sends them: a decision names its trigger, and the offer it made is
    the one the next event publishes."""
    kinds = ("zone_enter", "zone_dwell", "decision", "offer_published", "zone_exit")
    return [Event(id=f"{tag}-{i}", kind=kinds[i % 5], ts=1_700_000_000.0 + i, store="s1",  # type: ignore[arg-type]
                  gateway="g1", inbox=f"in{i % 997}", zone="produce", campaign=f"c{i % 20}",
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
        ing.store_events(evs[b * BATCH:(b + 1) * BATCH])
        times.append(time.perf_counter() - t)
    total = time.perf_counter() - t0
    db.close()
    p99 = statistics.quantiles(times, n=100)[98] if len(times) >= 2 else times[0]
    return n_batches * BATCH / total, p99 * 1000


async def over_mqtt(url: str, port: int, work: Path, n_batches: int) -> float:
    async with HqServer(db_url=url, key_path=work / "hq.pem", mqtt=MqttSettings(port=port),
                        http_port=0, client_id=f"hq-{uuid.uuid4().hex[:6]}") as hq:
        evs = _events(n_batches * BATCH, f"m{uuid.uuid4().hex[:6]}")
        payloads = [encode(EventBatch(v=SCHEMA_VERSION, store="s1", gateway="g1",
                                      events=evs[b * BATCH:(b + 1) * BATCH], batch=f"b{b}"))
                    for b in range(n_batches)]
        topic = topics.gateway_events("s1", "g1")
        async with MqttLink(MqttSettings(port=port, max_inflight=INFLIGHT),
                            client_id="bench-gw", clean_start=True) as gw:
            await gw.wait_connected(10)
            sem = asyncio.Semaphore(INFLIGHT)

            async def send(p: bytes) -> None:
                async with sem:
                    await gw.publish(topic, p, qos=1)

            target = n_batches * BATCH
            done = asyncio.Event()
            hq.ingest.listeners.append(
                lambda _: done.set() if hq.ingest.stats.events_ingested >= target else None)
            t0 = time.perf_counter()
            async with asyncio.TaskGroup() as tg:
                for p in payloads:
                    tg.create_task(send(p))
            async with asyncio.timeout(300):
                await done.wait()
            return target / (time.perf_counter() - t0)


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
            # a broker per backend: a stopped HQ's persistent session stays in the
            # $share/hq group and would keep receiving (and queueing) its share
            port = free_port()
            async with MosquittoProcess(BrokerConfig(directory=work / f"broker-{name}", port=port)):
                rate = await over_mqtt(mqtt_url, port, work, n_batches)
            rows.append(Measurement("ingest", "aislecast", f"mqtt_{name}", rate, "events/s",
                                    extra={"batch": BATCH, "inflight": INFLIGHT}))
    return rows


if __name__ == "__main__":
    from benchmarks._harness import run_benchmarks

    raise SystemExit(asyncio.run(run_benchmarks(["ingest"], as_json=False, opts=BenchOptions())))
