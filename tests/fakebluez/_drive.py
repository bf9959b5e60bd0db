"""Run a :class:`~edge.bluez.BlueZScanner` on a :class:`~tests.fakeclock.FakeClock`.

The scanner reads its clock for every watchdog decision (silence, the powered-off grace,
a retry's due time), so a fault test gives it ``clock.monotonic`` and moves time itself:
:func:`drive` advances the clock one ``step`` at a time and, before the next step, waits
until the supervisor has completed a pass that started after the advance (its
``supervisor_ticks`` counter). Each step is thus fully processed at its own instant, and
scanner time passes the same way on an idle or a loaded machine; only D-Bus work (and
the bound on one step) takes real time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from edge.bluez import BlueZScanner
from tests.fakeclock import FakeClock

__all__ = ["LIVENESS_S", "drive", "settle"]

# Real seconds one supervisor pass may take before the test gives up: a liveness bound
# for a loaded machine, never a latency goal (latency is measured in scanner time).
LIVENESS_S = 30.0


def _ticks(scanner: BlueZScanner) -> int:
    value = scanner.stats()["supervisor_ticks"]
    assert isinstance(value, int)
    return value


async def settle(scanner: BlueZScanner) -> None:
    """Wait until the supervisor has completed a pass begun after this call (two
    completions: the pass in progress, if any, read the time before the call)."""
    start = _ticks(scanner)
    async with asyncio.timeout(LIVENESS_S):
        while _ticks(scanner) < start + 2:
            await asyncio.sleep(0.005)


async def drive(scanner: BlueZScanner, clock: FakeClock, done: Callable[[], object], *,
                within_s: float, step_s: float = 0.25) -> float:
    """Advance scanner time in ``step_s`` steps until ``done()``; the scanner time that
    took. AssertionError if ``within_s`` of scanner time pass first."""
    start = clock.monotonic()
    while True:
        await settle(scanner)
        if done():
            return clock.monotonic() - start
        if clock.monotonic() - start >= within_s:
            raise AssertionError(f"not done within {within_s} s of scanner time; {scanner.stats()}")
        clock.advance(step_s)
