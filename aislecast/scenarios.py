"""Demo scenarios: how HQ is set up for each real-time marketing scenario of the brief."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aislecast.schema import Beacon, Campaign, Caps, Creative, Store, Trigger, Zone
from edge.simstore import SimZone
from hq.service import HqService

__all__ = ["SCENARIOS", "Scenario", "setup_store"]

SetupFn = Callable[[HqService, str, list[SimZone], str], Awaitable[None]]
DuringFn = Callable[[HqService, str, Any], Awaitable[None]]


async def _idle(service: HqService, store: str, state: Any) -> None:  # noqa: ANN401, ARG001
    await asyncio.Event().wait()


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    setup: SetupFn
    during: DuringFn = _idle
    rotation_k: int = 9


def setup_store(service: HqService, store: str, zones: list[SimZone], beacon_uuid: str) -> None:
    service.upsert_store(Store(id=store, name="Aislecast Demo Market", tz="Europe/Berlin"))
    for i, z in enumerate(zones):
        service.upsert_zone(store, Zone(id=z.id, name=z.id.title(), kind=z.id if z.id in {
            "entrance", "checkout"} else "aisle", max_radius_m=z.radius_m, x=z.x, y=z.y))
        service.upsert_beacon(store, Beacon(id=f"b-{z.id}", zone=z.id, uuid=beacon_uuid,
                                            major=1, minor=i + 1))


async def _location(service: HqService, store: str, zones: list[SimZone], beacon_uuid: str) -> None:
    setup_store(service, store, zones, beacon_uuid)
    offers = {
        "bakery": ("Warm croissants, 2 for 1", "Fresh from the oven, next 15 minutes only."),
        "dairy": ("Greek yoghurt -30 %", "Today in the dairy aisle."),
        "drinks": ("Cold brew: buy 3 pay 2", "Stock up for the weekend."),
        "produce": ("Strawberries 1.99", "Local, picked this morning."),
    }
    for zone, (title, body) in offers.items():
        service.upsert_campaign(Campaign(
            id=f"loc-{zone}", name=f"{zone} welcome", stores=[store], scenario="location",
            trigger=Trigger(kind="enter", zones=[zone]), validity_s=900,
            creatives=[Creative(id="a", title=title, body=body, format="coupon",
                                coupon_code=f"{zone[:4].upper()}15")],
            caps=Caps(per_shopper=1), holdout_pct=10.0, priority=1,
        ))


SCENARIOS: dict[str, Scenario] = {
    "location": Scenario("location", "zone entry offers in aisles (location/object based)", _location),
}
