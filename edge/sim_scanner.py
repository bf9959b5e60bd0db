"""Simulated scanner backend: a :class:`~edge.simstore.SimStore` ticking in real time."""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import TracebackType
from typing import Self

from edge.scanner import AdvertCallback
from edge.simstore import SimStore

__all__ = ["SimScanner"]

_TICK_S = 0.05  # 20 Hz: finer than any advertising interval the simulator uses


class SimScanner:
    """Feeds every advert of a simulated store to ``on_advert``, like a real adapter."""

    def __init__(self, store: SimStore, on_advert: AdvertCallback, *, speed: float = 1.0) -> None:
        self.name = "sim"
        self.store = store
        self._on_advert = on_advert
        self._speed = speed
        self._task: asyncio.Task[None] | None = None
        self.adverts = 0
        self.restarts = 0
        self.last_advert_monotonic: float | None = None
        self.callback_errors = 0

    async def __aenter__(self) -> Self:
        if self._task is not None:
            raise RuntimeError("SimScanner is not reentrant")
        self._task = asyncio.create_task(self._run(), name="sim-scanner")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def sim_now(self) -> float:
        return time.monotonic() * self._speed

    async def _run(self) -> None:
        while True:
            now = self.sim_now()
            for adv in self.store.step(now, time.time()):
                self.adverts += 1
                try:
                    self._on_advert(adv)
                except Exception:  # noqa: BLE001 - a callback bug must not stop the radio
                    self.callback_errors += 1
            if self.adverts:
                self.last_advert_monotonic = time.monotonic()
            await asyncio.sleep(_TICK_S)

    def stats(self) -> dict[str, float | int | str | None]:
        last = self.last_advert_monotonic
        return {
            "backend": self.name,
            "adverts": self.adverts,
            "restarts": self.restarts,
            "callback_errors": self.callback_errors,
            "last_advert_age_s": None if last is None else round(time.monotonic() - last, 3),
        }
