"""Zone presence from RSSI: enter, dwell and exit per shopper (docs/architecture.md#presence).

Each observation is (shopper, anchor zone, RSSI, measured power at 1 m, monotonic ts).
Per shopper and zone the path loss ``tx_power_1m - rssi`` is smoothed
(:mod:`gateway.smoothing`); the log-distance model ``d = 10 ** (loss / (10 n))`` turns
it into metres. Every comparison is made on the smoothed loss in dB, against
thresholds precomputed from the zone radii and the hysteresis, so the hot path does no
logarithms: ``d <= R`` is ``loss <= 10 n log10 R`` and "nearer by the hysteresis h" is
``loss_new < loss_cur + 10 n log10(1 - h)``.

The nearest zone within its max radius is the candidate; whoever holds the shopper
(this gateway in a zone, or a peer gateway that claimed it) keeps them unless the
candidate is nearer by the hysteresis margin. A shopper with no in-radius evidence for
``absence_s`` exits. Peer gateways' summaries (:mod:`gateway.pooling`) compete as
candidates, so the nearest evidence in the store wins and two gateways settle on one
owner (see :meth:`PresenceEngine.observe_peer`).

Bad input is counted in :attr:`PresenceEngine.dropped` and dropped: absurd RSSI,
unknown zones, non-finite times. When the clock goes backwards by more than
``clock_slack_s`` all state is shifted onto the new clock (counted as ``clock_back``);
a gap longer than the absence timeout first closes the old visit. The engine is pure
(time is passed in), so tests drive it with any clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from aislecast.kernel.const import PRESENCE_ABSENCE_S, PRESENCE_DWELL_S
from gateway.smoothing import Smoother, SmootherKind, make_smoother

__all__ = ["RSSI_MAX", "RSSI_MIN", "PresenceEngine", "PresenceEvent", "PresenceParams", "Summary"]

# Outside this an RSSI is a driver glitch: receivers bottom out near -105 dBm and a
# phone pressed on the antenna reads about -20 dBm; +10 leaves room for odd chipsets.
RSSI_MIN = -110
RSSI_MAX = 10
_INF = math.inf


@dataclass(frozen=True, slots=True)
class PresenceParams:
    # Defaults measured by benchmarks/tune_presence.py (18 shopper-hours per grid point,
    # noise 4/5/6 dB with 10/15/20 % dropouts). Every setting scores 100 % zone accuracy
    # there, so flips decide. Grid: Kalman q=4 r=36 0 flips/h, q=16 r=16 4.0/h; 1-Euro
    # fc=0.3 1.4/h, fc=1 23/h, beta=0.05 29-54/h. Final check of these defaults on 45
    # fresh shopper-hours: accuracy 100 % (99.99 % without the grace), 0.044 flips/h.
    path_loss_exponent: float = 2.5  # 2.0 and 2.5: 0 flips/h; 3.0: 0.17/h (radii grow in dB)
    smoother: SmootherKind = "kalman"  # 1-Euro ties only as a plain low-pass (fc=0.1, beta=0)
    kalman_q: float = 4.0  # dB^2/s; q=1 also 0 flips/h but lags a walking shopper twice as long
    kalman_r: float = 36.0  # dB^2: one sample's noise, (6 dB)^2, the worst the simulator uses
    euro_min_cutoff: float = 0.3  # Hz, 1-Euro smoothing at rest (if smoother = "one_euro")
    euro_beta: float = 0.05  # 1-Euro speed coefficient, per dB/s
    hysteresis: float = 0.2  # candidate must be 20 % nearer (peers use 15-30 %)
    absence_s: float = PRESENCE_ABSENCE_S  # no in-radius evidence this long -> exit
    dwell_every_s: float = PRESENCE_DWELL_S
    stale_s: float = 3.0  # a zone's estimate older than this no longer competes
    peer_stale_s: float = 3.0  # a peer's summary older than this no longer competes
    clock_slack_s: float = 2.0  # samples this much older than the clock mean a clock jump


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    kind: Literal["enter", "dwell", "exit"]
    shopper: str
    zone: str
    ts: float
    dwell_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Summary:
    """This gateway's best evidence for one shopper, for its peers (gateway.pooling)."""

    shopper: str
    zone: str
    distance_m: float
    claimed: bool
    age_s: float


class _Track:
    __slots__ = ("f", "last")

    def __init__(self, f: Smoother, last: float) -> None:
        self.f = f
        self.last = last


class _Peer:
    __slots__ = ("claimed", "loss", "ts", "zone")

    def __init__(self, zone: str, loss: float, ts: float, claimed: bool) -> None:
        self.zone, self.loss, self.ts, self.claimed = zone, loss, ts, claimed


def _published(distance_m: float) -> float:
    """Distances travel rounded to the centimetre; both sides compare these exact values."""
    return max(round(distance_m, 2), 0.01)


class _Shopper:
    __slots__ = ("heard", "last_in", "next_dwell", "peers", "pub_dist", "since", "tracks", "zone")

    def __init__(self, ts: float) -> None:
        self.tracks: dict[str, _Track] = {}
        self.peers: dict[str, _Peer] = {}
        self.zone: str | None = None  # the zone this gateway claims the shopper in
        self.since = ts
        self.last_in = ts  # last local in-radius evidence
        self.heard = ts  # last sample of any kind, local or peer
        self.next_dwell = ts
        self.pub_dist = _INF  # distance this gateway last published for the shopper


class PresenceEngine:
    def __init__(self, max_radius: dict[str, float], params: PresenceParams | None = None,
                 *, gateway: str = "") -> None:
        self.params = params or PresenceParams()
        self.gateway = gateway  # tie-break between peers claiming one shopper
        self._shoppers: dict[str, _Shopper] = {}
        self._clock = -_INF
        self._max_loss: dict[str, float] = {}
        self._radius: dict[str, float] = {}
        self.max_radius = max_radius
        p = self.params
        self._ten_n = 10.0 * p.path_loss_exponent
        self._hyst_db = -self._ten_n * math.log10(1.0 - p.hysteresis)
        self.events_emitted = 0
        self.dropped: dict[str, int] = {}

    # ---- configuration ------------------------------------------------------------------
    @property
    def max_radius(self) -> dict[str, float]:
        return self._radius

    @max_radius.setter
    def max_radius(self, radii: dict[str, float]) -> None:
        n10 = 10.0 * self.params.path_loss_exponent
        self._radius = dict(radii)
        self._max_loss = {z: n10 * math.log10(r) for z, r in radii.items() if r > 0}

    def distance(self, rssi: float, tx_power_1m: int) -> float:
        return float(10 ** ((tx_power_1m - rssi) / self._ten_n))

    def _drop(self, why: str) -> list[PresenceEvent]:
        self.dropped[why] = self.dropped.get(why, 0) + 1
        return []

    # ---- time ---------------------------------------------------------------------------
    def _now(self, ts: float) -> float | None:
        """Advance the engine clock; shift all state when the clock went backwards."""
        if not math.isfinite(ts):
            return None
        clock = self._clock
        if ts >= clock:
            self._clock = ts
            return ts
        if clock - ts <= self.params.clock_slack_s:
            return clock  # slightly out of order (two receivers, a queued sighting)
        self._drop("clock_back")
        shift = ts - clock
        for s in self._shoppers.values():
            s.since += shift
            s.last_in += shift
            s.heard += shift
            s.next_dwell += shift
            for tr in s.tracks.values():
                tr.last += shift
                tr.f.t += shift
            for peer in s.peers.values():
                peer.ts += shift
        self._clock = ts
        return ts

    def _shopper(self, shopper: str, ts: float, out: list[PresenceEvent]) -> _Shopper:
        s = self._shoppers.get(shopper)
        if s is None:
            s = self._shoppers[shopper] = _Shopper(ts)
        elif s.zone is not None and ts - s.last_in > self.params.absence_s:
            # a gap longer than the absence (the ticker did not run): close the old visit
            self._drop("gap")
            out.append(PresenceEvent("exit", shopper, s.zone, ts, s.last_in - s.since))
            s.zone = None
        return s

    # ---- observations -------------------------------------------------------------------
    def observe(
        self, shopper: str, zone: str, rssi: int, tx_power_1m: int, ts: float
    ) -> list[PresenceEvent]:
        """One local sample (a gateway receiver or a phone's sighting of a fixed beacon)."""
        if not RSSI_MIN <= rssi <= RSSI_MAX:
            return self._drop("rssi")
        if zone not in self._max_loss:
            return self._drop("zone")
        now = self._now(ts)
        if now is None:
            return self._drop("ts")
        p = self.params
        out: list[PresenceEvent] = []
        s = self._shopper(shopper, now, out)
        s.heard = now
        loss = float(tx_power_1m - rssi)
        tr = s.tracks.get(zone)
        # a track silent for a whole absence restarts from the new sample
        if tr is None or now - tr.last > p.absence_s:
            s.tracks[zone] = _Track(make_smoother(
                p.smoother, loss, now, kalman_q=p.kalman_q, kalman_r=p.kalman_r,
                euro_min_cutoff=p.euro_min_cutoff, euro_beta=p.euro_beta), now)
        else:
            tr.f.update(loss, now)
            tr.last = now
        self._decide(shopper, s, now, out)
        self.events_emitted += len(out)
        return out

    def observe_peer(self, peer: str, shopper: str, zone: str, distance_m: float, *,
                     claimed: bool, ts: float, age_s: float = 0.0) -> list[PresenceEvent]:
        """A peer gateway's summary, received at ``ts``: its best zone for ``shopper``,
        the distance there, and the evidence's age when the peer published it.

        Two gateways can both claim a shopper only from crossed, out-of-date summaries.
        Each resolves it from the two *published* claims, which both of them see, so
        exactly one yields: the farther one, or on a tie the larger gateway id.
        """
        if peer == self.gateway:
            return []
        if zone not in self._max_loss:
            return self._drop("peer_zone")
        if not 0.0 < distance_m < 1e4:
            return self._drop("peer_distance")
        now = self._now(ts)
        if now is None:
            return self._drop("ts")
        out: list[PresenceEvent] = []
        s = self._shopper(shopper, now, out)
        loss = self._ten_n * math.log10(distance_m)
        seen = now - max(age_s, 0.0)
        s.peers[peer] = _Peer(zone, loss, seen, claimed)
        s.heard = max(s.heard, seen)
        mine = (s.pub_dist, self.gateway)
        if claimed and s.zone is not None and (_published(distance_m), peer) < mine:
            out.append(PresenceEvent("exit", shopper, s.zone, now, now - s.since))
            s.zone = None
        self._decide(shopper, s, now, out)
        self.events_emitted += len(out)
        return out

    def _decide(self, shopper: str, s: _Shopper, ts: float, out: list[PresenceEvent]) -> None:
        p = self.params
        max_loss = self._max_loss
        best: str | None = None
        best_loss = _INF
        for z, t in s.tracks.items():
            if ts - t.last > p.stale_s:
                continue
            loss = t.f.value
            if loss < best_loss and loss <= max_loss.get(z, -_INF):
                best, best_loss = z, loss
        if best is not None:
            s.last_in = ts
        best_peer: str | None = None
        cur_loss = _INF  # the holder's evidence: ours if we claim, else a claiming peer's
        held_by: str | None = None
        for gw, pr in s.peers.items():
            if ts - pr.ts > p.peer_stale_s or pr.loss > max_loss.get(pr.zone, -_INF):
                continue
            if pr.loss < best_loss:
                best, best_loss, best_peer = pr.zone, pr.loss, gw
            if pr.claimed and s.zone is None and pr.loss < cur_loss:
                cur_loss, held_by = pr.loss, gw
        if best is None:
            return
        if s.zone is not None:
            cur = s.tracks.get(s.zone)
            if cur is not None and ts - cur.last <= p.stale_s:
                v = cur.f.value
                if v <= max_loss.get(s.zone, -_INF):
                    cur_loss = v
            if best_peer is None and best == s.zone:
                return
        elif best_peer is not None and best_peer == held_by:
            return
        if best_loss > cur_loss - self._hyst_db:
            return  # the holder keeps the shopper (hysteresis)
        if s.zone is not None:
            out.append(PresenceEvent("exit", shopper, s.zone, ts, ts - s.since))
            s.zone = None
        if best_peer is None:
            s.zone, s.since, s.next_dwell = best, ts, ts + p.dwell_every_s
            out.append(PresenceEvent("enter", shopper, best, ts))

    # ---- periodic -----------------------------------------------------------------------
    def tick(self, ts: float) -> list[PresenceEvent]:
        """Emit dwell and absence exits due at ``ts``; forget shoppers gone for good."""
        now = self._now(ts)
        if now is None:
            return self._drop("ts")
        p = self.params
        out: list[PresenceEvent] = []
        gone: list[str] = []
        for key, s in self._shoppers.items():
            if s.zone is not None:
                if now - s.last_in > p.absence_s:
                    out.append(PresenceEvent("exit", key, s.zone, now, s.last_in - s.since))
                    s.zone = None
                elif now >= s.next_dwell:
                    out.append(PresenceEvent("dwell", key, s.zone, now, now - s.since))
                    s.next_dwell = now + p.dwell_every_s
            if s.zone is None and now - s.heard > p.absence_s:
                gone.append(key)
        for key in gone:
            del self._shoppers[key]
        self.events_emitted += len(out)
        return out

    def summaries(self, ts: float) -> list[Summary]:
        """This gateway's fresh local evidence per shopper, for the peers; remembers it."""
        p = self.params
        out: list[Summary] = []
        for key, s in self._shoppers.items():
            best, best_loss, age = None, _INF, 0.0
            for z, t in s.tracks.items():
                a = ts - t.last
                if a > p.stale_s:
                    continue
                v = t.f.value
                if z == s.zone or (v < best_loss and best != s.zone):
                    best, best_loss, age = z, v, a
            if best is None or best_loss > self._max_loss.get(best, -_INF):
                continue
            s.pub_dist = _published(10 ** (best_loss / self._ten_n))
            out.append(Summary(key, best, s.pub_dist, s.zone is not None, max(age, 0.0)))
        return out

    # ---- queries ------------------------------------------------------------------------
    def zone_of(self, shopper: str) -> str | None:
        s = self._shoppers.get(shopper)
        return None if s is None else s.zone

    def present(self) -> dict[str, str]:
        """Shopper -> current zone, for everyone this gateway places in a zone now."""
        return {k: s.zone for k, s in self._shoppers.items() if s.zone is not None}

    def __len__(self) -> int:
        return len(self._shoppers)

    def forget(self, shopper: str) -> None:
        """An erased shopper: their tracks are dropped without an exit event."""
        self._shoppers.pop(shopper, None)
