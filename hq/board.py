"""Gateways as HQ sees them: :class:`GatewayBoard` keeps each gateway's last retained
state message (online or offline, bundle version, its own health judgement) and the
time of its newest ingested event, for the console, /api/console/stores, alerts
(:mod:`hq.alerts`) and live pushes (:attr:`GatewayBoard.listeners`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import aiomqtt
import msgspec

from aislecast.kernel import topics
from aislecast.kernel.counters import count
from aislecast.kernel.schema import BeaconHealth, Event, GatewayState, decode

__all__ = ["MAX_STATE_BYTES", "STATE_FILTER", "BoardStats", "GatewayBoard", "GatewayView"]

#: A state report bigger than this is dropped unread (256 beacons with 64-character ids
#: and zones take ~40 KB, typical ones ~26 KB, on top of the metrics).
MAX_STATE_BYTES: Final = 262144

# Every HQ worker subscribes (not shared): each one serves a console.
STATE_FILTER = topics.gateway_state("+", "+")


@dataclass(slots=True)
class GatewayView:
    store: str
    gateway: str
    status: str = "unknown"  # online / offline from the retained state; unknown if none yet
    version: str = ""
    bundle_version: int = 0
    state_at: float | None = None  # when HQ last received its state message
    last_event_at: float | None = None  # ts of the newest event ingested from it
    shoppers_present: int = 0
    outbox_rows: int = 0
    problem: str | None = None  # the gateway's own health judgement (gateway.health)
    warning: str | None = None


@dataclass(slots=True)
class BoardStats:
    states: int = count("gateway state messages applied")
    cleared: int = count("gateways cleared by an empty retained state")
    bad_states: int = count("gateway state messages dropped as undecodable")
    oversize_states: int = count("gateway state messages dropped unread as too big")


class GatewayBoard:
    """Gateways as HQ sees them, from retained state messages and ingested events."""

    def __init__(self) -> None:
        self._gws: dict[tuple[str, str], GatewayView] = {}
        self.stats = BoardStats()
        self.listeners: list[Callable[[str], None]] = []  # store id, after a state change
        # the beacons each gateway last reported (hq.fleet_health), and how many it left out
        self.beacons: dict[tuple[str, str], tuple[list[BeaconHealth], int]] = {}

    def _view(self, store: str, gateway: str) -> GatewayView:
        return self._gws.setdefault((store, gateway), GatewayView(store, gateway))

    def on_state(self, store: str, gateway: str, payload: bytes) -> None:
        if not payload:  # an empty retained message clears a decommissioned gateway
            self._gws.pop((store, gateway), None)
            self.beacons.pop((store, gateway), None)
            self.stats.cleared += 1
            self._changed(store)
            return
        if len(payload) > MAX_STATE_BYTES:
            self.stats.oversize_states += 1
            return
        try:
            st = decode(payload, GatewayState)
        except (msgspec.ValidationError, msgspec.DecodeError):
            self.stats.bad_states += 1
            return
        self.stats.states += 1
        v = self._view(store, gateway)
        v.status, v.version, v.bundle_version = st.status, st.version, st.bundle_version
        v.state_at = time.time()
        v.shoppers_present = int(st.metrics.get("shoppers_present", 0))
        v.outbox_rows = int(st.metrics.get("outbox_rows", 0))
        v.problem, v.warning = st.problem, st.warning
        if st.beacons is not None:
            self.beacons[(store, gateway)] = (st.beacons, st.beacons_omitted)
        self._changed(store)

    def _changed(self, store: str) -> None:
        for fn in self.listeners:
            fn(store)

    def on_events(self, events: list[Event]) -> None:
        """An :class:`~hq.ingest.Ingest` listener: each gateway's newest event time (one
        view looked up per gateway of the batch, not per event)."""
        newest: dict[tuple[str, str], float] = {}
        for e in events:
            if e.gateway is not None and newest.get(key := (e.store, e.gateway), -math.inf) < e.ts:
                newest[key] = e.ts
        for (store, gateway), ts in newest.items():
            v = self._view(store, gateway)
            v.last_event_at = max(v.last_event_at or ts, ts)

    async def on_state_message(self, msg: aiomqtt.Message) -> None:
        """HQ's router hands it the messages of :data:`STATE_FILTER`."""
        m = topics.parse(msg.topic.value)
        if m is not None and m.kind is topics.Kind.GATEWAY_STATE:
            assert m.store is not None and m.gateway is not None
            payload = msg.payload if isinstance(msg.payload, bytes | bytearray) else b""
            self.on_state(m.store, m.gateway, bytes(payload))
        else:
            self.stats.bad_states += 1

    def gateways(self, store: str) -> list[GatewayView]:
        return sorted((v for (s, _), v in self._gws.items() if s == store), key=lambda v: v.gateway)

    def views(self) -> list[GatewayView]:
        return list(self._gws.values())

    def stores(self) -> set[str]:
        return {s for s, _ in self._gws}
