"""The scanner watchdog's decisions, as pure functions of time (no I/O, no clock).

The supervisor feeds it the monotonic time of the last non-empty advert and asks, on
every tick, which recovery stage is due. Stages escalate while silence persists
(restart discovery -> power-cycle adapter -> recreate scanner) and wrap around with a
growing full-jitter backoff, so a dead radio is retried forever but never hammered.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from edge.bluez.const import (
    ATTEMPT_TIMEOUT_S,
    BACKOFF_BASE_S,
    BACKOFF_CAP_S,
    POWER_CYCLE_OFF_S,
    POWER_WAIT_S,
    POWERED_OFF_GRACE_S,
    SILENCE_ESCALATE_S,
    SILENCE_RESTART_S,
    START_ATTEMPTS,
    WATCHDOG_TICK_S,
)

__all__ = ["Stage", "Watchdog", "WatchdogSettings", "full_jitter"]


class Stage(enum.IntEnum):
    """Recovery stages, in escalation order."""

    RESTART = 0  # stop + start discovery on the same BleakScanner
    POWER_CYCLE = 1  # Powered=false, Powered=true over D-Bus, then start
    RECREATE = 2  # new BleakScanner and new adapter D-Bus connection

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class WatchdogSettings:
    """Thresholds; the defaults and their sources are in :mod:`edge.bluez.const`."""

    tick_s: float = WATCHDOG_TICK_S
    silence_restart_s: float = SILENCE_RESTART_S
    silence_escalate_s: float = SILENCE_ESCALATE_S
    powered_off_grace_s: float = POWERED_OFF_GRACE_S
    attempt_timeout_s: float = ATTEMPT_TIMEOUT_S
    power_cycle_off_s: float = POWER_CYCLE_OFF_S
    power_wait_s: float = POWER_WAIT_S
    backoff_base_s: float = BACKOFF_BASE_S
    backoff_cap_s: float = BACKOFF_CAP_S
    start_attempts: int = START_ATTEMPTS


def full_jitter(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Full-jitter backoff: ``uniform(0, min(cap, base * 2**attempt))`` (AWS / aiomqtt)."""
    high = min(cap, base * (2.0 ** min(attempt, 30)))
    return (rng or random).uniform(0.0, high)


class Watchdog:
    """Which stage is due after how much silence; call :meth:`reset` when adverts flow."""

    def __init__(
        self, settings: WatchdogSettings, now: float, rng: random.Random | None = None
    ) -> None:
        self._s = settings
        self._rng = rng
        self._next: Stage = Stage.RESTART
        self._cycles = 0  # full ladders done without adverts coming back
        self._since = now  # silence is measured from max(last advert, last action)
        self._extra = 0.0  # backoff added after a whole ladder failed

    @property
    def next_stage(self) -> Stage:
        return self._next

    def reset(self, now: float) -> None:
        """Adverts are flowing (or scanning just (re)started cleanly): back to stage one."""
        self._next = Stage.RESTART
        self._cycles = 0
        self._extra = 0.0
        self._since = now

    def acted(self, now: float) -> None:
        """A recovery step just ran; measure further silence from here."""
        self._since = now

    def due(self, now: float, last_advert: float | None) -> Stage | None:
        """The stage to run now, or None; advances the ladder when it returns one."""
        if last_advert is not None and last_advert > self._since:
            # adverts flowed since the last action: the ladder starts over from there
            self.reset(last_advert)
        since = self._since
        first = self._next is Stage.RESTART and self._cycles == 0
        limit = (self._s.silence_restart_s if first else self._s.silence_escalate_s) + self._extra
        if now - since < limit:
            return None
        stage = self._next
        if stage is Stage.RECREATE:
            self._next = Stage.RESTART
            self._cycles += 1
            self._extra = full_jitter(
                self._cycles, self._s.backoff_base_s * 4, self._s.backoff_cap_s, self._rng
            )
        else:
            self._next = Stage(stage + 1)
        self._since = now
        return stage
