"""Compare a placement plan with what the store's gateways actually hear.

``HEARD`` is a JSON list with one object per (beacon, receiver)::

    [{"beacon": "aisle-3-b2", "receiver": "gw-back", "rssi": -63,
      "last_seen": "2025-03-01T09:30:00+01:00", "battery_mv": 2950},
     {"uuid": "9a6a56e5-...", "major": 42, "minor": 101, "rssi": -71,
      "last_seen": 1740817800.0}]

A beacon is named by its plan id (``beacon``) or by iBeacon ``uuid``/``major``/
``minor``; ``receiver``, ``battery_mv`` (from Eddystone-TLM) and extra fields are
optional. Each planned beacon is judged missing (never heard or silent too long),
weak (well below the RSSI the plan predicts), wrong zone (heard strongest by a receiver
in another zone than the one nearest its planned spot) or low battery.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Annotated, Final, Literal

import msgspec

from aislecast.kernel.errors import ConfigError
from firmware_config.plan import Plan, PlannedBeacon, PlannedReceiver, predicted_rssi

__all__ = [
    "DEFAULT_LOW_BATTERY_MV",
    "DEFAULT_MAX_AGE_S",
    "WEAK_MARGIN_DB",
    "BeaconStatus",
    "CheckReport",
    "Heard",
    "check_plan",
    "format_report",
    "load_heard",
    "parse_heard",
]

# Beacons advertise at least once a second (plan.ADV_INTERVALS_MS); five minutes of
# silence is hundreds of missed adverts, i.e. a dead, removed or shielded beacon.
DEFAULT_MAX_AGE_S: Final = 300.0
# A CR2032/CR2477 sits near 3.0 V most of its life and falls off a cliff below ~2.5 V;
# nRF52 beacons brown out around 2.0-2.2 V. 2,500 mV leaves weeks to swap the cell.
DEFAULT_LOW_BATTERY_MV: Final = 2500
# Indoor shadowing (shelves, shoppers) scatters RSSI with a standard deviation of 4-8 dB;
# 12 dB below the model is about two sigmas: a beacon behind metal, fallen, or
# programmed with the wrong tx power, not an unlucky reading.
WEAK_MARGIN_DB: Final = 12.0
# A receiver in another zone must beat the expected one by this much to call the beacon
# misplaced: below it, two receivers at similar distances trade places on noise alone.
WRONG_ZONE_MARGIN_DB: Final = 6.0

Issue = Literal["missing", "weak", "wrong_zone", "low_battery"]


class Heard(msgspec.Struct, kw_only=True):
    """One receiver's latest view of one beacon (unknown extra fields are ignored)."""

    rssi: Annotated[float, msgspec.Meta(ge=-130, le=20)]
    last_seen: float | Annotated[datetime, msgspec.Meta(tz=True)]
    beacon: str | None = None
    uuid: str | None = None
    major: int | None = None
    minor: int | None = None
    receiver: str | None = None
    battery_mv: Annotated[int, msgspec.Meta(ge=0, le=10_000)] | None = None

    @property
    def seen_ts(self) -> float:
        return self.last_seen.timestamp() if isinstance(self.last_seen, datetime) else (
            self.last_seen
        )


class BeaconStatus(msgspec.Struct, kw_only=True):
    id: str
    zone: str
    issues: list[Issue]
    detail: list[str]
    rssi: float | None = None
    expected_rssi: float | None = None
    receiver: str | None = None
    battery_mv: int | None = None
    age_s: float | None = None


class CheckReport(msgspec.Struct, kw_only=True):
    ok: bool
    store_id: str
    counts: dict[str, int]
    beacons: list[BeaconStatus]
    unknown: list[str]


def parse_heard(data: bytes) -> list[Heard]:
    """Decode a HEARD document; errors name the entry and field."""
    try:
        heard = msgspec.json.decode(data, type=list[Heard])
    except msgspec.ValidationError as exc:
        message, _, path = str(exc).partition(" - at `$")
        raise ConfigError(
            f"heard{path.rstrip('`')}", message[:1].lower() + message[1:],
            hint="each entry needs rssi (dBm), last_seen (epoch seconds or ISO 8601 with "
            "a time zone) and beacon, or uuid/major/minor",
        ) from exc
    except msgspec.DecodeError as exc:
        raise ConfigError("heard", f"not valid JSON: {exc}",
                          hint="give a JSON list of heard beacons") from exc
    for i, h in enumerate(heard):
        if h.beacon is None and (h.uuid is None or h.major is None or h.minor is None):
            raise ConfigError(f"heard[{i}]", "names no beacon",
                              hint="add beacon (plan id) or uuid, major and minor")
    return heard


def load_heard(path: Path) -> list[Heard]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError("heard", f"cannot read {path}: {exc.strerror}",
                          hint="check the path") from exc
    return parse_heard(data)


def _distance(b: PlannedBeacon, r: PlannedReceiver) -> float:
    return math.hypot(b.x_m - r.x_m, b.y_m - r.y_m)


def _judge(
    plan: Plan, b: PlannedBeacon, seen: list[Heard], *, now: float, max_age_s: float,
    low_battery_mv: int,
) -> BeaconStatus:
    receivers = {r.id: r for r in plan.receivers}
    status = BeaconStatus(id=b.id, zone=b.zone, issues=[], detail=[])
    if not seen:
        status.issues.append("missing")
        status.detail.append("never heard")
        return status
    newest = max(seen, key=lambda h: h.seen_ts)
    status.age_s = round(max(0.0, now - newest.seen_ts), 1)
    battery = next((h.battery_mv for h in sorted(seen, key=lambda h: -h.seen_ts)
                    if h.battery_mv is not None), None)
    status.battery_mv = battery
    if battery is not None and battery < low_battery_mv:
        status.issues.append("low_battery")
        status.detail.append(f"battery {battery} mV < {low_battery_mv} mV: replace the cell")
    fresh = [h for h in seen if now - h.seen_ts <= max_age_s]
    if not fresh:
        status.issues.append("missing")
        status.detail.append(f"silent for {status.age_s:.0f} s")
        return status

    def expected(h: Heard) -> float:
        rx = receivers.get(h.receiver or "")
        if rx is None:  # receiver position unknown: judge at the zone's coverage edge
            return b.edge_rssi_dbm
        return predicted_rssi(plan.radio, b.measured_power_dbm, _distance(b, rx))

    best = max(fresh, key=lambda h: h.rssi - expected(h))
    strongest = max(fresh, key=lambda h: h.rssi)
    status.rssi, status.receiver = strongest.rssi, strongest.receiver
    status.expected_rssi = round(expected(strongest), 1)
    if best.rssi - expected(best) < -WEAK_MARGIN_DB:
        status.issues.append("weak")
        status.detail.append(
            f"{best.rssi:g} dBm, plan predicts {expected(best):.0f} dBm: check mounting "
            f"and tx power ({b.tx_power_dbm} dBm)"
        )
    if plan.receivers and strongest.receiver in receivers:
        nearest = min(plan.receivers, key=lambda r: _distance(b, r))
        got = receivers[strongest.receiver]
        at_nearest = max((h.rssi for h in fresh if h.receiver == nearest.id), default=-math.inf)
        if got.zone != nearest.zone and strongest.rssi - at_nearest >= WRONG_ZONE_MARGIN_DB:
            status.issues.append("wrong_zone")
            status.detail.append(
                f"heard strongest by {got.id} ({got.zone}) at {strongest.rssi:g} dBm, but "
                f"{nearest.id} ({nearest.zone}) is nearest its planned spot in {b.zone}: "
                "is it stuck up in the right place?"
            )
    return status


def check_plan(
    plan: Plan, heard: list[Heard], *, now: float, max_age_s: float = DEFAULT_MAX_AGE_S,
    low_battery_mv: int = DEFAULT_LOW_BATTERY_MV,
) -> CheckReport:
    """Judge every planned beacon against what was heard."""
    by_id = {b.id: b for b in plan.beacons}
    by_ids = {(b.ibeacon_uuid, b.major, b.minor): b for b in plan.beacons}
    seen: dict[str, list[Heard]] = {b.id: [] for b in plan.beacons}
    unknown: set[str] = set()
    for h in heard:
        if h.beacon is not None:
            found = by_id.get(h.beacon)
            name = h.beacon
        else:
            found = by_ids.get(((h.uuid or "").lower(), h.major or 0, h.minor or 0))
            name = f"{h.uuid}/{h.major}/{h.minor}"
            # Other shops' beacons next door are none of our business.
            if found is None and (h.uuid or "").lower() != plan.ibeacon_uuid:
                continue
        if found is None:
            unknown.add(name)
        else:
            seen[found.id].append(h)
    statuses = [
        _judge(plan, b, seen[b.id], now=now, max_age_s=max_age_s,
               low_battery_mv=low_battery_mv)
        for b in plan.beacons
    ]
    counts = {k: sum(k in s.issues for s in statuses)
              for k in ("missing", "weak", "wrong_zone", "low_battery")}
    counts["ok"] = sum(not s.issues for s in statuses)
    counts["unknown"] = len(unknown)
    return CheckReport(
        ok=counts["ok"] == len(statuses) and not unknown, store_id=plan.store_id,
        counts=counts, beacons=statuses, unknown=sorted(unknown),
    )


def format_report(report: CheckReport) -> str:
    """A fixed-width table for a terminal, problems first, then a summary line."""
    rows = [("BEACON", "ZONE", "STATUS", "RSSI", "EXPECT", "BATT_MV", "AGE_S", "NOTE")]
    rows.extend(
        (
            s.id, s.zone, ",".join(s.issues) or "ok",
            "-" if s.rssi is None else f"{s.rssi:g}",
            "-" if s.expected_rssi is None else f"{s.expected_rssi:.0f}",
            "-" if s.battery_mv is None else str(s.battery_mv),
            "-" if s.age_s is None else f"{s.age_s:.0f}",
            "; ".join(s.detail),
        )
        for s in sorted(report.beacons, key=lambda s: (not s.issues, s.zone, s.id))
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1]
             for r in rows]
    lines.extend(f"unknown beacon heard (not in plan): {u}" for u in report.unknown)
    c = report.counts
    lines.append(
        f"{len(report.beacons)} beacons: {c['ok']} ok, {c['missing']} missing, "
        f"{c['weak']} weak, {c['wrong_zone']} wrong zone, {c['low_battery']} low battery; "
        f"{c['unknown']} unknown"
    )
    return "\n".join(line.rstrip() for line in lines) + "\n"
