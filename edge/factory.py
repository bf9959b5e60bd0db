"""The one place that picks a scanner backend: real BlueZ or the simulated store."""

from __future__ import annotations

from typing import Literal

from edge.scanner import AdvertCallback, Scanner
from edge.sim_scanner import SimScanner
from edge.simstore import SimStore, default_zones

__all__ = ["make_scanner"]


def make_scanner(
    backend: Literal["sim", "bluez"],
    on_advert: AdvertCallback,
    *,
    adapter: str = "hci0",
    mode: Literal["auto", "active", "passive"] = "auto",
    sim_store: SimStore | None = None,
    sim_seed: int = 1,
) -> Scanner:
    """Build the configured backend; ``sim`` without a store gets the default floor plan."""
    if backend == "bluez":
        from edge.bluez import BlueZScanner  # noqa: PLC0415 - pulls in bleak and dbus-fast

        return BlueZScanner(on_advert, adapter=adapter, mode=mode)
    return SimScanner(sim_store or SimStore(default_zones(), seed=sim_seed), on_advert)
