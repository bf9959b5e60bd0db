"""One interface for every BLE scanner backend, and the factory that picks one.

A backend is an async context manager: entering starts scanning, leaving stops it and
cancels every task it owns. Adverts are handed to the ``on_advert`` callback given at
construction, synchronously and in arrival order; the callback must be cheap (the
gateway's hot path prefilters and decodes there) and must never raise.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from edge.advert import Advertisement

__all__ = ["AdvertCallback", "Scanner"]

AdvertCallback = Callable[[Advertisement], None]


@runtime_checkable
class Scanner(Protocol):
    """A running source of :class:`Advertisement` objects."""

    name: str

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def stats(self) -> dict[str, float | int | str | None]:
        """Counters and state for health checks (adverts seen, restarts, last advert age)."""
        ...
