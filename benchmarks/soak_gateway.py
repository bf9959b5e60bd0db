"""The gateway process of ``aislecast bench soak``, on the accelerated clock of
:mod:`benchmarks.simclock` (``python -m benchmarks.simclock PLAN.json benchmarks.soak_gateway``).

The product's :class:`~gateway.app.Gateway` (its own SQLite file, MQTT link,
TaskGroup of named tasks) with the simulated scanner over a
:class:`~edge.simstore.SimStore` into which the plan's shoppers walk at their simulated
arrival times. Every half real second it writes one JSON line on stdout (simulated time,
RSS, which named tasks are alive, the gateway's own counters); at each simulated hour it
writes that hour's latency percentiles: the whole per-advert path (decode, token, presence,
and the decision and outbox commit when one is due), timed with the real
``perf_counter``. It exits by itself at the plan's end.

It imports nothing of HQ's: its RSS is the gateway's and the simulated store's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
import time
from array import array
from bisect import bisect_right
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aislecast.kernel.const import TOKEN_ROTATION_K
from aislecast.kernel.procinfo import rss_mib
from benchmarks.simclock import SimClock, installed, run_on_real_loop
from benchmarks.soak_probe import Probe
from edge.advert import Advertisement
from edge.scanner import AdvertCallback
from edge.simstore import SimBeacon, SimShopper, SimStore, default_zones
from gateway.app import Gateway
from gateway.config import load_config

__all__ = ["GATEWAY_TASKS", "LatencyHistogram", "PlannedTokens", "main"]

#: The named tasks a running gateway (no NFC, no systemd) and its scanner keep alive.
GATEWAY_TASKS = ("gw-publisher", "gw-presence-tick", "gw-health", "sim-scanner")
_SAMPLE_S = 0.5  # real seconds between samples
_FEED_S = 0.1  # real seconds between looks for shoppers due to walk in
_DECIDED = {"enter", "dwell", "exit"}  # the listener kinds a presence decision reports
_SCAN_SIM_S = 1.0  # simulated seconds between the scanner's looks at the clock (slack: 2 s)
_STEP_SIM_S = 0.5  # simulated seconds between two steps of the simulated store
_CATCH_UP_SIM_S = 1.5  # a loop turn later than this loses the frames in between (counted)
_ADV_INTERVAL_S = 1.0  # phones and beacons advertise once a simulated second


# Bucket edges 0.1 % apart from 0.1 us to 100 s, for percentiles of a whole hour's samples.
_EDGES = [0.1 * 1.001 ** i for i in range(int(math.log(1e9) / math.log(1.001)) + 1)]
_bucket = partial(bisect_right, _EDGES)
_ZEROS = array("I", bytes(4 * (len(_EDGES) + 1)))


class LatencyHistogram:
    """An hour's latency samples as counts per 0.1 % bucket: a fixed 81 KiB, however many
    samples. Keeping the samples themselves (one C double each) made the soak's busiest
    hour hold ~7.5 MiB of them in the gateway's process (980,000 adverts), RSS that was
    the benchmark's and that the peak row counted as the gateway's; before that, one
    float object each also pinned allocator arenas. Percentiles are a bucket's lower
    edge: at most 0.1 % below the nearest-rank value (values under 0.1 us read 0, over
    100 s read 100 s)."""

    __slots__ = ("counts", "n")

    def __init__(self) -> None:
        self.counts = array("I", _ZEROS)
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def add(self, us: float) -> None:
        self.counts[_bucket(us)] += 1
        self.n += 1

    def clear(self) -> None:
        self.counts[:] = _ZEROS  # in place: same length, no new buffer
        self.n = 0

    def percentile(self, q: float) -> float:
        """The lower edge of the bucket that holds the nearest-rank ``q`` percentile."""
        if not self.n:
            return math.nan
        rank = min(self.n - 1, int(q * self.n))
        below = 0
        for b, c in enumerate(self.counts):
            below += c
            if below > rank:
                return 0.0 if b == 0 else _EDGES[b - 1]
        raise AssertionError("unreachable: the counts add up to n")


def _emit(row: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(row) + "\n")
    sys.stdout.flush()


class PlannedTokens:
    """A simulated phone's on-air token from the plan's precomputed epochs
    (:func:`benchmarks.bench_soak.visit_tokens`): this process computes no AES, so its RSS
    holds no ``cryptography`` (the gateway's own process never imports it). One bytes
    object per shopper (8 bytes an epoch), not a dict of them: the simulator's share stays small."""

    __slots__ = ("_first", "_tokens", "inbox")

    def __init__(self, inbox: str, tokens: tuple[int, str] | list[Any]) -> None:
        self.inbox = inbox
        self._first, self._tokens = int(tokens[0]), bytes.fromhex(tokens[1])

    def __call__(self, unix: float) -> bytes:
        i = (int(unix) >> TOKEN_ROTATION_K) - self._first
        if not 0 <= i < len(self._tokens) // 8:
            raise LookupError(f"soak plan has no token for shopper {self.inbox} in epoch "
                              f"{i + self._first}")
        return self._tokens[8 * i:8 * i + 8]


class _Timed:
    """The scanner callback, timed; a call during which the gateway reported a presence
    decision is a decision's latency, the others an advert's."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.inner: AdvertCallback | None = None
        self.decided = False
        self.hour = 0
        # counts per bucket, not the samples: see LatencyHistogram
        self.adverts = LatencyHistogram()
        self.decisions = LatencyHistogram()

    def listener(self, kind: str, _: dict[str, Any]) -> None:
        if kind in _DECIDED:
            self.decided = True

    def __call__(self, adv: Advertisement) -> None:
        assert self.inner is not None
        self.decided = False
        t0 = time.perf_counter()
        self.inner(adv)
        us = (time.perf_counter() - t0) * 1e6
        (self.decisions if self.decided else self.adverts).add(us)

    def roll(self, hour: int) -> None:
        """Report the hour just ended (if any adverts) and start ``hour``."""
        if self.adverts or self.decisions:
            a, d = self.adverts, self.decisions
            _emit({"hour": self.hour, "adverts": len(a), "decisions": len(d),
                   "advert_p50_us": a.percentile(0.5), "advert_p99_us": a.percentile(0.99),
                   "decision_p50_us": d.percentile(0.5) if d else None,
                   "decision_p99_us": d.percentile(0.99) if d else None})
        self.hour = hour
        self.adverts.clear()
        self.decisions.clear()


class _StepScanner:
    """The simulated store stepped every :data:`_STEP_SIM_S` of simulated time, each step's
    frames stamped with its own time; steps run in bursts every :data:`_SCAN_SIM_S`
    simulated seconds, so the presence engine never sees a sample older than its clock's slack."""

    def __init__(self, store: SimStore, on_advert: AdvertCallback, clock: SimClock) -> None:
        self.name = "sim"
        self._scan_s = _SCAN_SIM_S / clock.scale
        self.store, self._on_advert = store, on_advert
        self.adverts = self.callback_errors = 0
        self.lost_sim_s = 0.0  # simulated time skipped because the loop was late
        self.last_advert_monotonic: float | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name="sim-scanner")
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        t = time.monotonic()
        while True:
            await asyncio.sleep(self._scan_s)
            now, offset = time.monotonic(), time.time() - time.monotonic()
            if now - t > _CATCH_UP_SIM_S:
                self.lost_sim_s += now - _CATCH_UP_SIM_S - t
                t = now - _CATCH_UP_SIM_S
            while t + _STEP_SIM_S <= now:
                t += _STEP_SIM_S
                for adv in self.store.step(t, t + offset):
                    self.adverts += 1
                    try:
                        self._on_advert(adv)
                    except Exception:  # noqa: BLE001 - counted, as the product's scanners do
                        self.callback_errors += 1
                self.last_advert_monotonic = t

    def stats(self) -> dict[str, float | int | str | None]:
        last = self.last_advert_monotonic
        return {"backend": self.name, "adverts": self.adverts, "restarts": 0,
                "callback_errors": self.callback_errors, "lost_sim_s": round(self.lost_sim_s, 1),
                "last_advert_age_s": None if last is None else round(time.monotonic() - last, 3)}


async def _feed(store: SimStore, pending: list[SimShopper], clock: SimClock) -> None:
    """Let each planned shopper walk in shortly before their arrival."""
    pending.sort(key=lambda s: s.start, reverse=True)
    while pending:
        horizon = time.monotonic() + _FEED_S * clock.scale * 2
        while pending and pending[-1].start <= horizon:
            store.add_shopper(pending.pop())
        await asyncio.sleep(_FEED_S)


async def _gateway(plan: dict[str, Any], clock: SimClock) -> None:
    cfg = load_config(Path(plan["gateway_config"]))
    zones = default_zones()
    store = SimStore(zones, seed=plan["seed"], beacons=[
        SimBeacon(f"b-{z.id}", z.id, z.x, z.y, major=1, minor=i + 1, interval_s=_ADV_INTERVAL_S)
        for i, z in enumerate(zones)])
    pending = [SimShopper(name=s["inbox"], token_for=PlannedTokens(s["inbox"], s["tokens"]),
                          path=[(z, d) for z, d in s["path"]], start=clock.mono_of(s["arrive"]),
                          adv_interval_s=_ADV_INTERVAL_S)
               for s in plan.pop("shoppers")]  # the plan's copy goes: only the walkers stay
    timed = _Timed(clock)

    def scanner(cb: AdvertCallback) -> _StepScanner:
        timed.inner = cb
        return _StepScanner(store, timed, clock)

    end = plan["sim_seconds"]
    probe = Probe()
    n = 0
    async with Gateway(cfg, scanner) as gw:
        gw.listeners.append(timed.listener)
        feeder = asyncio.create_task(_feed(store, pending, clock), name="soak-feeder")
        _emit({"started": True, "sim": clock.elapsed()})
        probe.malloc_stats("mallocstats-start.txt")
        while (elapsed := clock.elapsed()) < end:
            hour = int(elapsed // 3600)
            if hour != timed.hour:
                timed.roll(hour)
            extra = probe.sample(snapshot=n > 0 and n % 10 == 0)
            n += 1
            alive = {t.get_name() for t in asyncio.all_tasks() if not t.done()}
            _emit({"sim": elapsed, "rss_mib": rss_mib(), "died": [n for n in GATEWAY_TASKS if n not in alive],
                   "present": len(store.shoppers), "metrics": gw.metrics(), **extra})
            await asyncio.sleep(_SAMPLE_S)
        timed.roll(timed.hour + 1)
        feeder.cancel()
    probe.malloc_stats("mallocstats-end.txt")
    probe.write()


def main(argv: list[str]) -> int:
    plan = json.loads(Path(argv[0]).read_text())
    clock = installed()
    run_on_real_loop(_gateway(plan, clock))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
