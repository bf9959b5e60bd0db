"""The answer of ``GET /api/stores/{store_id}/health`` (:mod:`hq.fleet_health`), apart
so that :mod:`hq.api_schemas` can name it without importing the route's module."""

from __future__ import annotations

import msgspec

__all__ = ["BeaconRow", "GatewayRow", "StoreHealth"]


class BeaconRow(msgspec.Struct, kw_only=True):
    id: str
    zone: str
    reported: bool  # an online gateway reports it
    heard_by: str | None = None  # the gateway with the freshest sighting
    last_seen_age_s: float | None = None  # at that gateway's last report; None: never heard
    rssi: int | None = None
    battery_mv: int | None = None  # from Eddystone TLM, where the beacon sends it
    battery_percent: int | None = None  # linear estimate over 2,000-3,000 mV
    unheard: bool = False
    low_battery: bool = False


class GatewayRow(msgspec.Struct, kw_only=True):
    gateway: str
    status: str  # online / offline / stale (no report for stale_after_s) / unknown
    bundle_version: int  # the version it applied
    behind: bool  # online with an older bundle than HQ's current one
    state_age_s: float | None
    beacons_omitted: int  # planned beacons past the report's cap


class StoreHealth(msgspec.Struct, kw_only=True):
    store: str
    now: float
    bundle_version: int  # the store's current bundle version at HQ
    gateways: list[GatewayRow]
    beacons: list[BeaconRow]
