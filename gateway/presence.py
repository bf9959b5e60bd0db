"""Zone presence from RSSI: enter, dwell and exit per shopper (DESIGN §7).

Each observation is (shopper, anchor zone, RSSI, measured power at 1 m). Per shopper and
zone the RSSI is smoothed by an exponential moving average; distance comes from the
log-distance model ``d = 10 ** ((P1m - rssi) / (10 n))``. The nearest zone whose
estimate is inside its max radius is the candidate; the shopper switches zone only
when the candidate is nearer by the hysteresis margin, and leaves after an absence
timeout. The engine is pure (time is passed in), so tests drive it with any clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from aislecast.const import PRESENCE_ABSENCE_S, PRESENCE_DWELL_S

__all__ = ["PresenceEngine", "PresenceEvent", "PresenceParams"]


@dataclass(frozen=True, slots=True)
class PresenceParams:
    path_loss_exponent: float = 2.5  # indoors 2.0-3.5; 2.5 measured on the simulator
    ema_alpha: float = 0.35  # weight of a new RSSI sample
    hysteresis: float = 0.2  # candidate must be 20 % nearer (peers use 15-30 %)
    absence_s: float = PRESENCE_ABSENCE_S
    dwell_every_s: float = PRESENCE_DWELL_S
    stale_s: float = 3.0  # a zone's estimate older than this no longer competes


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    kind: Literal["enter", "dwell", "exit"]
    shopper: str
    zone: str
    ts: float
    dwell_s: float = 0.0


@dataclass(slots=True)
class _ZoneTrack:
    rssi: float
    last: float


@dataclass(slots=True)
class _Shopper:
    tracks: dict[str, _ZoneTrack] = field(default_factory=dict)
    zone: str | None = None
    since: float = 0.0
    last_seen: float = 0.0
    next_dwell: float = 0.0


class PresenceEngine:
    def __init__(self, max_radius: dict[str, float], params: PresenceParams | None = None) -> None:
        self.params = params or PresenceParams()
        self.max_radius = dict(max_radius)
        self._shoppers: dict[str, _Shopper] = {}
        self.events_emitted = 0

    def distance(self, rssi: float, tx_power_1m: int) -> float:
        return float(10 ** ((tx_power_1m - rssi) / (10 * self.params.path_loss_exponent)))

    def observe(
        self, shopper: str, zone: str, rssi: int, tx_power_1m: int, ts: float
    ) -> list[PresenceEvent]:
        p = self.params
        s = self._shoppers.get(shopper)
        if s is None:
            s = self._shoppers[shopper] = _Shopper()
        tr = s.tracks.get(zone)
        # a track stale for a whole absence restarts from the new sample
        if tr is None or ts - tr.last > p.absence_s:
            tr = s.tracks[zone] = _ZoneTrack(float(rssi), ts)
        else:
            tr.rssi += p.ema_alpha * (rssi - tr.rssi)
            tr.last = ts
        s.last_seen = ts
        best, best_d = None, float("inf")
        for z, t in s.tracks.items():
            if ts - t.last > p.stale_s:
                continue
            d = self.distance(t.rssi, tx_power_1m)
            if d <= self.max_radius.get(z, 0.0) and d < best_d:
                best, best_d = z, d
        out: list[PresenceEvent] = []
        if best is None or best == s.zone:
            return out
        if s.zone is not None:
            cur = s.tracks.get(s.zone)
            if cur is not None and ts - cur.last <= p.stale_s:
                cur_d = self.distance(cur.rssi, tx_power_1m)
                if cur_d <= self.max_radius.get(s.zone, 0.0) and best_d > cur_d * (1 - p.hysteresis):
                    return out
            out.append(PresenceEvent("exit", shopper, s.zone, ts, ts - s.since))
        s.zone, s.since, s.next_dwell = best, ts, ts + p.dwell_every_s
        out.append(PresenceEvent("enter", shopper, best, ts))
        self.events_emitted += len(out)
        return out

    def tick(self, ts: float) -> list[PresenceEvent]:
        """Emit dwell and absence exits due at ``ts``; forget shoppers gone for good."""
        p = self.params
        out: list[PresenceEvent] = []
        gone: list[str] = []
        for key, s in self._shoppers.items():
            if ts - s.last_seen > p.absence_s:
                if s.zone is not None:
                    out.append(PresenceEvent("exit", key, s.zone, ts, s.last_seen - s.since))
                gone.append(key)
            elif s.zone is not None and ts >= s.next_dwell:
                out.append(PresenceEvent("dwell", key, s.zone, ts, ts - s.since))
                s.next_dwell = ts + p.dwell_every_s
        for key in gone:
            del self._shoppers[key]
        self.events_emitted += len(out)
        return out

    def zone_of(self, shopper: str) -> str | None:
        s = self._shoppers.get(shopper)
        return None if s is None else s.zone

    def present(self) -> dict[str, str]:
        """Shopper -> current zone, for everyone in a zone now."""
        return {k: s.zone for k, s in self._shoppers.items() if s.zone is not None}
