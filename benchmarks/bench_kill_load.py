"""The load and the witnesses of the kill bench, on the broker, outside the gateway.

:class:`Phones` plays shoppers walking the store: each reports the beacon of the zone it
stands in (a :class:`~aislecast.kernel.schema.PhoneSighting` with its current rotating
token, as the reference phone app does) every ``report_s``, dwells a few seconds, walks
to the next zone, and after a few zones leaves; another shopper of the pool comes in.
Every zone entry is a decision of the gateway (the campaign of that zone, capped at one
offer per shopper), so offers are made all the time, and a shopper who got one just
before a kill is still standing there, re-triggering, when the gateway is back.

:class:`Wire` listens beside the phones: every offer published (any inbox), every
event batch the gateway published, and the gateway's retained state reports. The
load runs whether the gateway is up or not, as shoppers would.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import aiomqtt
import msgspec

from aislecast.kernel import topics
from aislecast.kernel.const import TOKEN_ROTATION_K
from aislecast.kernel.schema import SCHEMA_VERSION, EventBatch, GatewayState, PhoneSighting, encode
from aislecast.kernel.tokens import eid_for
from benchmarks.bench_kill_stack import GATEWAY, STORE, ZONES

__all__ = ["Phones", "Wire"]


@dataclass(slots=True)
class _Walk:
    inbox: str
    key: bytes
    zones: list[str]
    leg_end: float
    leg: int = 0


class Phones:
    """``active`` shoppers at a time out of ``pool`` (inbox, identity key) pairs."""

    def __init__(self, pool: list[tuple[str, bytes]], *, active: int, rng: random.Random,
                 report_s: float = 0.3, dwell_s: tuple[float, float] = (1.5, 3.5),
                 zones_per_visit: int = 3) -> None:
        self._pool = pool
        self._next = 0
        self.active = active
        self._rng = rng
        self.report_s = report_s
        self.dwell_s = dwell_s
        self.zones_per_visit = zones_per_visit
        self.sent = 0
        self.visits = 0

    def _walk(self, now: float) -> _Walk:
        inbox, key = self._pool[self._next % len(self._pool)]
        self._next += 1
        self.visits += 1
        return _Walk(inbox, key, self._rng.sample(ZONES, self.zones_per_visit),
                     now + self._rng.uniform(*self.dwell_s))

    async def run(self, port: int) -> None:
        """Report sightings until cancelled (reconnecting if the broker drops us)."""
        async with aiomqtt.Client("127.0.0.1", port, identifier="kill-phones") as client:
            now = time.time()
            walks = [self._walk(now) for _ in range(self.active)]
            # spread the walks over a dwell so that zone entries arrive evenly
            for w in walks:
                w.leg_end = now + self._rng.uniform(0, self.dwell_s[1])
            while True:
                now = time.time()
                for i, walk in enumerate(walks):
                    w = walk
                    if now >= w.leg_end:
                        w.leg += 1
                        w.leg_end = now + self._rng.uniform(*self.dwell_s)
                        if w.leg >= len(w.zones):
                            walks[i] = w = self._walk(now)
                    token = eid_for(w.key, now, TOKEN_ROTATION_K).hex()
                    payload = encode(PhoneSighting(v=SCHEMA_VERSION, token=token,
                                                   beacon=f"b-{w.zones[w.leg]}", rssi=-50, ts=now))
                    await client.publish(topics.sightings(STORE, w.inbox), payload, qos=0)
                    self.sent += 1
                await asyncio.sleep(self.report_s)


class _OfferSeen(msgspec.Struct):
    id: str
    inbox: str
    campaign: str


@dataclass(slots=True)
class Wire:
    """What crossed the broker: offers, the gateway's event ids, its state reports."""

    offers: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (inbox, campaign)
    deliveries: Counter[str] = field(default_factory=Counter)  # offer id -> times received
    events: set[str] = field(default_factory=set)
    state: GatewayState | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    bad: int = 0

    def _on(self, msg: aiomqtt.Message) -> None:
        payload = msg.payload if isinstance(msg.payload, bytes) else b""
        try:
            if msg.topic.matches(topics.subscription(topics.Kind.OFFERS)[0]):
                o = msgspec.json.decode(payload, type=_OfferSeen)
                self.offers[o.id] = (o.inbox, o.campaign)
                self.deliveries[o.id] += 1
            elif msg.topic.matches(topics.gateway_events(STORE, GATEWAY)):
                self.events.update(e.id for e in msgspec.json.decode(payload, type=EventBatch).events)
            else:
                self.state = msgspec.json.decode(payload, type=GatewayState)
                self.changed.set()
        except (msgspec.ValidationError, msgspec.DecodeError):
            self.bad += 1

    async def run(self, port: int, subscribed: asyncio.Event) -> None:
        async with aiomqtt.Client("127.0.0.1", port, identifier="kill-wire") as client:
            await client.subscribe(topics.subscription(topics.Kind.OFFERS)[0], qos=1)
            await client.subscribe(topics.gateway_events(STORE, GATEWAY), qos=1)
            await client.subscribe(topics.gateway_state(STORE, GATEWAY), qos=1)
            subscribed.set()
            async for msg in client.messages:
                self._on(msg)

    async def until_state(self, *, since: float, timeout: float,
                          outbox_empty: bool = False) -> bool:
        """Until a state report made at or after ``since`` says online with a bundle
        (and, with ``outbox_empty``, nothing left to deliver); False on timeout."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while True:
                    s = self.state
                    if s is not None and s.ts >= since and s.status == "online" \
                            and s.bundle_version > 0 and (not outbox_empty or (
                                s.metrics.get("outbox_rows", 1) == 0
                                and s.metrics.get("publisher_awaiting_ack", 1) == 0)):
                        return True
                    self.changed.clear()
                    await self.changed.wait()
        return False
