"""The store's NFC reader: nfcpy on its own thread, taps delivered on the event loop.

nfcpy is blocking, so it runs on one dedicated thread (the one place aislecast uses a
thread). Every nfcpy wait there is bounded: polls by ``poll_interval`` (the udp driver's
fixed 1 s wait is capped, see :func:`edge.nfc._device.tune_udp`), tag commands by nfcpy's
own short timeouts and ISO-DEP by :data:`ISODEP_FWT_CAP_S`, so leaving the context
manager stops the thread within one of those waits. Taps cross to the loop with
``loop.call_soon_threadsafe``; the ``on_tap`` callback runs there and must be cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import nfc.clf

from aislecast.kernel.logs import get_logger
from edge.nfc._const import (
    NFC_BACKOFF_BASE,
    NFC_BACKOFF_CAP_S,
    NFC_REPEAT_HOLDOFF_S,
    NFC_STOP_TIMEOUT_S,
)
from edge.nfc._device import classify, open_frontend, tune_udp
from edge.nfc._session import ReadFailure, read_target
from edge.nfc._tap import Tap
from edge.nfc.settings import TECHNOLOGIES, NfcDeviceError, check_path

__all__ = ["NfcReader"]

log = get_logger(__name__)

_FAILURES = (
    "read_failed", "no_ndef", "bad_ndef", "bad_record", "aid_not_found", "bad_token",
    "open_failures", "device_lost", "callback_errors",
)


class NfcReader:
    """Poll one reader for shelf tags and phones; hand each :class:`Tap` to ``on_tap``.

    ``device`` is an nfcpy path (``usb``, ``usb:VID:PID``, ``tty:USB0:pn532``,
    ``udp:127.0.0.1:PORT``); a malformed one raises :class:`NfcDeviceError` here. A
    missing, busy or unplugged reader is logged once with its cause and fix, and
    reopened with full-jitter backoff until the reader leaves its context.
    """

    def __init__(
        self,
        device: str,
        on_tap: Callable[[Tap], None],
        *,
        poll_interval: float,
        technologies: tuple[str, ...] = ("106A",),
        mute_after_tap_s: float,
        repeat_holdoff_s: float = NFC_REPEAT_HOLDOFF_S,
        backoff_cap_s: float = NFC_BACKOFF_CAP_S,
        stop_timeout_s: float = NFC_STOP_TIMEOUT_S,
    ) -> None:
        check_path(device)
        unknown = set(technologies) - TECHNOLOGIES
        if not technologies or unknown:
            raise ValueError(f"technologies must be among {sorted(TECHNOLOGIES)}, got {unknown}")
        if poll_interval <= 0 or mute_after_tap_s < 0:
            raise ValueError("poll_interval must be > 0 and mute_after_tap_s >= 0")
        self.device = device
        self._on_tap = on_tap
        self._poll_interval = poll_interval
        self._technologies = technologies
        self._mute_after_tap_s = mute_after_tap_s
        self._holdoff = repeat_holdoff_s
        self._backoff_cap = backoff_cap_s
        self._stop_timeout = stop_timeout_s
        self._stop = threading.Event()
        self._entered = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Future[None] | None = None
        self._recent: dict[str, float] = {}
        self._stats: dict[str, int] = dict.fromkeys(
            ("polls", "taps", "tags", "phones", "repeats", "reconnects", *_FAILURES), 0
        )
        self._state = "stopped"
        self._last_error: str | None = None

    # -- asyncio side ------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("NfcReader is not re-entrant; make a new one")
        self._entered = True
        self._loop = asyncio.get_running_loop()
        self._done = self._loop.create_future()
        self._state = "starting"
        self._thread = threading.Thread(
            target=self._run, name=f"nfc-reader {self.device}", daemon=True
        )
        self._thread.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._done is None:
            return
        stopped = True
        try:
            async with asyncio.timeout(self._stop_timeout):
                await asyncio.shield(self._done)
        except TimeoutError:
            stopped = False
        if not stopped:
            log.error(
                "nfc reader thread did not stop within %.1f s", self._stop_timeout,
                code="nfc_stop_timeout", device=self.device,
            )
        self._state = "stopped"

    async def wait_stopped(self) -> None:
        """Return when the reader thread has ended (a malformed path, or after leaving)."""
        if self._done is None:
            raise RuntimeError("NfcReader is not running; use `async with reader:`")
        await asyncio.shield(self._done)

    def stats(self) -> dict[str, float | int | str | None]:
        """Counters (polls, taps, every failure kind) and state, for health checks."""
        out: dict[str, float | int | str | None] = dict(self._stats)
        out["state"] = self._state
        out["last_error"] = self._last_error
        return out

    def _deliver(self, tap: Tap) -> None:
        try:
            self._on_tap(tap)
        except Exception:
            self._stats["callback_errors"] += 1
            log.exception("nfc on_tap callback failed", code="nfc_callback_error")

    def _finished(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    # -- reader thread -----------------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        try:
            while not self._stop.is_set():
                try:
                    clf = open_frontend(self.device)
                except NfcDeviceError as err:
                    attempt += 1
                    self._device_failure("open_failures", err, attempt)
                    if not err.transient:
                        return
                    self._stop.wait(self._backoff(attempt))
                    continue
                if attempt:
                    self._stats["reconnects"] += 1
                    log.info("nfc reader %s is back after %d attempt(s)", self.device, attempt,
                             code="nfc_reader_back", device=self.device)
                attempt = 0
                self._state = "running"
                try:
                    self._poll(clf)
                except Exception as exc:  # noqa: BLE001 - classified, counted, retried
                    attempt = 1
                    self._device_failure("device_lost", classify(self.device, exc, was_open=True),
                                         attempt)
                    self._stop.wait(self._backoff(attempt))
                finally:
                    with contextlib.suppress(Exception):
                        clf.close()
        finally:
            self._state = "stopped"
            if self._loop is not None:
                with contextlib.suppress(RuntimeError):  # loop already closed
                    self._loop.call_soon_threadsafe(self._finished)

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self._backoff_cap, NFC_BACKOFF_BASE ** min(attempt, 10)))

    def _device_failure(self, counter: str, err: NfcDeviceError, attempt: int) -> None:
        self._stats[counter] += 1
        self._state = "waiting_for_device"
        first = str(err) != self._last_error
        self._last_error = str(err)
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "%s%s", err, "" if first else f" (still, attempt {attempt})",
            code="nfc_device_error", device=self.device, cause=err.cause, attempt=attempt,
        )

    def _poll(self, clf: Any) -> None:
        targets = [nfc.clf.RemoteTarget(t) for t in self._technologies]
        tune_udp(clf, self._poll_interval)
        stop, interval = self._stop, self._poll_interval
        while not stop.is_set():
            started = time.monotonic()
            target = clf.sense(*targets, iterations=1)
            self._stats["polls"] += 1
            if target is None:
                rest = interval - (time.monotonic() - started)
                if rest > 0:
                    stop.wait(rest)
                continue
            self._handle(clf, target, time.monotonic())
            clf.device.mute()  # RF off now, so the card leaves before the next poll
            if self._mute_after_tap_s:
                stop.wait(self._mute_after_tap_s)

    def _handle(self, clf: Any, target: Any, ts: float) -> None:
        try:
            tap = read_target(clf, target, ts)
        except ReadFailure as exc:
            self._stats[exc.kind] += 1
            log.info("nfc read dropped: %s", exc.detail,
                     code="nfc_read_failed", kind=exc.kind, device=self.device)
            return
        last = self._recent.get(tap.key)
        self._recent[tap.key] = ts
        if last is not None and ts - last < self._holdoff:
            self._stats["repeats"] += 1
            return
        if len(self._recent) > 256:
            self._recent = {k: v for k, v in self._recent.items() if ts - v < self._holdoff}
        self._stats["taps"] += 1
        self._stats["phones" if tap.kind == "phone" else "tags"] += 1
        if self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._deliver, tap)
        except RuntimeError:  # loop closed under us: nothing left to deliver to
            self._stop.set()
