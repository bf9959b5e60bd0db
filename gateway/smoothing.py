"""RSSI smoothers for presence (docs/architecture.md#presence): a 1-D Kalman filter and the 1-Euro filter.

Both take irregular samples (BLE adverts arrive at jittered intervals and some are
lost), so each update is given its timestamp and scales with the time since the last
one. They smooth whatever scalar they are fed; the presence engine feeds path loss in
dB (``tx_power_1m - rssi``), which has the same noise as the RSSI itself.

- :class:`Kalman1D`: a random-walk state (the shopper moves, so the true loss drifts
  by ``q`` dB² per second) observed with noise ``r`` dB². Its gain adapts to the
  sample rate: after a gap the state is uncertain again and the next sample counts more.
- :class:`OneEuro`: Casiez et al., CHI 2012. A low-pass whose cut-off rises with the
  speed of change: heavy smoothing while a shopper stands still, little lag when they
  walk. ``min_cutoff`` (Hz) sets the smoothing at rest, ``beta`` the speed coefficient.

``benchmarks/tune_presence.py`` compares them on the simulated store; the numbers are
quoted in :class:`gateway.presence.PresenceParams`.
"""

from __future__ import annotations

import math
from typing import Literal, Protocol

__all__ = ["Kalman1D", "OneEuro", "Smoother", "SmootherKind", "make_smoother"]

SmootherKind = Literal["kalman", "one_euro"]

# Samples closer together than this are treated as this far apart: two receivers of
# one gateway can stamp one advert within microseconds, and dt = 0 would divide by 0.
_MIN_DT_S = 1e-3
_TWO_PI = 2.0 * math.pi


class Smoother(Protocol):
    value: float
    t: float  # time of the last sample (the engine shifts it when the clock jumps)

    def update(self, x: float, ts: float) -> float: ...


class Kalman1D:
    """Random-walk Kalman filter on one scalar; ``q`` in units²/s, ``r`` in units²."""

    __slots__ = ("p", "q", "r", "t", "value")

    def __init__(self, x: float, ts: float, q: float, r: float) -> None:
        self.value = x
        self.p = r  # first sample: as uncertain as one measurement
        self.q = q
        self.r = r
        self.t = ts

    def update(self, x: float, ts: float) -> float:
        dt = ts - self.t
        dt = max(dt, _MIN_DT_S)
        self.t = ts
        p = self.p + self.q * dt
        k = p / (p + self.r)
        self.value += k * (x - self.value)
        self.p = (1.0 - k) * p
        return self.value


class OneEuro:
    """The 1-Euro filter; ``min_cutoff`` and ``d_cutoff`` in Hz, ``beta`` in 1/unit."""

    __slots__ = ("beta", "d_cutoff", "dx", "min_cutoff", "t", "value")

    def __init__(self, x: float, ts: float, min_cutoff: float, beta: float,
                 d_cutoff: float = 1.0) -> None:
        self.value = x
        self.dx = 0.0
        self.t = ts
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.d_cutoff = d_cutoff

    def update(self, x: float, ts: float) -> float:
        dt = ts - self.t
        dt = max(dt, _MIN_DT_S)
        self.t = ts
        # alpha = 1 / (1 + tau / dt) with tau = 1 / (2 pi fc)
        ad = 1.0 / (1.0 + 1.0 / (_TWO_PI * self.d_cutoff * dt))
        self.dx += ad * ((x - self.value) / dt - self.dx)
        cutoff = self.min_cutoff + self.beta * abs(self.dx)
        a = 1.0 / (1.0 + 1.0 / (_TWO_PI * cutoff * dt))
        self.value += a * (x - self.value)
        return self.value


def make_smoother(kind: SmootherKind, x: float, ts: float, *, kalman_q: float, kalman_r: float,
                  euro_min_cutoff: float, euro_beta: float) -> Smoother:
    """A fresh smoother of ``kind`` started at sample ``x`` taken at ``ts``."""
    if kind == "kalman":
        return Kalman1D(x, ts, kalman_q, kalman_r)
    return OneEuro(x, ts, euro_min_cutoff, euro_beta)
