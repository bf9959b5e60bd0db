"""The scanner watchdog's ladder (edge/bluez/watchdog.py) on a fake clock: instant and
deterministic. The supervisor's tick loop is replayed with :class:`FakeClock` timers
(the real one, against a fake BlueZ, is in test_bluez_faults.py)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from edge.bluez import WatchdogSettings
from edge.bluez.watchdog import Stage, Watchdog, full_jitter
from tests.fakeclock import FakeClock


def test_watchdog_ladder_step_by_step() -> None:
    """Pure decisions: silence escalates, adverts reset, a full ladder backs off."""
    s = WatchdogSettings()
    wd = Watchdog(s, now=0.0, rng=random.Random(1))
    assert wd.due(3.9, None) is None
    assert wd.due(4.0, None) is Stage.RESTART
    assert wd.due(7.9, None) is None
    assert wd.due(8.0, None) is Stage.POWER_CYCLE
    assert wd.due(9.5, 9.0) is None  # adverts came back: ladder starts over
    assert wd.due(13.0, 9.0) is Stage.RESTART
    assert wd.due(17.0, 9.0) is Stage.POWER_CYCLE
    assert wd.due(21.0, 9.0) is Stage.RECREATE
    assert wd.next_stage is Stage.RESTART
    assert wd.due(25.0 + s.backoff_cap_s, 9.0) is Stage.RESTART


@dataclass
class _Supervisor:
    """What BlueZScanner._supervise does with the watchdog, minus the radio: a tick every
    ``tick_s``; a due stage "runs" (instantly) and the watchdog is told it acted."""

    clock: FakeClock
    wd: Watchdog
    last_advert: float | None = None
    ticks: int = 0
    ran: list[tuple[float, Stage]] = field(default_factory=list)

    def tick(self) -> None:
        self.ticks += 1
        now = self.clock.monotonic()
        stage = self.wd.due(now, self.last_advert)
        if stage is not None:
            self.ran.append((now, stage))
            self.wd.acted(now)

    def advert(self) -> None:
        self.last_advert = self.clock.monotonic()


def _supervised(settings: WatchdogSettings, seed: int = 7) -> tuple[FakeClock, _Supervisor]:
    clock = FakeClock()
    sup = _Supervisor(clock, Watchdog(settings, clock.monotonic(), rng=random.Random(seed)))
    clock.call_every(settings.tick_s, sup.tick)
    return clock, sup


def test_adverts_flowing_never_trigger_a_recovery() -> None:
    s = WatchdogSettings()
    clock, sup = _supervised(s)
    clock.call_every(0.25, sup.advert)  # a store's own beacons, heard 4 times a second
    clock.advance(3600)
    assert sup.ticks == 3600 / s.tick_s  # the witness: an hour of ticks ran
    assert sup.ran == []


def test_silence_climbs_the_ladder_at_the_thresholds_then_backs_off() -> None:
    s = WatchdogSettings()
    clock, sup = _supervised(s)
    adverts = clock.call_every(0.25, sup.advert)
    clock.advance(60)
    assert sup.ran == []
    adverts.cancel()  # the radio goes quiet
    quiet = sup.last_advert
    assert quiet is not None
    clock.advance(s.silence_restart_s + 2 * s.silence_escalate_s)
    offsets = [(round(t - quiet, 6), st) for t, st in sup.ran]
    assert offsets == [
        (s.silence_restart_s, Stage.RESTART),
        (s.silence_restart_s + s.silence_escalate_s, Stage.POWER_CYCLE),
        (s.silence_restart_s + 2 * s.silence_escalate_s, Stage.RECREATE),
    ]
    # the next ladder waits one escalation plus a full-jitter backoff, drawn from the rng
    extra = full_jitter(1, s.backoff_base_s * 4, s.backoff_cap_s, random.Random(7))
    clock.advance(s.silence_escalate_s + extra + s.tick_s)
    t_recreate, t_next = sup.ran[2][0], sup.ran[3][0]
    assert sup.ran[3][1] is Stage.RESTART
    assert t_next - t_recreate == pytest.approx(s.silence_escalate_s + extra, abs=s.tick_s)


def test_a_dead_radio_is_retried_forever_but_never_more_often_than_the_ladder() -> None:
    s = WatchdogSettings()
    clock, sup = _supervised(s)
    clock.advance(24 * 3600)  # a day of silence from the start: nothing ever heard
    gaps = [b[0] - a[0] for a, b in zip(sup.ran, sup.ran[1:], strict=False)]
    assert len(sup.ran) > 100  # still trying after a day
    assert min(gaps) >= s.silence_escalate_s
    assert max(gaps) <= s.silence_escalate_s + s.backoff_cap_s + s.tick_s
    assert {st for _, st in sup.ran} == set(Stage)


def test_adverts_coming_back_mid_ladder_start_it_over() -> None:
    s = WatchdogSettings()
    clock, sup = _supervised(s)
    clock.advance(s.silence_restart_s + s.silence_escalate_s)  # restart, power cycle
    assert [st for _, st in sup.ran] == [Stage.RESTART, Stage.POWER_CYCLE]
    clock.call_later(0.5, sup.advert)  # the power cycle helped: one advert, then quiet
    clock.advance(s.silence_restart_s + 1.0)
    assert [st for _, st in sup.ran] == [Stage.RESTART, Stage.POWER_CYCLE, Stage.RESTART]


def test_fake_clock_fires_in_order_and_refuses_to_go_back() -> None:
    clock = FakeClock()
    seen: list[tuple[str, float]] = []
    clock.call_later(2.0, lambda: seen.append(("b", clock.monotonic())))
    clock.call_later(1.0, lambda: seen.append(("a", clock.monotonic())))
    gone = clock.call_later(1.5, lambda: seen.append(("x", clock.monotonic())))
    gone.cancel()
    t0 = clock.monotonic()
    assert clock.fire_pending() == 0  # nothing due yet
    assert clock.advance(5.0) == 2
    assert seen == [("a", t0 + 1.0), ("b", t0 + 2.0)]
    assert clock.monotonic() == t0 + 5.0 and clock.pending == 0
    with pytest.raises(ValueError, match="never goes back"):
        clock.advance(-1.0)
