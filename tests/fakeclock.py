"""A clock that moves only when a test says so, with timers that fire as it passes them.

Code under test takes its clock as a parameter (``clock: Callable[[], float]``) or is
given ``now`` on every call; a test hands it :meth:`FakeClock.monotonic` or
:meth:`FakeClock.time` and drives time with :meth:`FakeClock.advance`. Periodic work that
production runs from a task (a watchdog tick, the gateway's schedule tick) is put on
:meth:`FakeClock.call_every`, so an hour of ticks runs in milliseconds and in the same
order every time. In the spirit of habluetooth's ``patch_bluetooth_time`` and Home
Assistant's ``async_fire_time_changed``, without patching any module.

Both clocks advance together: ``time() - monotonic()`` is constant, as on a host whose
wall clock is not stepped.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["FakeClock", "Timer"]

# 2026-01-01T00:00:00Z: a wall time far from the epoch, so "time 0" bugs show.
_WALL_START = 1_767_225_600.0
_MONO_START = 1_000.0


@dataclass(order=True, slots=True)
class Timer:
    """A pending call; :meth:`cancel` stops it (and every later period)."""

    when: float
    seq: int
    fn: Callable[[], object] = field(compare=False)
    every: float | None = field(default=None, compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Monotonic and wall clocks in seconds, plus timers on the monotonic one."""

    def __init__(self, *, monotonic: float = _MONO_START, wall: float = _WALL_START) -> None:
        self._mono = monotonic
        self._offset = wall - monotonic
        self._timers: list[Timer] = []
        self._seq = itertools.count()
        self.fired = 0  # timer calls made so far

    def monotonic(self) -> float:
        return self._mono

    def time(self) -> float:
        return self._mono + self._offset

    def call_at(self, when: float, fn: Callable[[], object]) -> Timer:
        """Call ``fn`` when the monotonic clock reaches ``when``."""
        t = Timer(when, next(self._seq), fn)
        heapq.heappush(self._timers, t)
        return t

    def call_later(self, delay: float, fn: Callable[[], object]) -> Timer:
        return self.call_at(self._mono + delay, fn)

    def call_every(self, interval: float, fn: Callable[[], object]) -> Timer:
        """Call ``fn`` every ``interval`` seconds, the first time one interval from now."""
        if interval <= 0:
            raise ValueError(f"call_every: interval must be > 0 seconds, got {interval}")
        t = Timer(self._mono + interval, next(self._seq), fn, every=interval)
        heapq.heappush(self._timers, t)
        return t

    @property
    def pending(self) -> int:
        """Timers not yet fired or cancelled."""
        return sum(not t.cancelled for t in self._timers)

    def fire_pending(self) -> int:
        """Run every timer due at the current time (not later ones); how many ran."""
        return self._run_until(self._mono)

    def advance(self, seconds: float) -> int:
        """Move both clocks forward, running each timer due on the way at its own
        deadline (the clock reads that deadline while it runs); how many ran."""
        if seconds < 0:
            raise ValueError(f"advance: a clock never goes back, got {seconds} s")
        return self._run_until(self._mono + seconds)

    def _run_until(self, end: float) -> int:
        ran = 0
        while self._timers and self._timers[0].when <= end:
            t = heapq.heappop(self._timers)
            if t.cancelled:
                continue
            self._mono = max(self._mono, t.when)
            if t.every is not None:
                t.when += t.every
                t.seq = next(self._seq)
                heapq.heappush(self._timers, t)
            t.fn()
            ran += 1
        self._mono = end
        self.fired += ran
        return ran
