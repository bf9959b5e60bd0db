"""Soak: a simulated day of a store's shoppers through a real gateway, on an accelerated clock.

Real: Mosquitto (the kernel's broker harness), HQ (:class:`~hq.server.HqServer`: ingest
acknowledging event batches, bundles rebuilt, signed and republished every simulated 5
minutes), the gateway (:class:`~gateway.app.Gateway` with its SQLite file, outbox, caps,
visits, presence ticker and health reports) and the bytes on air (Eddystone-EID frames
with each shopper's rotating token, iBeacon frames, path loss, noise, dropouts from
:class:`~edge.simstore.SimStore`). HQ and the gateway each run in a process of their own
(:mod:`benchmarks.soak_gateway`, :mod:`benchmarks.soak_hq`); the gateway's RSS is read from that process.

Accelerated: both processes read ``time.time``/``time.monotonic`` from one
:class:`~benchmarks.simclock.SimClock` (``scale`` simulated seconds per real second), so
token epochs, bundle expiry and republishing, presence and visit expiry, caps' day
windows, pruning and fleet checks pass through a simulated day. Periodic tasks sleep on
the event loop's real clock: the gateway's presence ticker (every 0.5 s real) and the
scanner's steps (every 50 ms real) run ``scale`` times coarser in simulated time, so a
phone is heard once per scanner step, not every 200 ms.

Rows: RSS at the start, end and peak, its slope per simulated hour (least squares over
the shopping hours), named tasks that died, offers made, bundles applied, the peak outbox
depth, and the advert/decision latency p50/p99 with the spread of the hourly p99 (the
worst hour over the median hour). The report (``artifacts/soak/``: report.md, PNG plots)
is written by :mod:`benchmarks.soak_report`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import sys
import tempfile
import time
import zoneinfo
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aislecast.apps.scenarios import TZ, setup_store
from aislecast.kernel.broker import BrokerConfig, MosquittoProcess, free_port
from aislecast.kernel.campaign import Caps, Schedule, Window
from aislecast.kernel.const import TOKEN_ROTATION_K
from aislecast.kernel.schema import Campaign, Creative, Trigger
from aislecast.kernel.signing import Signer, load_or_create_signing_key, public_key_pem
from aislecast.kernel.tokens import eid_for, epoch_of, epoch_start
from benchmarks._harness import BenchOptions, Measurement, benchmark, stop_process
from benchmarks.soak_report import SoakRun, summarize, write_report
from edge.simstore import STORE_UUID, default_zones
from hq.db import HqDb
from hq.service import HqService

__all__ = ["SoakParams", "bench_soak", "run_soak", "visit_tokens"]

STORE = "store-soak"
GATEWAY = "gw-soak"
_DAY0 = dt.datetime(2026, 6, 8, tzinfo=zoneinfo.ZoneInfo(TZ)).timestamp()  # a Monday, 00:00
_AISLES = ["produce", "bakery", "dairy", "drinks"]
_READY_WITHIN_S = 120.0  # a process says it started (a loaded 2-core machine)
_TOKEN_MARGIN_S = 1800.0  # tokens precomputed this long before and after a planned visit
#: glibc malloc arenas in the soak's processes, as the gateway's systemd unit sets them
_CHILD_ENV = {"PYTHONUNBUFFERED": "1", "MALLOC_ARENA_MAX": "2"}


class SoakParams:
    """A day (``hours`` simulated from ``first_hour`` local) of ``shoppers`` arriving
    between 08:00 and 21:00, ``scale`` simulated seconds per real second."""

    def __init__(self, *, shoppers: int, hours: float, first_hour: float, scale: float,
                 seed: int = 14) -> None:
        self.shoppers, self.hours, self.first_hour, self.scale, self.seed = (
            shoppers, hours, first_hour, scale, seed)


FULL = SoakParams(shoppers=1000, hours=24.0, first_hour=0.0, scale=90.0)
QUICK = SoakParams(shoppers=60, hours=1.25, first_hour=11.0, scale=240.0)


def _campaigns() -> list[Campaign]:
    """One offer per aisle on entering it (once a day), one at the checkout after a
    dwell, and a morning-only one at the entrance: caps, day windows and schedules."""
    out = [Campaign(id=f"soak-{z}", name=z, stores=[STORE], trigger=Trigger(kind="enter", zones=[z]),
                    creatives=[Creative(id="a", title=f"{z} deal", format="coupon", coupon_code="S1")],
                    caps=Caps(per_day=1, per_visit_all=3, min_gap_s=60.0), validity_s=900)
           for z in _AISLES]
    out.append(Campaign(id="soak-checkout", name="checkout", stores=[STORE],
                        trigger=Trigger(kind="dwell", zones=["checkout"], min_dwell_s=30.0),
                        creatives=[Creative(id="a", title="see you", format="coupon", coupon_code="S2")],
                        caps=Caps(per_day=1), validity_s=3600))
    out.append(Campaign(id="soak-morning", name="morning", stores=[STORE],
                        trigger=Trigger(kind="enter", zones=["entrance"]),
                        creatives=[Creative(id="a", title="breakfast", format="coupon", coupon_code="S3")],
                        schedule=Schedule(windows=[Window("08:00", "11:00")]), validity_s=600))
    return out


def _path(rng: random.Random) -> list[tuple[str, float]]:
    aisles = rng.sample(_AISLES, k=rng.randint(2, 4))
    return [("entrance", rng.uniform(60, 120)), *((a, rng.uniform(120, 480)) for a in aisles),
            ("checkout", rng.uniform(90, 240))]


def _arrival(rng: random.Random, p: SoakParams) -> float:
    """Simulated wall time of a visit: busy at noon and after work, within the window run."""
    lo, hi = max(8.0, p.first_hour), min(21.0, p.first_hour + p.hours) - 0.75
    while True:
        h = rng.choice([rng.uniform(lo, hi), rng.gauss(12.5, 1.0), rng.gauss(17.5, 1.2)])
        if lo <= h <= hi:
            return _DAY0 + h * 3600


def visit_tokens(key: bytes, arrive: float, path: list[tuple[str, float]]) -> tuple[int, str]:
    """A shopper's on-air tokens for every epoch of a planned visit, with
    :data:`_TOKEN_MARGIN_S` either side (walking between zones adds to the dwell times):
    the first epoch and the 8-byte tokens from it on, concatenated, in hex.

    Computed here, not in the gateway's process: the phones' AES (``cryptography``'s
    OpenSSL, ~6 MiB of RSS) is the simulator's, and the gateway never imports it."""
    first = epoch_of(arrive - _TOKEN_MARGIN_S, TOKEN_ROTATION_K)
    last = epoch_of(arrive + sum(d for _, d in path) + _TOKEN_MARGIN_S, TOKEN_ROTATION_K)
    return first, b"".join(eid_for(key, epoch_start(e, TOKEN_ROTATION_K), TOKEN_ROTATION_K)
                           for e in range(first, last + 1)).hex()


def _prepare(work: Path, p: SoakParams, port: int) -> dict[str, Any]:
    """HQ's database (store, campaigns, enrolled shoppers), the gateway's config and the plan."""
    db = HqDb(f"sqlite:///{work}/hq.sqlite")
    try:
        signer = Signer(load_or_create_signing_key(work / "hq.pem"))
        service = HqService(db, signer)
        setup_store(service, STORE, default_zones(), STORE_UUID)
        for c in _campaigns():
            service.upsert_campaign(c)
        rng = random.Random(p.seed)
        shoppers = []
        for _ in range(p.shoppers):
            e = service.enroll(["offers", "personalisation", "analytics"], [STORE])
            arrive, path = _arrival(rng, p), _path(rng)
            shoppers.append({"inbox": e.inbox, "arrive": arrive, "path": path,
                             "tokens": visit_tokens(bytes.fromhex(e.identity_key), arrive, path)})
    finally:
        db.close()
    (work / "hq.pub.pem").write_text(public_key_pem(signer.public_key))
    config = work / "gateway.toml"
    config.write_text(
        f'gateway = "{GATEWAY}"\nstore = "{STORE}"\n'
        f'hq_public_key = "{work / "hq.pub.pem"}"\ndata_dir = "{work / "gw-data"}"\n'
        f"health_every_s = 1.0\n[broker]\nport = {port}\n[scanner]\nbackend = \"sim\"\n"
        "[scanner.receivers]\n" + "".join(f'"sim-{z.id}" = "{z.id}"\n' for z in default_zones()))
    origin_wall = _DAY0 + p.first_hour * 3600
    return {"scale": p.scale, "origin_real": time.monotonic(), "origin_wall": origin_wall,
            "sim_seconds": p.hours * 3600, "seed": p.seed, "gateway_config": str(config),
            "hq_db": f"sqlite:///{work}/hq.sqlite", "hq_key": str(work / "hq.pem"),
            "broker_port": port, "shoppers": shoppers}


@contextlib.asynccontextmanager
async def _child(role: str, plan: Path, err: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    with err.open("wb") as e:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.simclock", str(plan), f"benchmarks.soak_{role}",
            stdout=asyncio.subprocess.PIPE, stderr=e, start_new_session=True,
            env={**os.environ, **_CHILD_ENV}, limit=2**22)
    try:
        yield proc
    finally:
        await stop_process(proc, 15)


async def _started(proc: asyncio.subprocess.Process, role: str, err: Path) -> None:
    assert proc.stdout is not None
    async with asyncio.timeout(_READY_WITHIN_S):
        line = await proc.stdout.readline()
    if not line or not json.loads(line).get("started"):
        tail = (await asyncio.to_thread(err.read_text, errors="replace"))[-3000:]
        raise RuntimeError(f"soak {role} did not start (exit {proc.returncode}):\n{tail}")


async def run_soak(p: SoakParams) -> SoakRun:
    """One soak run: every sample line of the gateway process, parsed."""
    with tempfile.TemporaryDirectory(prefix="aislecast-soak-") as tmp:
        work = Path(tmp)
        port = free_port()
        async with MosquittoProcess(BrokerConfig(directory=work / "broker", port=port)):
            plan = await asyncio.to_thread(_prepare, work, p, port)
            plan_file = work / "plan.json"
            await asyncio.to_thread(plan_file.write_text, json.dumps(plan))
            async with _child("hq", plan_file, work / "hq.err") as hq:
                await _started(hq, "hq", work / "hq.err")
                async with _child("gateway", plan_file, work / "gw.err") as gw:
                    await _started(gw, "gateway", work / "gw.err")
                    run = SoakRun(params=vars(p), shoppers=p.shoppers)
                    assert gw.stdout is not None
                    async for line in gw.stdout:
                        run.add(json.loads(line))
                    rc = await gw.wait()
                    if rc != 0 or hq.returncode is not None:
                        tail = (await asyncio.to_thread((work / "gw.err").read_text))[-3000:]
                        raise RuntimeError(f"soak gateway exited {rc} (hq: {hq.returncode}):\n{tail}")
        return run


@benchmark("soak")
async def bench_soak(opts: BenchOptions) -> list[Measurement]:
    run = await run_soak(QUICK if opts.quick else FULL)
    out = Path(os.environ.get("AISLECAST_SOAK_DIR", "artifacts/soak"))
    await asyncio.to_thread(write_report, run, out)
    print(f"[bench] soak report written to {out / 'report.md'}", file=sys.stderr)
    return summarize(run)
