"""Every threshold and timeout of the BlueZ scanner, each with where its value comes from."""

from __future__ import annotations

from typing import Final

__all__ = [
    "ATTEMPT_TIMEOUT_S",
    "BACKOFF_BASE_S",
    "BACKOFF_CAP_S",
    "POWERED_OFF_GRACE_S",
    "POWER_CYCLE_OFF_S",
    "POWER_WAIT_S",
    "SILENCE_ESCALATE_S",
    "SILENCE_RESTART_S",
    "START_ATTEMPTS",
    "WATCHDOG_TICK_S",
]

# A store gateway always hears its own fixed beacons (iBeacon/Eddystone at 100 ms to 1 s
# intervals, several per zone), so 4 s of no advert at all is at least 4 missed intervals
# of the slowest beacon and never a quiet room. habluetooth restarts after 90 s because a
# home may truly be silent; we cannot be. Restart discovery at 4 s of silence.
SILENCE_RESTART_S: Final = 4.0
# After a recovery step, this much more silence before the next stage (power cycle, then
# recreate): the same "several missed beacon intervals" reasoning as above. Restart ->
# power cycle -> recreate thus takes about 4 + 4 + 4 s of silence at most.
SILENCE_ESCALATE_S: Final = 4.0
# Watchdog tick: a quarter of the silence threshold, so detection lags by at most 25 %.
# (habluetooth ticks every 30 s against 90 s; same ratio order, tighter thresholds.)
WATCHDOG_TICK_S: Final = 1.0
# Powered=false seen: give bluetoothd or an operator this long to turn it back on
# (bluetoothd's own AutoEnable acts within ~1 s of a re-plug) before we power it on.
POWERED_OFF_GRACE_S: Final = 2.0
# One recovery step (stop, power, start) is bounded by this. bluetoothd answers
# Start/StopDiscovery and Set(Powered) in well under 100 ms on a Pi; powering an adapter
# on takes up to ~1 s (HCI reset + init). 5 s leaves room for a loaded system and still
# fits a whole restart -> power-cycle ladder inside the 10 s recovery goal (issue 4.3).
ATTEMPT_TIMEOUT_S: Final = 5.0
# Powered off this long during a power cycle: enough for bluetoothd to tear down state
# (it clears discovery sessions synchronously with the HCI power-off reply).
POWER_CYCLE_OFF_S: Final = 0.5
# After Set(Powered=true), wait at most this long for the Powered property to say so.
POWER_WAIT_S: Final = 3.0
# Full-jitter backoff between failed attempts: uniform(0, min(cap, base * 2**attempt)).
# base 0.25 s: InProgress from bluetoothd clears within a few hundred ms (a competing
# discovery finishing); cap 30 s: half of aiomqtt's ~1 min cap, since a gateway without
# its radio is useless and retries are cheap D-Bus calls.
BACKOFF_BASE_S: Final = 0.25
BACKOFF_CAP_S: Final = 30.0
# __aenter__ tries this many starts (with backoff) before handing the problem to the
# background supervisor, so a boot race with bluetoothd does not fail the gateway.
START_ATTEMPTS: Final = 3
