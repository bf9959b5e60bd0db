"""The load and the witnesses of the kill bench, on the broker, outside the gateway.

:class:`Phones` plays shoppers walking the store: each reports the beacon of the zone it
stands in (a :class:`~aislecast.kernel.schema.PhoneSighting` with its current rotating
token, as the reference phone app does) every ``report_s``, dwells a few seconds, walks
to the next zone, and after a few zones leaves; another shopper of the pool comes in.
Every zone entry is a decision of the gateway (the campaign of that zone, capped at one
offer per shopper), so offers are made all the time. The store stands still while the
gateway is down (:meth:`Phones.hold`): at a kill every shopper stops where they are,
still reporting, until the wire shows a decision a restarted gateway made for them, so a
shopper who got an offer just before a kill is still standing there, re-triggering the
same campaign, when the gateway is back, however long the restart takes.

:class:`Wire` listens beside the phones: every offer published (any inbox), every
event batch the gateway published (and the latest decision per shopper in them), and
the gateway's retained state reports. The phones report whether the gateway is up or
not, as shoppers' phones would.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
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
    held: float | None = None  # standing still since a kill, until decided after this time


_NEVER = float("-inf")


class Phones:
    """``active`` shoppers at a time out of ``pool`` (inbox, identity key) pairs;
    ``decided`` (inbox -> time of the latest decision the gateway published for them,
    :attr:`Wire.decided`) releases the shoppers held at a kill."""

    def __init__(self, pool: list[tuple[str, bytes]], *, active: int, rng: random.Random,
                 report_s: float = 0.3, dwell_s: tuple[float, float] = (1.5, 3.5),
                 zones_per_visit: int = 3, decided: Mapping[str, float] | None = None) -> None:
        self._pool = pool
        self._decided: Mapping[str, float] = {} if decided is None else decided
        self._walks: list[_Walk] = []
        self.released = asyncio.Event()  # no shopper held
        self.released.set()
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

    def hold(self, since: float) -> None:
        """The gateway is down: every shopper stands still (reporting the same zone, the
        dwell clock stopped) until a decision for them made after ``since`` is seen."""
        for w in self._walks:
            w.held = since
        if self._walks:
            self.released.clear()

    @property
    def held(self) -> int:
        return sum(1 for w in self._walks if w.held is not None)

    def standing(self, inbox: str, zone: str | None) -> bool:
        """Whether ``inbox``'s phone reports ``zone`` now."""
        return any(w.inbox == inbox and w.zones[w.leg] == zone for w in self._walks)

    def _release(self, now: float) -> None:
        for w in self._walks:
            if w.held is not None and self._decided.get(w.inbox, _NEVER) > w.held:
                w.leg_end += now - w.held  # the downtime does not count as dwell
                w.held = None
        if not self.released.is_set() and self.held == 0:
            self.released.set()

    async def run(self, port: int) -> None:
        """Report sightings until cancelled (reconnecting if the broker drops us)."""
        async with aiomqtt.Client("127.0.0.1", port, identifier="kill-phones") as client:
            now = time.time()
            walks = self._walks = [self._walk(now) for _ in range(self.active)]
            # spread the walks over a dwell so that zone entries arrive evenly
            for w in walks:
                w.leg_end = now + self._rng.uniform(0, self.dwell_s[1])
            while True:
                now = time.time()
                self._release(now)
                for i, walk in enumerate(walks):
                    w = walk
                    if w.held is None and now >= w.leg_end:
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
    issued_at: float = 0.0
    zone: str | None = None


@dataclass(slots=True)
class Wire:
    """What crossed the broker: offers, the gateway's event ids and decisions, its state
    reports."""

    offers: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (inbox, campaign)
    deliveries: Counter[str] = field(default_factory=Counter)  # offer id -> times received
    events: set[str] = field(default_factory=set)
    decided: dict[str, float] = field(default_factory=dict)  # inbox -> latest decision's ts
    state: GatewayState | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    offered: asyncio.Event = field(default_factory=asyncio.Event)  # a new offer id arrived
    bad: int = 0
    _fresh: list[_OfferSeen] = field(default_factory=list)  # new offers, for until_offer

    def _on(self, msg: aiomqtt.Message) -> None:
        payload = msg.payload if isinstance(msg.payload, bytes) else b""
        try:
            if msg.topic.matches(topics.subscription(topics.Kind.OFFERS)[0]):
                o = msgspec.json.decode(payload, type=_OfferSeen)
                if o.id not in self.offers:
                    self._fresh.append(o)
                    self.offered.set()
                self.offers[o.id] = (o.inbox, o.campaign)
                self.deliveries[o.id] += 1
            elif msg.topic.matches(topics.gateway_events(STORE, GATEWAY)):
                for e in msgspec.json.decode(payload, type=EventBatch).events:
                    self.events.add(e.id)
                    if e.kind == "decision" and e.inbox and e.ts > self.decided.get(e.inbox, _NEVER):
                        self.decided[e.inbox] = e.ts
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

    async def until_offer(self, *, decided_since: float, timeout: float,
                          standing: Callable[[str, str | None], bool]) -> bool:
        """Until an offer arrives that was decided at or after ``decided_since`` for a
        shopper ``standing`` in its zone (right then); False on timeout."""
        self._fresh.clear()  # only what arrives from now on (and the list stays short)
        seen = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while True:
                    fresh, seen = self._fresh[seen:], len(self._fresh)
                    if any(o.issued_at >= decided_since and standing(o.inbox, o.zone)
                           for o in fresh):
                        return True
                    self.offered.clear()
                    await self.offered.wait()
        return False
