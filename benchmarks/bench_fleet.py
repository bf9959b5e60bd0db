"""``fleet``: one fleet-health alert round at 1,000 and 10,000 stores (issue 13).

HQ's alert round asks :class:`hq.fleet_health.FleetRules` for the beacon and bundle-lag
alerts of every store a gateway reports for. It reads the whole fleet at once
(:func:`hq.fleet_health.fleet_health`: one query for every store's bundle version, the
board's gateways grouped in one pass). The reference beside it, subject
``per-store``, is the way it was before, kept here only: :func:`per_store_round`, one
:func:`~hq.fleet_health.store_health` per store (two queries each, and a scan of the
board for its gateways), judged by the same rules. Both rounds must raise the same
alerts, checked every run.

Each store on a SQLite HQ database has three registered beacons and one gateway that
reports them over its state (:class:`hq.board.GatewayBoard`); every 10th gateway runs
an old bundle, every 7th reports a beacon unheard, every 13th one on a weak battery.
``--quick``: 100 and 300 stores.
"""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from aislecast.kernel.schema import Beacon, BeaconHealth, GatewayState, encode
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from benchmarks._harness import BenchOptions, Measurement, benchmark
from hq.alerts import Condition
from hq.board import GatewayBoard
from hq.db import HqDb
from hq.fleet_health import FleetRules, store_health
from hq.service import HqService

__all__ = ["bench_fleet", "per_store_round", "seed_fleet"]

_BEACONS = 3
_ROUNDS = 3  # the best of three rounds, each way


def seed_fleet(service: HqService, board: GatewayBoard, n: int) -> None:
    """``n`` stores (bundle v5), three beacons each, one reporting gateway each."""
    db = service.db
    stores = [f"st-{i:05d}" for i in range(n)]
    db.executemany("INSERT INTO stores (id, name, tz, bundle_version) VALUES (?, ?, ?, 5)",
                   [(s, s, "Europe/Berlin") for s in stores])
    db.executemany("INSERT INTO beacons (store, id, body) VALUES (?, ?, ?)",
                   [(s, f"b{j}", encode(Beacon(id=f"b{j}", zone=f"z{j}", uuid="00" * 16)).decode())
                    for s in stores for j in range(_BEACONS)])
    for i, s in enumerate(stores):
        beacons = [BeaconHealth(id=f"b{j}", zone=f"z{j}", last_seen_age_s=2.0, rssi=-60,
                                battery_mv=2400 if (i % 13 == 0 and j == 1) else 2900,
                                alert="unheard" if (i % 7 == 0 and j == 0) else None)
                   for j in range(_BEACONS)]
        state = GatewayState(v=1, gateway="gw-1", store=s, status="online", version="1",
                             bundle_version=4 if i % 10 == 0 else 5, beacons=beacons)
        board.on_state(s, "gw-1", encode(state))


def _fleet_round(rules: FleetRules) -> list[Condition]:
    return list(rules.conditions())


def per_store_round(rules: FleetRules) -> list[Condition]:
    """The reference: the round as it was, the database read store by store."""
    now = rules.clock()
    fleet = [store_health(rules.service, rules.board, s, now=now) for s in sorted(rules.board.stores())]
    return list(rules.judge(fleet, now))


def _best(fn: Callable[[], list[Condition]]) -> tuple[float, list[Condition]]:
    best, got = float("inf"), []
    for _ in range(_ROUNDS):
        t0 = time.perf_counter()
        got = fn()
        best = min(best, (time.perf_counter() - t0) * 1000)
    return best, got


@benchmark("fleet")
async def bench_fleet(opts: BenchOptions) -> list[Measurement]:
    out: list[Measurement] = []
    for n in (100, 300) if opts.quick else (1_000, 10_000):
        with tempfile.TemporaryDirectory(prefix="aislecast-bench-fleet-") as tmp:
            db = HqDb(f"sqlite:///{tmp}/hq.sqlite")
            service = HqService(db, Signer(load_or_create_signing_key(Path(tmp) / "k.pem")))
            board = GatewayBoard()
            seed_fleet(service, board, n)
            rules = FleetRules(service, board, behind_after_s=0.0)
            after_ms, after = _best(functools.partial(_fleet_round, rules))
            before_ms, before = _best(functools.partial(per_store_round, rules))
            db.close()
        assert before == after, "the fleet-wide round must raise the per-store round's alerts"
        assert {c.kind for c in after} == {"gateway_behind", "beacon_unheard", "beacon_low_battery"}
        metric = f"alert round, {n:,} stores"
        extra: dict[str, float | int | str] = {"stores": n, "alerts": len(after), "rounds": _ROUNDS}
        out += [Measurement("fleet", "aislecast", metric, after_ms, "ms", better="lower", extra=extra),
                Measurement("fleet", "per-store", metric, before_ms, "ms", better="lower", extra=extra)]
    return out
