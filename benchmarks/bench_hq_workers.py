"""Several HQ workers on one PostgreSQL database: failover time, and ingest with 1 and 3.

Real ``aislecast hq serve`` processes (:class:`benchmarks.hq_workers.WorkerPool`) on an
authenticated Mosquitto, each logged in as ``hq.N``:

- failover p50 / max: the leader is SIGKILLed; the clock stops when
  the bundle the new leader publishes at takeover arrives at a subscriber. It is the
  follower's lock retry (every ``hq.leader.LEADER_EVERY_S``, so 0 to 2 s) plus the
  takeover round (train, sign, publish). The killed worker is restarted (it follows)
  before the next run.
- ingest with 1 and with 3 workers: three simulated gateways send ``EVENTS``
  events in batches of 100 (16 unacknowledged each, resent after 10 s as a gateway
  does); the clock stops at the last end-to-end ack (every event stored). First one
  worker, then three (the shared subscription spreads the batches).

PostgreSQL is the server at ``AISLECAST_BENCH_PG`` in a fresh schema, dropped after;
when absent, no rows (the reason printed).

    python -m benchmarks.bench_hq_workers        # or: aislecast bench hq_workers
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks._harness import BenchOptions, Measurement, benchmark
from benchmarks.bench_ingest import pg_schema
from benchmarks.hq_workers import SimGateway, WorkerPool, events

__all__ = ["bench_hq_workers"]

GATEWAYS = ("g1", "g2", "g3")


async def _failovers(pool: WorkerPool, runs: int) -> list[float]:
    took: list[float] = []
    for _ in range(runs):
        leader = await pool.leader()
        async with pool.bundles() as bundles:
            killed_at = await pool.kill(leader)
            arrived, _ = await asyncio.wait_for(bundles.get(), 60)
        took.append(arrived - killed_at)
        await pool.start(leader.name)  # back as a follower for the next run
    return took


async def _ingest(pool: WorkerPool, n: int, tag: str) -> float:
    """Events/s from the first publish to the last acknowledgement, all gateways at once
    (every batch encoded before the clock starts)."""
    per = n // len(GATEWAYS)
    sims = [SimGateway(pool, gw, resend_s=10.0) for gw in GATEWAYS]
    loads = [s.batches(events(per, f"{tag}-{gw}", gw), f"{tag}-{gw}")
             for s, gw in zip(sims, GATEWAYS, strict=True)]
    t0 = time.perf_counter()
    await asyncio.gather(*(s.send(load) for s, load in zip(sims, loads, strict=True)))
    return per * len(GATEWAYS) / (time.perf_counter() - t0)


@benchmark("hq_workers")
async def bench_hq_workers(opts: BenchOptions) -> list[Measurement]:
    runs, n = (1, 3_000) if opts.quick else (5, 60_000)
    with tempfile.TemporaryDirectory(prefix="aislecast-workers-") as tmp, pg_schema("hq_workers") as pg:
        if pg is None:
            return []
        async with WorkerPool(Path(tmp), pg, gateways=GATEWAYS) as pool:
            await pool.start("1")
            one = await _ingest(pool, n, "one")
            await pool.start("2")
            await pool.start("3")
            three = await _ingest(pool, n, "three")
            took = await _failovers(pool, runs)
    extra: dict[str, float | int | str] = {"runs": runs, "workers": 3}
    load: dict[str, float | int | str] = {"events": n, "gateways": len(GATEWAYS), "batch": 100}
    return [
        Measurement("hq_workers", "aislecast", "ingest, 1 worker", one, "events/s", extra=load),
        Measurement("hq_workers", "aislecast", "ingest, 3 workers", three, "events/s", extra=load),
        Measurement("hq_workers", "aislecast", "failover (SIGKILL -> next bundle) p50",
                    statistics.median(took), "s",
                    better="lower", extra=extra),
        Measurement("hq_workers", "aislecast", "failover (SIGKILL -> next bundle) max", max(took), "s",
                    better="lower", extra=extra),
    ]


if __name__ == "__main__":
    from benchmarks._harness import run_benchmarks

    raise SystemExit(asyncio.run(run_benchmarks(["hq_workers"], as_json=False,
                                                opts=BenchOptions())))
