"""A store's floor plan: the store, its zones (kind, rectangle in metres), its receivers.

Staff describe the floor once, in JSON or TOML, and the placement plan
(:mod:`firmware_config.plan`) and the health check (:mod:`firmware_config.check`) work
from it. Coordinates are metres from the store's front-left corner as seen from the
entrance: ``x`` across the store front, ``y`` into the store. A zone is the rectangle
``[x_m, x_m + width_m] x [y_m, y_m + depth_m]``. Example (TOML)::

    [store]
    id = "s042"
    number = 42          # becomes every beacon's iBeacon major
    name = "Lyon Part-Dieu"
    tz = "Europe/Paris"
    width_m = 30
    depth_m = 24

    [[zones]]
    id = "entrance"
    kind = "entrance"
    x_m = 0
    y_m = 0
    width_m = 30
    depth_m = 4

    [[receivers]]         # optional: where the gateways' radios are
    id = "gw-1"
    zone = "entrance"
    x_m = 15
    y_m = 2

Every error names the field (``zones[2].width_m``) and says how to fix it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Final, Literal, get_args

import msgspec

from aislecast.kernel.errors import ConfigError

__all__ = [
    "ZONE_KINDS",
    "FloorPlan",
    "Radio",
    "Receiver",
    "Store",
    "Zone",
    "load_floorplan",
    "parse_floorplan",
]

ZoneKind = Literal["entrance", "aisle", "checkout", "display", "service", "other"]
ZONE_KINDS: Final[tuple[str, ...]] = get_args(ZoneKind)

# A store is a room, not a warehouse: 500 m bounds typos (cm typed as m) without
# refusing a hypermarket (the largest are ~300 m across).
_MAX_SIDE_M: Final = 500.0
_Metres = Annotated[float, msgspec.Meta(ge=0, le=_MAX_SIDE_M)]
_Size = Annotated[float, msgspec.Meta(gt=0, le=_MAX_SIDE_M)]
_Ident = Annotated[str, msgspec.Meta(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_.-]+$")]


class Radio(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The radio model the plan uses; the defaults suit a typical store."""

    # Indoor log-distance exponent: 2.0 is free space, shelving and people push it to
    # 2.5-3.5 (docs/architecture.md#presence); 2.5 is the usual open-plan retail figure.
    path_loss_exponent: Annotated[float, msgspec.Meta(ge=1.5, le=5.0)] = 2.5
    # RSSI at 1 m from a beacon transmitting at 0 dBm, as a phone sees it: -59 dBm is
    # Apple's reference iBeacon calibration and what nRF52/CR2477 beacons measure.
    measured_power_dbm: Annotated[int, msgspec.Meta(ge=-100, le=-20)] = -59
    # Weakest RSSI a phone should still hear reliably at a zone's edge: scanners see
    # down to ~-95 dBm, but shopper bodies and phones in pockets cost ~10 dB.
    edge_rssi_dbm: Annotated[int, msgspec.Meta(ge=-100, le=-40)] = -82
    # One beacon covers about this much floor: a 7 m x 7 m cell keeps every point within
    # ~5 m of its beacon (RSSI ~-76 dBm at n=2.5), so neighbouring aisles 2-3 m apart
    # still differ by several dB, which presence hysteresis (15-30 %) can separate.
    area_per_beacon_m2: Annotated[float, msgspec.Meta(ge=4, le=400)] = 49.0


class Store(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: _Ident
    # iBeacon major is 16 bits, so the store number must fit in 0..65535.
    number: Annotated[int, msgspec.Meta(ge=0, le=65535)]
    name: str = ""
    tz: str = "UTC"
    width_m: _Size
    depth_m: _Size


class Zone(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: _Ident
    kind: ZoneKind
    x_m: _Metres
    y_m: _Metres
    width_m: _Size
    depth_m: _Size
    name: str = ""
    # Presence radius around each beacon (Zone.max_radius_m, docs/architecture.md#data-model); None: planned.
    max_radius_m: Annotated[float, msgspec.Meta(gt=0, le=50)] | None = None

    @property
    def area_m2(self) -> float:
        return self.width_m * self.depth_m


class Receiver(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A gateway's radio: where it is and which zone it stands in."""

    id: _Ident
    zone: str
    x_m: _Metres
    y_m: _Metres


class FloorPlan(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    store: Store
    zones: Annotated[list[Zone], msgspec.Meta(min_length=1)]
    receivers: list[Receiver] = []
    radio: Radio = msgspec.field(default_factory=Radio)


# The fix for each field, keyed by its last path element.
_HINTS: Final[dict[str, str]] = {
    "id": "use 1-40 letters, digits, '.', '_' or '-', e.g. \"aisle-3\"",
    "number": "give the store number as an integer 0..65535 (it becomes the iBeacon major)",
    "kind": f"use one of {', '.join(ZONE_KINDS)}",
    "x_m": "give metres from the store's left wall, a number >= 0",
    "y_m": "give metres from the store front, a number >= 0",
    "width_m": "give the width in metres, a number > 0 such as 12.5 (not centimetres)",
    "depth_m": "give the depth in metres, a number > 0 such as 2.4 (not centimetres)",
    "zones": "list at least one zone, each with id, kind, x_m, y_m, width_m, depth_m",
    "zone": "name the id of a zone listed under zones",
    "max_radius_m": "give a radius in metres between 0 and 50, or leave it out",
    "path_loss_exponent": "use 2.0 (open space) to 3.5 (dense shelving); 2.5 is typical",
    "measured_power_dbm": "give the RSSI at 1 m for 0 dBm tx, e.g. -59",
    "edge_rssi_dbm": "give the weakest RSSI to rely on at a zone edge, e.g. -82",
    "area_per_beacon_m2": "give floor area per beacon in m2, e.g. 49 for a 7 m grid",
    "store": "add a [store] table with id, number, width_m and depth_m",
}
_AT_RE: Final = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)


def _validation_error(exc: msgspec.ValidationError) -> ConfigError:
    m = _AT_RE.match(str(exc))
    msg, path = (m.group("msg"), m.group("path") or "") if m else (str(exc), "")
    field = path.lstrip(".") or "floorplan"
    missing = re.search(r"missing required field `(\w+)`", msg)
    if missing:
        field = f"{field}.{missing.group(1)}" if path else missing.group(1)
    unknown = re.search(r"unknown field `([^`]+)`", msg)
    if unknown:
        field = f"{field}.{unknown.group(1)}" if path else unknown.group(1)
    key = re.split(r"[.\[]", field.rstrip("]"))[-1] if not unknown else ""
    if unknown:
        hint = "remove it or check its spelling against the floor plan format"
    else:
        hint = _HINTS.get(key, "see `aislecast beacons plan --help` for the format")
    return ConfigError(field, msg[0].lower() + msg[1:] if msg else "invalid", hint=hint)


def _check(plan: FloorPlan) -> None:
    """Checks across fields that msgspec's per-field constraints cannot express."""
    seen: set[str] = set()
    for i, zone in enumerate(plan.zones):
        where = f"zones[{i}]"
        if zone.id in seen:
            raise ConfigError(f"{where}.id", f"zone id {zone.id!r} is used twice",
                              hint="give every zone its own id")
        seen.add(zone.id)
        # Half a metre of slack: floor plans are measured with a tape, not a laser.
        if zone.x_m + zone.width_m > plan.store.width_m + 0.5:
            raise ConfigError(
                f"{where}.width_m",
                f"zone {zone.id!r} ends at x={zone.x_m + zone.width_m:g} m, beyond the "
                f"store's width_m={plan.store.width_m:g}",
                hint="shrink the zone, move its x_m, or correct store.width_m",
            )
        if zone.y_m + zone.depth_m > plan.store.depth_m + 0.5:
            raise ConfigError(
                f"{where}.depth_m",
                f"zone {zone.id!r} ends at y={zone.y_m + zone.depth_m:g} m, beyond the "
                f"store's depth_m={plan.store.depth_m:g}",
                hint="shrink the zone, move its y_m, or correct store.depth_m",
            )
    rx_seen: set[str] = set()
    for i, rx in enumerate(plan.receivers):
        if rx.zone not in seen:
            raise ConfigError(f"receivers[{i}].zone", f"unknown zone {rx.zone!r}",
                              hint=f"use one of: {', '.join(sorted(seen))}")
        if rx.id in rx_seen:
            raise ConfigError(f"receivers[{i}].id", f"receiver id {rx.id!r} is used twice",
                              hint="give every receiver its own id")
        rx_seen.add(rx.id)


def parse_floorplan(data: bytes | str, *, fmt: Literal["json", "toml"] = "json") -> FloorPlan:
    """Decode and check a floor plan; raise :class:`ConfigError` naming the bad field."""
    try:
        if fmt == "toml":
            plan = msgspec.toml.decode(data, type=FloorPlan)
        else:
            plan = msgspec.json.decode(data, type=FloorPlan)
    except msgspec.ValidationError as exc:
        raise _validation_error(exc) from exc
    except msgspec.DecodeError as exc:
        raise ConfigError(
            "floorplan", f"not valid {fmt.upper()}: {exc}",
            hint=f"fix the {fmt.upper()} syntax at the position given",
        ) from exc
    _check(plan)
    return plan


def load_floorplan(path: Path) -> FloorPlan:
    """Read a floor plan from a ``.json`` or ``.toml`` file."""
    suffix = path.suffix.lower()
    if suffix not in {".json", ".toml"}:
        raise ConfigError("floorplan", f"{path}: unknown file type {suffix!r}",
                          hint="name the file .json or .toml")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError("floorplan", f"cannot read {path}: {exc.strerror}",
                          hint="check the path") from exc
    try:
        return parse_floorplan(data, fmt="toml" if suffix == ".toml" else "json")
    except ConfigError as exc:
        exc.args = (f"{path}: {exc.args[0]}",)
        exc.message = f"{path}: {exc.message}"
        raise
