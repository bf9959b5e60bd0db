"""Pooling sightings between the gateways of one store, so the nearest one wins
(docs/architecture.md#presence).

Every gateway publishes a compact :class:`~aislecast.kernel.presence_schema.SightingSummary`
of its own evidence (best zone, distance, whether it claims the shopper, evidence age)
on ``px/v1/stores/{store}/gateways/{gateway}/presence`` and subscribes to its peers'
(``px/v1/stores/{store}/gateways/+/presence``). A peer's entries go into the local
:class:`~gateway.presence.PresenceEngine` as competing candidates, which hands a
shopper over when a peer's evidence is nearer by the hysteresis margin and resolves
two simultaneous claims the same way on both sides.

A gateway that has not heard a peer for ``PEER_TIMEOUT_S`` publishes only every
``LONELY_EVERY_S`` (a hello so peers find it), not every second: a one-gateway store
sends almost nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import msgspec

from aislecast.kernel import topics
from aislecast.kernel.presence_schema import ShopperSighting, SightingSummary
from aislecast.kernel.schema import SCHEMA_VERSION, decode, encode
from gateway.presence import PresenceEngine, PresenceEvent

__all__ = [
    "LONELY_EVERY_S",
    "PEER_TIMEOUT_S",
    "POOL_EVERY_S",
    "POOL_EXPIRY_S",
    "PoolStats",
    "SightingPool",
]

# Summaries every second: well inside the engine's 3 s peer staleness, so one lost
# QoS 0 message does not make a peer's evidence drop out.
POOL_EVERY_S: Final = 1.0
# MQTT v5 message expiry: a summary is worthless once the engine would ignore it.
POOL_EXPIRY_S: Final = 3
# No peer heard for a minute: publish a hello every 10 s only.
PEER_TIMEOUT_S: Final = 60.0
LONELY_EVERY_S: Final = 10.0
# One message carries at most this many shoppers (~60 bytes each -> ~30 KiB).
MAX_PER_MESSAGE: Final = 500


@dataclass(slots=True)
class PoolStats:
    sent: int = 0  # summary messages built for the peers
    received: int = 0  # peers' summaries taken in
    bad: int = 0  # peers' summaries that did not decode or did not match their topic
    sightings_in: int = 0  # shopper entries in the summaries taken in


class SightingPool:
    def __init__(self, engine: PresenceEngine, store: str, gateway: str) -> None:
        self.engine = engine
        self.store = store
        self.gateway = gateway
        self.topic = topics.gateway_presence(store, gateway)
        self.stats = PoolStats()
        self._peer_heard = -PEER_TIMEOUT_S * 2
        self._next_send = 0.0

    def due(self, ts: float) -> bool:
        """Time to publish? Every second with peers around, else a slow hello."""
        if ts < self._next_send:
            return False
        lonely = ts - self._peer_heard > PEER_TIMEOUT_S
        self._next_send = ts + (LONELY_EVERY_S if lonely else POOL_EVERY_S)
        return True

    def build(self, ts: float, unix_now: float) -> list[bytes]:
        """This gateway's summaries as payloads (none when it hears nobody)."""
        items = [ShopperSighting(s.shopper, s.zone, max(round(s.distance_m, 2), 0.01), s.claimed,
                                 min(round(s.age_s, 2), 3_600.0))
                 for s in self.engine.summaries(ts)]
        out = [encode(SightingSummary(SCHEMA_VERSION, self.store, self.gateway, unix_now,
                                      items[i:i + MAX_PER_MESSAGE]))
               for i in range(0, len(items), MAX_PER_MESSAGE)]
        self.stats.sent += len(out)
        return out

    def ingest(self, peer: str, payload: bytes, ts: float) -> list[PresenceEvent] | None:
        """A summary from gateway ``peer`` of this store (the topic's gateway level)
        received at monotonic ``ts``; None when it is malformed."""
        if peer == self.gateway:
            return []  # our own message echoed by the broker
        try:
            msg = decode(payload, SightingSummary)
        except (msgspec.ValidationError, msgspec.DecodeError):
            self.stats.bad += 1
            return None
        if msg.store != self.store or msg.gateway != peer:
            self.stats.bad += 1
            return None
        self.stats.received += 1
        self._peer_heard = ts
        out: list[PresenceEvent] = []
        for s in msg.sightings:
            self.stats.sightings_in += 1
            out += self.engine.observe_peer(peer, s.inbox, s.zone, s.distance_m,
                                            claimed=s.claimed, ts=ts, age_s=s.age_s)
        return out
