"""The gateway's real BLE scanner: bleak on BlueZ, continuous, supervised, never silent.

Scanning never pauses: passive through BlueZ's AdvertisementMonitorManager1 where the
adapter offers it, active otherwise, with BlueZ's duplicate filter off so RSSI keeps
flowing. A supervisor task watches the time since the last non-empty advert and the
adapter itself (:class:`~edge.bluez.adapter.AdapterWatch`) and recovers in stages:
restart discovery -> power-cycle the adapter over D-Bus -> recreate the BleakScanner.
Each step is bounded by ``asyncio.timeout``, failed steps back off with full jitter,
and every recovery is logged on one line and counted in :meth:`BlueZScanner.stats`.

Every watchdog decision (silence, the powered-off grace, when a retry is due) and every
advert's ``ts`` read the scanner's ``clock`` (``time.monotonic`` unless one is given), so
tests drive the whole ladder on a fake clock; bounds on one D-Bus step stay real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from types import TracebackType
from typing import Final, Literal, Self

from bleak import BleakScanner
from bleak.args.bluez import BlueZScannerArgs, OrPattern, OrPatternLike
from bleak.assigned_numbers import AdvertisementDataType
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from aislecast.kernel.logs import get_logger
from edge.advert import Advertisement
from edge.bluez.adapter import AdapterEvent, AdapterWatch
from edge.bluez.errors import (
    RECOVERY,
    BlueZScannerError,
    ErrorClass,
    Recovery,
    classify,
    hint_for,
)
from edge.bluez.watchdog import Stage, Watchdog, WatchdogSettings, full_jitter
from edge.scanner import AdvertCallback

__all__ = ["PASSIVE_OR_PATTERNS", "BlueZScanner", "ScanMode"]

_LOG = get_logger(__name__)

ScanMode = Literal["auto", "active", "passive"]

# What the controller lets through in passive mode (BlueZ AdvertisementMonitor
# or-patterns; start offset is within the AD structure's data, after its type byte):
# iBeacon (Apple 0x004C, type 0x02 len 0x15), AltBeacon (code 0xBEAC after any company
# id) and Eddystone (16-bit service data 0xFEAA, which also carries shopper EID tokens).
PASSIVE_OR_PATTERNS: Final[tuple[OrPattern, ...]] = (
    OrPattern(0, AdvertisementDataType.MANUFACTURER_SPECIFIC_DATA, b"\x4c\x00\x02\x15"),
    OrPattern(2, AdvertisementDataType.MANUFACTURER_SPECIFIC_DATA, b"\xbe\xac"),
    OrPattern(0, AdvertisementDataType.SERVICE_DATA_UUID16, b"\xaa\xfe"),
)


class BlueZScanner:
    """A :class:`~edge.scanner.Scanner` on one BlueZ adapter; an async context manager."""

    def __init__(
        self,
        on_advert: AdvertCallback,
        *,
        adapter: str = "hci0",
        mode: ScanMode = "auto",
        watchdog: WatchdogSettings | None = None,
        or_patterns: list[OrPatternLike] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = f"bluez:{adapter}"
        self._on_advert = on_advert
        self._adapter = adapter
        self._requested: ScanMode = mode
        self._s = watchdog or WatchdogSettings()
        self._clock = clock
        self._patterns = list(PASSIVE_OR_PATTERNS if or_patterns is None else or_patterns)
        self._mode: Literal["active", "passive"] | None = None
        self._bleak: BleakScanner | None = None
        self._scanning = False
        self._watch: AdapterWatch | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._task: asyncio.Task[None] | None = None
        self._entered = False
        self._wake = asyncio.Event()
        self._need: Stage | None = None
        self._need_reason = ""
        self._retry_at = 0.0
        self._attempt = 0
        self._in_power_cycle = False
        self._powered_off_since: float | None = None
        self._state = "stopped"
        self._last_advert: float | None = None
        self._adverts = 0
        self._empty = 0
        self._callback_errors = 0
        self._stop_errors = 0
        self._failures = 0
        self._fallbacks = 0
        self._recoveries: Counter[Stage] = Counter()
        self._errors: Counter[ErrorClass] = Counter()
        self._ticks = 0  # supervisor passes completed

    # hot path ---------------------------------------------------------------------------
    def _on_bleak(self, device: BLEDevice, adv: AdvertisementData) -> None:
        md = adv.manufacturer_data
        sd = adv.service_data
        if not md and not sd and adv.local_name is None:
            self._empty += 1  # RSSI-only: nothing to decode, and not proof of health
            return
        now = self._clock()
        self._last_advert = now
        self._adverts += 1
        try:
            self._on_advert(
                Advertisement(
                    address=device.address,
                    rssi=adv.rssi,
                    ts=now,
                    receiver=self._adapter,
                    manufacturer_data=md,
                    service_data=sd,
                    local_name=adv.local_name,
                    tx_power=adv.tx_power,
                )
            )
        except Exception:  # noqa: BLE001 - the callback must not raise; if it does, scan on
            self._callback_errors += 1
            _LOG.exception("bluez on_advert raised adapter=%s", self._adapter)

    # lifecycle --------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("BlueZScanner is not re-entrant; create a new one")
        self._entered = True
        self._state = "starting"
        started = False
        for attempt in range(self._s.start_attempts):
            try:
                async with asyncio.timeout(self._s.attempt_timeout_s):
                    await self._recreate()
                started = True
                break
            except Exception as exc:
                cls = self._record(exc, "start", attempt)
                if cls is ErrorClass.PERMISSION:
                    await self._teardown()
                    raise BlueZScannerError(self._adapter, cls, str(exc)) from exc
                if cls is ErrorClass.PASSIVE_UNSUPPORTED:
                    self._fall_back_to_active()
                    continue
                if cls in (ErrorClass.ADAPTER_MISSING, ErrorClass.NOT_READY):
                    break  # nothing to retry against; the supervisor waits or powers on
                await asyncio.sleep(self._backoff(attempt))
        if started:
            self._state = "scanning"
        else:
            self._state = "recovering"
            self._schedule(Stage.RECREATE, "start_failed", 0.0)
            _LOG.warning("bluez scanner not started yet, retrying in background adapter=%s",
                         self._adapter, adapter=self._adapter)
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._task = self._tg.create_task(
            self._supervise(), name=f"bluez-supervisor-{self._adapter}"
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._tg is not None:
            await self._tg.__aexit__(None, None, None)
        self._tg = self._task = None
        await self._teardown()
        self._state = "stopped"

    async def _teardown(self) -> None:
        await self._stop()
        self._bleak = None
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    # scanning steps -------------------------------------------------------------------------
    def _make_bleak(self) -> BleakScanner:
        if self._mode is None:
            wanted = self._requested
            if wanted == "auto":
                offered = self._watch is not None and self._watch.state.passive_supported
                wanted = "passive" if offered else "active"
            self._mode = wanted
        bluez: BlueZScannerArgs = {"adapter": self._adapter}
        if self._mode == "passive":
            bluez["or_patterns"] = self._patterns
        else:
            # keep duplicates: BlueZ's default would report each device once, and
            # presence needs every RSSI sample (bleak sets False too; stated here)
            bluez["filters"] = {"DuplicateData": False, "Transport": "le"}
        return BleakScanner(self._on_bleak, scanning_mode=self._mode, bluez=bluez)

    async def _start(self) -> None:
        if self._bleak is None:
            self._bleak = self._make_bleak()
        await self._bleak.start()
        self._scanning = True

    async def _stop(self) -> None:
        """Stop discovery, tolerating an adapter that is already off or gone."""
        if self._bleak is None or not self._scanning:
            return
        self._scanning = False
        try:
            async with asyncio.timeout(self._s.attempt_timeout_s):
                await self._bleak.stop()
        except Exception as exc:  # noqa: BLE001 - expected when off/removed; bleak cleaned up
            self._stop_errors += 1
            _LOG.debug("bluez stop failed adapter=%s error_class=%s error=%r",
                       self._adapter, classify(exc).value, exc)

    async def _recreate(self) -> None:
        """Fresh adapter connection and BleakScanner, then start (no-op stop if idle)."""
        await self._stop()
        self._bleak = None
        if self._watch is not None:
            self._watch.close()
        self._watch = AdapterWatch(self._adapter, self._on_adapter_event)
        await self._watch.connect()
        if not self._watch.state.present:
            raise BlueZScannerError(
                self._adapter, ErrorClass.ADAPTER_MISSING, "adapter not present"
            )
        if self._watch.state.powered is False:
            raise BlueZScannerError(self._adapter, ErrorClass.NOT_READY, "adapter powered off")
        await self._start()

    async def _run(self, stage: Stage) -> None:
        if stage is Stage.RESTART:
            await self._stop()
            await self._start()
        elif stage is Stage.POWER_CYCLE:
            if self._watch is None or not self._watch.connected:
                await self._recreate()  # no adapter connection to power-cycle with
                return
            await self._stop()
            self._in_power_cycle = True
            try:
                await self._watch.power_cycle(self._s.power_cycle_off_s, self._s.power_wait_s)
            finally:
                self._in_power_cycle = False
            await self._start()
        else:
            await self._recreate()

    def _fall_back_to_active(self) -> None:
        self._fallbacks += 1
        self._mode = "active"
        self._bleak = None
        _LOG.warning("bluez passive scanning unavailable, scanning actively adapter=%s hint=%s",
                     self._adapter, hint_for(ErrorClass.PASSIVE_UNSUPPORTED))

    # supervision ------------------------------------------------------------------------------
    def _on_adapter_event(self, event: AdapterEvent) -> None:
        if event is AdapterEvent.ADDED:
            self._schedule(Stage.RECREATE, "adapter_added", 0.0)
        elif event is AdapterEvent.POWERED_ON and not self._in_power_cycle:
            self._schedule(Stage.RESTART, "powered_on", 0.0)
        self._wake.set()

    def _schedule(self, stage: Stage, reason: str, delay: float) -> None:
        if self._need is None or stage > self._need:
            self._need, self._need_reason = stage, reason
        self._retry_at = self._clock() + delay

    def _backoff(self, attempt: int) -> float:
        return full_jitter(attempt, self._s.backoff_base_s, self._s.backoff_cap_s)

    def _record(self, exc: BaseException, stage: str, attempt: int) -> ErrorClass:
        cls = classify(exc)
        self._errors[cls] += 1
        log = _LOG.exception if cls is ErrorClass.UNKNOWN else _LOG.warning
        log("bluez step failed adapter=%s stage=%s attempt=%d error_class=%s error=%r hint=%s",
            self._adapter, stage, attempt, cls.value, exc, hint_for(cls),
            adapter=self._adapter, stage=stage, error_class=cls.value)
        return cls

    async def _supervise(self) -> None:
        wd = Watchdog(self._s, self._clock())
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._s.tick_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._supervise_once(wd)
            except Exception as exc:  # noqa: BLE001 - the supervisor must never die
                self._record(exc, "supervise", 0)
                self._schedule(Stage.RECREATE, "supervisor_error", self._backoff(self._attempt))
            self._ticks += 1

    async def _supervise_once(self, wd: Watchdog) -> None:
        now = self._clock()
        watch = self._watch
        if watch is not None and watch.connected and not watch.state.present:
            await self._stop()
            self._state = "adapter_missing"
            wd.acted(now)
            return
        if watch is not None and watch.connected and watch.state.powered is False:
            await self._stop()
            self._state = "powered_off"
            wd.acted(now)
            if self._powered_off_since is None:
                self._powered_off_since = now
            grace_over = now - self._powered_off_since >= self._s.powered_off_grace_s
            if grace_over and now >= self._retry_at:
                await self._recover(Stage.POWER_CYCLE, "powered_off", wd)
            return
        self._powered_off_since = None
        if watch is None or not watch.connected:
            self._schedule(Stage.RECREATE, "bus_lost", 0.0)
        if self._need is not None:
            if now >= self._retry_at:
                stage, reason, self._need = self._need, self._need_reason, None
                await self._recover(stage, reason, wd)
            return
        stage_due = wd.due(now, self._last_advert)
        if stage_due is not None:
            await self._recover(stage_due, "silence", wd)

    async def _recover(self, stage: Stage, reason: str, wd: Watchdog) -> None:
        t0 = time.monotonic()  # the step's own duration, in real time
        self._state = "recovering"
        try:
            async with asyncio.timeout(self._s.attempt_timeout_s):
                await self._run(stage)
        except Exception as exc:  # noqa: BLE001 - every failure is classified and retried
            self._failures += 1
            cls = self._record(exc, stage.label, self._attempt)
            delay = self._backoff(self._attempt)
            self._attempt += 1
            action = RECOVERY[cls]
            if action is Recovery.FALLBACK_ACTIVE:
                self._fall_back_to_active()
                self._schedule(Stage.RECREATE, "fallback_active", 0.0)
            elif action is Recovery.RETRY:
                self._schedule(stage, reason, delay)
            elif action is Recovery.POWER_CYCLE:
                self._schedule(Stage.POWER_CYCLE, reason, delay)
            elif action in (Recovery.WAIT_ADAPTER, Recovery.RECREATE):
                self._schedule(Stage.RECREATE, reason, delay)
            else:
                self._schedule(Stage(min(stage + 1, Stage.RECREATE)), reason, delay)
            wd.acted(self._clock())
            return
        self._attempt = 0
        self._recoveries[stage] += 1
        self._state = "scanning"
        wd.acted(self._clock())
        elapsed_ms = (time.monotonic() - t0) * 1000
        _LOG.info("bluez recovery ok adapter=%s stage=%s reason=%s mode=%s elapsed_ms=%.1f",
                  self._adapter, stage.label, reason, self._mode, elapsed_ms,
                  adapter=self._adapter, stage=stage.label, reason=reason, elapsed_ms=elapsed_ms)

    # health -------------------------------------------------------------------------------------
    def errors_by_class(self) -> dict[str, int]:
        """Failed steps per :class:`ErrorClass` value (only classes seen)."""
        return {cls.value: n for cls, n in self._errors.items()}

    def stats(self) -> dict[str, float | int | str | None]:
        last = self._last_advert
        out: dict[str, float | int | str | None] = {
            "name": self.name,
            "adapter": self._adapter,
            "mode": self._mode,
            "state": self._state,
            "adverts": self._adverts,
            "adverts_empty": self._empty,
            "restarts": sum(self._recoveries.values()),
            "last_advert_monotonic": last,
            "last_advert_age_s": None if last is None else self._clock() - last,
            "recovery_failures": self._failures,
            "fallback_active": self._fallbacks,
            "callback_errors": self._callback_errors,
            "stop_errors": self._stop_errors,
            "supervisor_ticks": self._ticks,
        }
        for stage in Stage:
            out[f"recoveries_{stage.label}"] = self._recoveries[stage]
        for cls in ErrorClass:
            out[f"errors_{cls.value}"] = self._errors[cls]
        return out
