"""Hot-path benchmark (issue 4.6): CPU share of one core at 7,500 adverts/s.

A synthetic minute of what a busy store gateway hears, at 7,500 adverts/s over four
receivers, fed to the same objects :class:`gateway.app.Gateway` builds and calls from
``on_advert``: :class:`~gateway.adverts.AdvertRouter` (prefilter, decode, the token
memo in front of :class:`~gateway.identity.IdentityResolver`, fleet stamps) and
:class:`~gateway.presence.PresenceEngine` (smoothing, zone choice, hysteresis), plus
the engine's 0.5 s tick. Decisions and the outbox are not on this path (they run per
presence event, a few per shopper per minute; ``bench_decide`` measures them).

The mix (shares of adverts): planned fixed iBeacons 35 % and Eddystone-UID 5 %
(identical bytes every time, in fresh ``bytes`` objects as the scanner makes them),
their TLM 5 % (counters move), shopper EID tokens 15 % (45 phones, 5 of them not opted
in; every token rotates 8 times over the run, so the memo misses at each rotation),
Apple non-beacon adverts 25 % (habluetooth's field share), other vendors 15 %.

CPU is ``time.process_time()`` over the feeding loop; the share is CPU seconds per
second of stream (the goal: under 3 % of a core). The stream is built before timing.
"""

from __future__ import annotations

import random
import statistics
import time

from aislecast.kernel.schema import Beacon, TokenTable
from benchmarks._harness import BenchOptions, Measurement, benchmark
from edge.advert import Advertisement
from edge.frames import (
    APPLE_COMPANY_ID,
    encode_eddystone_eid,
    encode_eddystone_tlm,
    encode_eddystone_uid,
    encode_ibeacon,
)
from gateway.adverts import AdvertRouter
from gateway.fleet import FleetHealth
from gateway.identity import IdentityResolver
from gateway.parts import GatewayCounters
from gateway.presence import PresenceEngine, PresenceEvent

__all__ = ["bench_hotpath", "hotpath_stream"]

RATE = 7_500  # adverts/s (issue 4.6)
_SEED = 44
_K = 9
_UUID = "f7826da6-4fa2-4e98-8024-bc5b71e0893e"
_NS = "a1b2c3d4e5f6a7b8c9d0"
_ZONES = ("entrance", "produce", "dairy", "checkout")
_RECEIVERS = {f"hci{i}": z for i, z in enumerate(_ZONES)}
_FIXED, _UID, _TLM, _EID, _APPLE = 0.35, 0.05, 0.05, 0.15, 0.25  # the rest: other vendors


def _copy(b: bytes) -> bytes:
    return bytes(bytearray(b))  # a fresh object with the same bytes, as the scanner makes


def hotpath_stream(seconds: float, seed: int = _SEED) -> tuple[
        list[Advertisement], list[Beacon], list[TokenTable]]:
    """``seconds`` of adverts at :data:`RATE`, the planned beacons and the token tables."""
    rng = random.Random(seed)
    beacons = [Beacon(id=f"ib-{m}", zone=_ZONES[m % 4], uuid=_UUID, major=1, minor=m) for m in range(60)]
    beacons += [Beacon(id=f"uid-{k}", zone=_ZONES[k % 4], namespace=_NS, instance=f"{k:012x}")
                for k in range(20)]
    ib = [encode_ibeacon(_UUID, 1, m, -59)[1] for m in range(60)]
    uid = [encode_eddystone_uid(_NS, f"{k:012x}", -20) for k in range(20)]
    epoch0 = int(time.time()) >> _K
    n = int(seconds * RATE)
    phones = [rng.randbytes(8) for _ in range(45)]
    home = [rng.randrange(4) for _ in phones]
    tables = [TokenTable(epoch0 + e, {bytes(a ^ r for a in p).hex(): f"inbox-{i}"
                                      for i, p in enumerate(phones[:40]) for r in range(8)})
              for e in (-1, 0, 1)]
    out: list[Advertisement] = []
    for i in range(n):
        ts = i / RATE
        rx = rng.randrange(4)
        pick = rng.random()
        if pick < _FIXED:
            m = rng.randrange(60)
            adv = Advertisement(f"C0:00:00:00:00:{m:02X}", rng.randint(-90, -50), ts, f"hci{rx}",
                                manufacturer_data={APPLE_COMPANY_ID: _copy(ib[m])})
        elif pick < _FIXED + _UID + _TLM:
            k = rng.randrange(20)
            svc, data = uid[k] if pick < _FIXED + _UID else encode_eddystone_tlm(
                3000 - 10 * k, 21.5, 1000 * k + i, (100 * k + i) / 10)
            adv = Advertisement(f"D0:00:00:00:00:{k:02X}", rng.randint(-90, -50), ts, f"hci{rx}",
                                service_data={svc: _copy(data)})
        elif pick < _FIXED + _UID + _TLM + _EID:
            p = rng.randrange(len(phones))
            token = bytes(a ^ (i * 8 // max(n, 1)) for a in phones[p])
            svc, data = encode_eddystone_eid(token, -30)
            rssi = round(rng.gauss(-55 if home[p] == rx else -80, 5))
            adv = Advertisement(f"5A:00:00:00:00:{p:02X}", rssi, ts, f"hci{rx}", service_data={svc: data})
        elif pick < _FIXED + _UID + _TLM + _EID + _APPLE:
            body = bytes((rng.choice((0x10, 0x0C, 0x07, 0x12)), 5)) + rng.randbytes(rng.choice((5, 7, 14)))
            adv = Advertisement(f"7A:00:00:00:{i % 256:02X}:01", rng.randint(-95, -60), ts, f"hci{rx}",
                                manufacturer_data={APPLE_COMPANY_ID: body})
        else:
            company = rng.choice((0x0006, 0x0075, 0x00E0, 0x0157))
            adv = Advertisement(f"6B:00:00:00:{i % 256:02X}:02", rng.randint(-95, -60), ts, f"hci{rx}",
                                manufacturer_data={company: rng.randbytes(rng.randint(4, 22))})
        out.append(adv)
    return out, beacons, tables


def _pass(stream: list[Advertisement], beacons: list[Beacon],
          tables: list[TokenTable]) -> tuple[float, int, GatewayCounters]:
    """One timed pass on fresh objects; (CPU seconds, presence events, counters)."""
    identity = IdentityResolver()
    identity.load(_K, tables, [])
    fleet = FleetHealth()
    fleet.plan(beacons, 0.0)
    engine = PresenceEngine(dict.fromkeys(_ZONES, 4.0))
    events: list[PresenceEvent] = []

    def observe(inbox: str, zone: str, rssi: int, tx: int, ts: float) -> None:
        events.extend(engine.observe(inbox, zone, rssi, tx, ts))  # Gateway._observe's work

    counters = GatewayCounters()
    route = AdvertRouter(identity=identity, fleet=fleet, receivers=dict(_RECEIVERS),
                         receiver_tx_power_1m=-59, counters=counters, observe=observe)
    chunk = RATE // 2  # the ticker runs every 0.5 s
    t0 = time.process_time()
    for start in range(0, len(stream), chunk):
        for adv in stream[start:start + chunk]:
            route(adv)
        events.extend(engine.tick(stream[min(start + chunk, len(stream)) - 1].ts))
    return time.process_time() - t0, len(events), counters


@benchmark("hotpath")
async def bench_hotpath(opts: BenchOptions) -> list[Measurement]:
    seconds, reps = (4.0, 1) if opts.quick else (60.0, 3)
    stream, beacons, tables = hotpath_stream(seconds)
    runs = [_pass(stream, beacons, tables) for _ in range(reps)]
    cpu = statistics.median(r[0] for r in runs)
    _, n_events, c = runs[0]
    share = 100.0 * cpu / seconds
    return [
        Measurement("hotpath", "aislecast", "cpu_share_at_7500_per_s", round(share, 3),
                    "% of a core", better="lower",
                    extra={"stream_s": seconds, "adverts": len(stream),
                           "us_per_advert": round(1e6 * cpu / len(stream), 3),
                           "decoded": c.adverts_decoded, "ignored": c.adverts_ignored,
                           "tokens_unknown": c.tokens_unknown, "presence_events": n_events,
                           "goal_pct": 3.0}),
    ]
