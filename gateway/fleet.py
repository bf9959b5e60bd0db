"""Fixed-beacon fleet health: last heard, RSSI at the gateway, TLM battery and temperature.

The bundle's beacons are the plan. The gateway's hot path finds a beacon by the bytes
that identify it on air (:meth:`FleetHealth.ibeacon_key`, :meth:`FleetHealth.uid_key`:
no decoding, one dictionary lookup) and stamps the :class:`BeaconStatus` in place.
Eddystone TLM frames carry no beacon id: a beacon sends them from the same address as
its id frames, so TLM is matched through the address last seen with an id frame and
decoded by :func:`edge.decoders.decode_eddystone`.

:meth:`FleetHealth.check` (run from the gateway's ticker) returns an alert when a
planned beacon goes unheard for ``unheard_after_s`` (counted from when the plan was
loaded, for beacons never heard) or reports a battery under ``low_battery_mv``, and
one ``recovered`` alert when it is fine again. The gateway turns each into a
``beacon_health`` event and a warning log line; :meth:`FleetHealth.metrics` feeds the
gateway metrics. :meth:`FleetHealth.report` is the bounded summary carried in the
retained state report to HQ (:mod:`hq.fleet_health`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Final, Literal

from aislecast.kernel.schema import MAX_REPORTED_BEACONS, Beacon, BeaconHealth
from edge.decoders import decode_eddystone
from edge.frames import EddystoneTLM

__all__ = [
    "LOW_BATTERY_MV",
    "UNHEARD_AFTER_S",
    "BeaconAlert",
    "BeaconStatus",
    "FleetHealth",
]

# Beacons advertise every 100-1,000 ms; a minute of silence is hundreds of lost frames,
# far beyond dropouts, yet short enough for staff to act the same shift.
UNHEARD_AFTER_S: Final = 60.0
# CR2032/CR2477 coin cells read ~3,000 mV fresh and fall off a cliff below ~2,500 mV
# (beacon vendors' low-battery thresholds sit at 2,400-2,600 mV).
LOW_BATTERY_MV: Final = 2500

AlertReason = Literal["unheard", "low_battery", "recovered"]


@dataclass(slots=True)
class BeaconStatus:
    id: str
    zone: str
    planned_at: float
    last_seen: float | None = None
    rssi: int | None = None
    address: str | None = None
    battery_mv: int | None = None
    temperature_c: float | None = None
    tlm_at: float | None = None
    adv_count: int | None = None
    uptime_s: float | None = None
    heard: int = 0
    alert: AlertReason | None = None

    def seen(self, rssi: int, ts: float) -> None:
        self.last_seen = ts
        self.rssi = rssi
        self.heard += 1


@dataclass(frozen=True, slots=True)
class BeaconAlert:
    beacon: str
    zone: str
    reason: AlertReason
    detail: dict[str, float | int | str]


class FleetHealth:
    def __init__(self, *, unheard_after_s: float = UNHEARD_AFTER_S,
                 low_battery_mv: int = LOW_BATTERY_MV) -> None:
        self.unheard_after_s = unheard_after_s
        self.low_battery_mv = low_battery_mv
        self.beacons: dict[str, BeaconStatus] = {}
        self.by_ibeacon: dict[bytes, BeaconStatus] = {}
        self.by_uid: dict[bytes, BeaconStatus] = {}
        self._by_address: dict[str, BeaconStatus] = {}
        self.tlm_frames = 0
        self.tlm_unmatched = 0

    @staticmethod
    def ibeacon_key(beacon_uuid: str, major: int, minor: int) -> bytes:
        """Bytes 2-22 of the iBeacon manufacturer payload: UUID, major, minor."""
        return uuid.UUID(beacon_uuid).bytes + major.to_bytes(2, "big") + minor.to_bytes(2, "big")

    @staticmethod
    def uid_key(namespace: str, instance: str) -> bytes:
        """Bytes 2-18 of the Eddystone-UID service data: namespace and instance."""
        return bytes.fromhex(namespace) + bytes.fromhex(instance)

    def plan(self, beacons: list[Beacon], ts: float) -> None:
        """Adopt the bundle's beacons; known ones keep their history."""
        old = self.beacons
        self.beacons = {}
        self.by_ibeacon.clear()
        self.by_uid.clear()
        for b in beacons:
            st = old.get(b.id)
            if st is None or st.zone != b.zone:
                st = BeaconStatus(b.id, b.zone, ts)
            self.beacons[b.id] = st
            try:
                if b.uuid is not None and b.major is not None and b.minor is not None:
                    self.by_ibeacon[self.ibeacon_key(b.uuid, b.major, b.minor)] = st
                if b.namespace is not None and b.instance is not None:
                    self.by_uid[self.uid_key(b.namespace, b.instance)] = st
            except (ValueError, OverflowError):
                continue  # a malformed id in the bundle: planned, but never matched on air
        self._by_address = {a: st for a, st in self._by_address.items() if st.id in self.beacons}

    def heard(self, st: BeaconStatus, address: str, rssi: int, ts: float) -> None:
        """An id frame of a planned beacon (hot path: the status was found by bytes)."""
        st.last_seen = ts
        st.rssi = rssi
        st.heard += 1
        if st.address != address:
            if st.address is not None:
                self._by_address.pop(st.address, None)
            st.address = address
            self._by_address[address] = st

    def telemetry(self, address: str, service_data: bytes, ts: float) -> bool:
        """An Eddystone TLM frame; True when it was matched to a planned beacon."""
        self.tlm_frames += 1
        st = self._by_address.get(address)
        frame = decode_eddystone(service_data) if st is not None else None
        if st is None or not isinstance(frame, EddystoneTLM):
            self.tlm_unmatched += 1
            return False
        st.battery_mv = frame.battery_mv
        st.temperature_c = frame.temperature_c
        st.adv_count = frame.adv_count
        st.uptime_s = frame.uptime_s
        st.tlm_at = ts
        return True

    def _problem(self, st: BeaconStatus, ts: float) -> AlertReason | None:
        since = st.last_seen if st.last_seen is not None else st.planned_at
        if ts - since > self.unheard_after_s:
            return "unheard"
        if st.battery_mv is not None and 0 < st.battery_mv < self.low_battery_mv:
            return "low_battery"
        return None

    def check(self, ts: float) -> list[BeaconAlert]:
        """Alerts for beacons whose state changed since the last check."""
        out: list[BeaconAlert] = []
        for st in self.beacons.values():
            problem = self._problem(st, ts)
            if problem == st.alert:
                continue
            reason: AlertReason = problem or "recovered"
            st.alert = problem
            detail: dict[str, float | int | str] = {}
            if st.last_seen is not None:
                detail["last_seen_age_s"] = round(ts - st.last_seen, 1)
            if st.rssi is not None:
                detail["rssi"] = st.rssi
            if st.battery_mv is not None:
                detail["battery_mv"] = st.battery_mv
            if st.temperature_c is not None:
                detail["temperature_c"] = round(st.temperature_c, 1)
            out.append(BeaconAlert(st.id, st.zone, reason, detail))
        return out

    def metrics(self, ts: float) -> dict[str, float]:
        sts = list(self.beacons.values())
        batteries = [s.battery_mv for s in sts if s.battery_mv]
        return {
            "beacons_planned": len(sts),
            "beacons_heard": sum(1 for s in sts if s.last_seen is not None
                                 and ts - s.last_seen <= self.unheard_after_s),
            "beacons_unheard": sum(1 for s in sts if s.alert == "unheard"),
            "beacons_low_battery": sum(1 for s in sts if s.alert == "low_battery"),
            "beacon_battery_min_mv": min(batteries) if batteries else 0,
            "tlm_frames": self.tlm_frames,
            "tlm_unmatched": self.tlm_unmatched,
        }

    def report(self, ts: float, cap: int = MAX_REPORTED_BEACONS) -> tuple[list[BeaconHealth], int]:
        """The beacons for the state report, those with an alert first, at most ``cap``
        of them, and how many were left out past the cap."""
        sts = sorted(self.beacons.values(), key=lambda s: (s.alert is None, s.id))
        out = [BeaconHealth(id=s.id[:64] or "?", zone=s.zone[:64],
                            last_seen_age_s=(None if s.last_seen is None
                                             else round(max(0.0, ts - s.last_seen), 1)),
                            rssi=s.rssi if s.rssi is None else max(-128, min(127, s.rssi)),
                            battery_mv=(s.battery_mv if s.battery_mv is None
                                        else max(0, min(65535, s.battery_mv))),
                            alert=("unheard" if s.alert == "unheard" else
                                   "low_battery" if s.alert == "low_battery" else None))
               for s in sts[:cap]]
        return out, max(0, len(sts) - cap)

    def status(self) -> list[BeaconStatus]:
        return sorted(self.beacons.values(), key=lambda s: s.id)
