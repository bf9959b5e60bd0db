"""Payloads gateways of one store exchange to pool presence (docs/architecture.md#presence).

Each gateway publishes, about once a second, a :class:`SightingSummary` on
``px/v1/stores/{store}/gateways/{gateway}/presence`` (QoS 0, not retained, message
expiry a few seconds: a summary is useless once its evidence is stale). Each entry is
a :class:`ShopperSighting`, encoded as a JSON array to keep the payload small (about
60 bytes a shopper): ``["inbox", "zone", distance_m, claimed, age_s]``.

``claimed`` says the sender currently places the shopper in ``zone`` (it emitted the
``zone_enter``); ``age_s`` is how old the evidence was when published, so a receiver
ages it on its own monotonic clock and never compares two machines' clocks. Shared
with :mod:`aislecast.kernel.schema`'s conventions: a ``v`` field, decoded with
:func:`aislecast.kernel.schema.decode` (msgspec errors only; callers count and drop).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = ["ShopperSighting", "SightingSummary"]


class ShopperSighting(msgspec.Struct, frozen=True, array_like=True):
    inbox: str
    zone: str
    distance_m: Annotated[float, msgspec.Meta(gt=0, lt=10_000)]
    claimed: bool
    age_s: Annotated[float, msgspec.Meta(ge=0, le=3_600)]


class SightingSummary(msgspec.Struct, frozen=True):
    v: int
    store: str
    gateway: str
    ts: float  # sender's unix time at publish, for logs only
    sightings: list[ShopperSighting]
    kind: Literal["sighting_summary"] = "sighting_summary"
