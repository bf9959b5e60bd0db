"""The simulated store: a floor plan, fixed beacons, receivers and walking shoppers.

Shoppers walk from zone to zone (entrance, a few aisles, checkout, out), dwelling in each.
Their phones advertise the rotating token as an Eddystone-EID frame; fixed beacons
advertise iBeacon frames. Each receiver (a gateway antenna) hears a frame with an RSSI
from the log-distance path-loss model plus Gaussian noise, and misses some frames
(dropouts), exactly as :class:`~edge.advert.Advertisement` objects with real bytes.
Everything is driven by the time passed in, so tests and the simulator share one model.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from edge.advert import Advertisement
from edge.frames import encode_eddystone_eid, encode_eddystone_tlm, encode_ibeacon

__all__ = ["SimBeacon", "SimShopper", "SimStore", "SimZone", "default_zones", "rssi_at"]

STORE_UUID = "e2c56db5-dffb-48d2-b060-d0f5a71096e0"


@dataclass(frozen=True, slots=True)
class SimZone:
    id: str
    x: float
    y: float
    radius_m: float = 4.0


@dataclass(frozen=True, slots=True)
class SimBeacon:
    id: str
    zone: str
    x: float
    y: float
    major: int
    minor: int
    tx_power_1m: int = -59
    interval_s: float = 0.35
    # set: every 4th frame is an Eddystone TLM from the same address with this battery
    battery_mv: int | None = None


def default_zones() -> list[SimZone]:
    """Six zones on a 10 m grid: a small supermarket."""
    return [
        SimZone("entrance", 0, 0),
        SimZone("produce", 10, 0),
        SimZone("bakery", 20, 0),
        SimZone("dairy", 20, 10),
        SimZone("drinks", 10, 10),
        SimZone("checkout", 0, 10),
    ]


def rssi_at(distance_m: float, tx_power_1m: int, n: float) -> float:
    return tx_power_1m - 10 * n * math.log10(max(distance_m, 0.1))


@dataclass(slots=True)
class SimShopper:
    """A shopper and their phone. ``path`` is [(zone id, dwell seconds)], walked in order."""

    name: str
    token_for: Callable[[float], bytes]  # unix time -> 8-byte token on air
    path: list[tuple[str, float]]
    start: float = 0.0  # monotonic seconds when the walk starts
    speed_mps: float = 1.2
    adv_interval_s: float = 0.2
    tx_power_1m: int = -59
    address: str = ""
    _legs: list[tuple[float, float, float, float, float, str | None]] = field(default_factory=list)
    _next_adv: float = 0.0

    def plan(self, zones: dict[str, SimZone]) -> None:
        """Precompute legs (t0, t1, x0, y0 -> position) from the path and walking speed."""
        self._legs = []
        t = self.start
        prev: SimZone | None = None
        for zid, dwell in self.path:
            z = zones[zid]
            if prev is not None:
                walk = math.dist((prev.x, prev.y), (z.x, z.y)) / self.speed_mps
                self._legs.append((t, t + walk, prev.x, prev.y, 0.0, None))
                t += walk
            self._legs.append((t, t + dwell, z.x, z.y, 0.0, zid))
            t += dwell
            prev = z
        self._next_adv = self.start

    @property
    def end(self) -> float:
        return self._legs[-1][1] if self._legs else self.start

    def true_zone(self, t: float) -> str | None:
        for t0, t1, _, _, _, zid in self._legs:
            if t0 <= t < t1:
                return zid
        return None

    def position(self, t: float, zones: dict[str, SimZone]) -> tuple[float, float] | None:
        for i, (t0, t1, x0, y0, _, zid) in enumerate(self._legs):
            if not t0 <= t < t1:
                continue
            if zid is not None:
                return x0, y0
            nxt = self._legs[i + 1] if i + 1 < len(self._legs) else None
            if nxt is None:
                return x0, y0
            f = (t - t0) / (t1 - t0) if t1 > t0 else 1.0
            return x0 + f * (nxt[2] - x0), y0 + f * (nxt[3] - y0)
        return None


class SimStore:
    """Produces the adverts every receiver hears between two calls of :meth:`step`."""

    def __init__(
        self,
        zones: list[SimZone],
        *,
        receivers: dict[str, str] | None = None,
        beacons: list[SimBeacon] | None = None,
        path_loss_exponent: float = 2.5,
        noise_db: float = 4.0,
        dropout: float = 0.15,
        seed: int = 1,
    ) -> None:
        self.zones = {z.id: z for z in zones}
        # receiver name -> zone it sits in (at the zone's centre)
        self.receivers = receivers or {f"sim-{z.id}": z.id for z in zones}
        self.beacons = beacons if beacons is not None else [
            SimBeacon(f"b-{z.id}", z.id, z.x, z.y, major=1, minor=i + 1) for i, z in enumerate(zones)
        ]
        self.n = path_loss_exponent
        self.noise_db = noise_db
        self.dropout = dropout
        self.rng = random.Random(seed)
        self.shoppers: list[SimShopper] = []
        self._beacon_next = [0.0] * len(self.beacons)
        self._beacon_sent = [0] * len(self.beacons)
        self._beacon_frames = [encode_ibeacon(STORE_UUID, b.major, b.minor, b.tx_power_1m)
                               for b in self.beacons]
        self.adverts_emitted = 0

    def add_shopper(self, shopper: SimShopper) -> None:
        if not shopper.address:
            shopper.address = "5A:" + ":".join(f"{self.rng.randrange(256):02X}" for _ in range(5))
        shopper.plan(self.zones)
        self.shoppers.append(shopper)

    def _hear(self, x: float, y: float, tx: int, now: float, *, address: str,
              mfr: dict[int, bytes], svc: dict[str, bytes], out: list[Advertisement]) -> None:
        for rx, zid in self.receivers.items():
            if self.rng.random() < self.dropout:
                continue
            z = self.zones[zid]
            d = math.hypot(x - z.x, y - z.y) + 0.5  # receivers sit ~0.5 m off the path
            rssi = rssi_at(d, tx, self.n) + self.rng.gauss(0, self.noise_db)
            if rssi < -100:  # below a typical receiver's sensitivity
                continue
            out.append(Advertisement(address, round(rssi), now, rx, manufacturer_data=mfr,
                                     service_data=svc))

    def step(self, now: float, unix_now: float) -> list[Advertisement]:
        out: list[Advertisement] = []
        for i, b in enumerate(self.beacons):
            if now < self._beacon_next[i]:
                continue
            self._beacon_next[i] = now + b.interval_s
            cid, data = self._beacon_frames[i]
            mfr = {cid: data}
            addr = f"C0:FF:EE:00:{b.major:02X}:{b.minor:02X}"
            self._beacon_sent[i] += 1
            if b.battery_mv is not None and self._beacon_sent[i] % 4 == 0:
                tu, tlm = encode_eddystone_tlm(b.battery_mv, 21.0, self._beacon_sent[i] % 2**32, 0.0)
                self._hear(b.x, b.y, b.tx_power_1m, now, address=addr, mfr={}, svc={tu: tlm},
                           out=out)
                continue
            self._hear(b.x, b.y, b.tx_power_1m, now, address=addr, mfr=mfr, svc={}, out=out)
        for s in self.shoppers:
            if now < s._next_adv:
                continue
            s._next_adv = now + s.adv_interval_s
            pos = s.position(now, self.zones)
            if pos is None:
                continue
            uuid, data = encode_eddystone_eid(s.token_for(unix_now), s.tx_power_1m)
            svc = {uuid: data}
            self._hear(pos[0], pos[1], s.tx_power_1m, now, address=s.address, mfr={}, svc=svc,
                       out=out)
        self.shoppers = [s for s in self.shoppers if s.end > now]
        self.adverts_emitted += len(out)
        return out
