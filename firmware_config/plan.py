"""Beacon placement plan: how many beacons per zone, where, and how to configure each.

From a :class:`~firmware_config.floorplan.FloorPlan` the plan lays each zone out as a
grid of roughly square cells (one beacon per ``radio.area_per_beacon_m2``) with a
beacon at each cell centre. Each beacon gets the lowest tx power whose signal, by the
log-distance model ``RSSI(d) = P1m - 10 n log10(d)``, still reaches
``radio.edge_rssi_dbm`` at its cell's corner, and an advertising interval that gives a
passing shopper's phone enough adverts. Identities are deterministic: one iBeacon UUID
per store, major = store number, minor = zone number x 100 + beacon number (so adding a
beacon to one zone renumbers no other), and the matching Eddystone-UID.
"""

from __future__ import annotations

import csv
import io
import math
import uuid
from pathlib import Path
from typing import Final

import msgspec

from aislecast.kernel.errors import ConfigError
from firmware_config.floorplan import FloorPlan, Radio, Zone

__all__ = [
    "ADV_INTERVALS_MS",
    "CSV_COLUMNS",
    "TX_LEVELS_DBM",
    "Plan",
    "PlannedBeacon",
    "PlannedReceiver",
    "PlannedZone",
    "load_plan",
    "make_plan",
    "plan_to_csv",
    "plan_to_json",
    "predicted_rssi",
    "store_uuid",
]

# Tx power steps of the Nordic nRF52 radio inside most retail beacons; -40/-30 dBm are
# left out because they cover under a metre, +8 dBm because it costs battery and bleeds
# into neighbouring zones more than it helps.
TX_LEVELS_DBM: Final = (-20, -16, -12, -8, -4, 0, 4)
# Apple's recommended iBeacon advertising intervals (Accessory Design Guidelines): phones'
# scan windows are tuned to them. 100 ms is the fastest beacons commonly allow.
ADV_INTERVALS_MS: Final = (100.0, 152.5, 211.25, 318.75, 417.5, 546.25, 760.0, 852.5, 1022.5)
# Walking pace per zone kind: people stride through an entrance (~1.2 m/s, the usual
# pedestrian figure), browse aisles at ~0.8 m/s and shuffle at checkouts (~0.5 m/s).
_WALK_M_S: Final[dict[str, float]] = {
    "entrance": 1.2, "aisle": 0.8, "checkout": 0.5, "display": 0.6, "service": 0.6,
    "other": 0.8,
}
# Adverts a phone should get while crossing a zone: the presence smoother wants ~4 samples,
# and a phone's duty-cycled background scan catches about half of what is sent.
_ADVERTS_PER_PASS: Final = 8
# Minor = zone number x 100 + beacon number: two decimal digits per zone keeps the number
# readable by staff ("minor 305 is beacon 5 of zone 3") and bounds zones at 654.
_MINOR_ZONE_STRIDE: Final = 100
# Closer than 1 m the far-field model no longer holds; predict as if at 1 m, which under-
# rather than over-states the RSSI and so never makes a healthy beacon look weak.
_MIN_MODEL_DISTANCE_M: Final = 1.0
# Eddystone tx power is calibrated at 0 m: the spec says to add 41 dB to the 1 m value.
_EDDYSTONE_0M_OFFSET_DB: Final = 41
# Fixed namespace for the per-store UUIDs: uuid5 of it and the store id is stable across
# machines and releases, so re-running the plan never reprograms a beacon.
_UUID_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "urn:aislecast:ibeacon-store")


class PlannedBeacon(msgspec.Struct, kw_only=True):
    id: str
    zone: str
    x_m: float
    y_m: float
    tx_power_dbm: int
    measured_power_dbm: int
    eddystone_tx_power_dbm: int
    interval_ms: float
    coverage_radius_m: float
    edge_rssi_dbm: float
    ibeacon_uuid: str
    major: int
    minor: int
    eddystone_namespace: str
    eddystone_instance: str
    warning: str | None = None


class PlannedZone(msgspec.Struct, kw_only=True):
    id: str
    kind: str
    area_m2: float
    beacons: int
    receivers: list[str] = []


class PlannedReceiver(msgspec.Struct, kw_only=True):
    id: str
    zone: str
    x_m: float
    y_m: float


class Plan(msgspec.Struct, kw_only=True):
    v: int = 1
    store_id: str
    store_number: int
    ibeacon_uuid: str
    eddystone_namespace: str
    radio: Radio
    zones: list[PlannedZone]
    receivers: list[PlannedReceiver]
    beacons: list[PlannedBeacon]


CSV_COLUMNS: Final = tuple(PlannedBeacon.__struct_fields__)


def store_uuid(store_id: str) -> uuid.UUID:
    """The iBeacon proximity UUID of a store: the same for every run and machine."""
    return uuid.uuid5(_UUID_NAMESPACE, store_id)


def predicted_rssi(radio: Radio, measured_power_dbm: float, distance_m: float) -> float:
    """Log-distance model: RSSI at ``distance_m`` for a beacon calibrated at 1 m."""
    d = max(distance_m, _MIN_MODEL_DISTANCE_M)
    return measured_power_dbm - 10.0 * radio.path_loss_exponent * math.log10(d)


def _grid(zone: Zone, radio: Radio) -> tuple[int, int]:
    """Columns and rows of roughly square cells of about ``area_per_beacon_m2`` each."""
    side = math.sqrt(radio.area_per_beacon_m2)
    if zone.max_radius_m is not None:
        # A cell's corner must lie within the zone's presence radius of its centre.
        side = min(side, zone.max_radius_m * math.sqrt(2.0))
    return max(1, math.ceil(zone.width_m / side - 1e-9)), max(
        1, math.ceil(zone.depth_m / side - 1e-9)
    )


def _tx_power(radio: Radio, radius_m: float) -> tuple[int, str | None]:
    """The lowest tx level reaching ``edge_rssi_dbm`` at ``radius_m``, or the highest."""
    for level in TX_LEVELS_DBM:
        if predicted_rssi(radio, radio.measured_power_dbm + level, radius_m) >= (
            radio.edge_rssi_dbm
        ):
            return level, None
    return TX_LEVELS_DBM[-1], (
        f"even {TX_LEVELS_DBM[-1]} dBm does not reach {radio.edge_rssi_dbm} dBm at "
        f"{radius_m:.1f} m: lower area_per_beacon_m2"
    )


def _interval_ms(kind: str, radius_m: float) -> float:
    """The slowest standard interval that still gives a passing phone enough adverts."""
    crossing_s = 2.0 * radius_m / _WALK_M_S.get(kind, _WALK_M_S["other"])
    wanted_ms = 1000.0 * crossing_s / _ADVERTS_PER_PASS
    fitting = [i for i in ADV_INTERVALS_MS if i <= wanted_ms]
    return fitting[-1] if fitting else ADV_INTERVALS_MS[0]


def make_plan(fp: FloorPlan) -> Plan:
    """Place and configure every beacon of ``fp``."""
    radio, store = fp.radio, fp.store
    max_zones = 0xFFFF // _MINOR_ZONE_STRIDE - 1
    if len(fp.zones) > max_zones:
        raise ConfigError("zones", f"{len(fp.zones)} zones, at most {max_zones} fit in "
                          "the iBeacon minor", hint="merge small zones")
    sid = store_uuid(store.id)
    namespace = (sid.bytes[:4] + sid.bytes[10:]).hex()  # Eddystone's "elided UUID"
    zones: list[PlannedZone] = []
    beacons: list[PlannedBeacon] = []
    for zi, zone in enumerate(fp.zones, start=1):
        cols, rows = _grid(zone, radio)
        if cols * rows >= _MINOR_ZONE_STRIDE:
            raise ConfigError(
                f"zones[{zi - 1}]", f"zone {zone.id!r} needs {cols * rows} beacons, at "
                f"most {_MINOR_ZONE_STRIDE - 1} fit", hint="split it into smaller zones",
            )
        cw, ch = zone.width_m / cols, zone.depth_m / rows
        radius = math.hypot(cw, ch) / 2.0
        tx, warning = _tx_power(radio, radius)
        measured = radio.measured_power_dbm + tx
        interval = _interval_ms(zone.kind, radius)
        for k in range(cols * rows):
            row, col = divmod(k, cols)
            minor = zi * _MINOR_ZONE_STRIDE + k + 1
            beacons.append(PlannedBeacon(
                id=f"{zone.id}-b{k + 1}", zone=zone.id,
                x_m=round(zone.x_m + (col + 0.5) * cw, 2),
                y_m=round(zone.y_m + (row + 0.5) * ch, 2),
                tx_power_dbm=tx, measured_power_dbm=measured,
                eddystone_tx_power_dbm=measured + _EDDYSTONE_0M_OFFSET_DB,
                interval_ms=interval, coverage_radius_m=round(radius, 2),
                edge_rssi_dbm=round(predicted_rssi(radio, measured, radius), 1),
                ibeacon_uuid=str(sid), major=store.number, minor=minor,
                eddystone_namespace=namespace,
                eddystone_instance=f"0000{store.number:04x}{minor:04x}",
                warning=warning,
            ))
        zones.append(PlannedZone(
            id=zone.id, kind=zone.kind, area_m2=round(zone.area_m2, 2), beacons=cols * rows,
            receivers=[r.id for r in fp.receivers if r.zone == zone.id],
        ))
    return Plan(
        store_id=store.id, store_number=store.number, ibeacon_uuid=str(sid),
        eddystone_namespace=namespace, radio=radio, zones=zones,
        receivers=[PlannedReceiver(id=r.id, zone=r.zone, x_m=r.x_m, y_m=r.y_m)
                   for r in fp.receivers],
        beacons=beacons,
    )


def plan_to_json(plan: Plan) -> bytes:
    """The plan as indented JSON, ending in a newline."""
    return msgspec.json.format(msgspec.json.encode(plan), indent=2) + b"\n"


def plan_to_csv(plan: Plan) -> str:
    """One row per beacon, what staff need to program and stick it up."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for b in plan.beacons:
        writer.writerow(["" if (v := getattr(b, c)) is None else v for c in CSV_COLUMNS])
    return out.getvalue()


def load_plan(path: Path) -> Plan:
    """Read a plan written by :func:`plan_to_json`; errors name the field."""
    try:
        return msgspec.json.decode(path.read_bytes(), type=Plan)
    except OSError as exc:
        raise ConfigError("plan", f"cannot read {path}: {exc.strerror}",
                          hint="check the path") from exc
    except msgspec.ValidationError as exc:
        raise ConfigError("plan", f"{path}: {exc}",
                          hint="regenerate it with `aislecast beacons plan`") from exc
    except msgspec.DecodeError as exc:
        raise ConfigError("plan", f"{path} is not valid JSON: {exc}",
                          hint="regenerate it with `aislecast beacons plan`") from exc
