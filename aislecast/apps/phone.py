"""The reference shopper client: holds an enrollment, receives offers, reports feedback.

It connects with a persistent session (clean start off, session expiry), so offers
published while the phone was away arrive when it reconnects, unless their MQTT message
expiry (= offer validity) has passed; an offer that arrives past ``expires_at`` anyway
is dropped and counted, never shown.

Feedback is kept until HQ acknowledges it on ``…/feedback/ack`` and resent meanwhile:
HQ reads feedback through a shared subscription, which a restarted Mosquitto 2.0 does
not restore, so a PUBACK alone does not mean HQ has it (HQ stores by id: resends are
harmless).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import aiomqtt
import msgspec

from aislecast.kernel import topics
from aislecast.kernel.mqtt import MqttLink, MqttSettings
from aislecast.kernel.schema import (
    SCHEMA_VERSION,
    Feedback,
    FeedbackAck,
    FeedbackKind,
    Offer,
    decode,
    encode,
)
from aislecast.kernel.tokens import eid_for

__all__ = ["Phone", "PhoneBehaviour", "PhoneStats", "with_login"]


def with_login(mqtt: MqttSettings, username: str | None, password: str | None) -> MqttSettings:
    """``mqtt`` with the broker login an enrolment returned (``broker_username`` = the
    inbox, ``broker_password``); unchanged when the enrolment carried none."""
    if username is None:
        return mqtt
    return dataclasses.replace(mqtt, username=username, password=password)

# HQ acknowledges stored feedback within milliseconds when up; resend after 10 s.
_FEEDBACK_ACK_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class PhoneBehaviour:
    open_p: float = 0.6
    click_p: float = 0.5  # of opened
    redeem_p: float = 0.3  # of clicked
    react_s: tuple[float, float] = (0.2, 1.5)


@dataclass(slots=True)
class PhoneStats:
    offers_received: int = 0
    offers_late: int = 0
    duplicates: int = 0
    bad_payloads: int = 0
    feedback_resent: int = 0
    feedback_acked: int = 0
    opened: int = 0
    clicked: int = 0
    redeemed: int = 0
    latencies_s: list[float] = field(default_factory=list)


class Phone:
    def __init__(
        self,
        mqtt: MqttSettings,
        *,
        inbox: str,
        identity_key: bytes,
        rotation_k: int,
        behaviour: PhoneBehaviour | None = None,
        rng: random.Random | None = None,
        on_offer: Callable[[Offer], None] | None = None,
        role: str = "app",
    ) -> None:
        """``role`` names this connection in its client id (``phone-INBOX-ROLE``), so two
        commands of one phone on an open broker do not take over each other's session.
        A broker with ``use_username_as_clientid`` (every authenticated listener here)
        gives both the username as client id whatever they ask: one process must do
        both there (``aislecast phone listen --sightings-stdin``)."""
        self.inbox = inbox
        self.identity_key = identity_key
        self.rotation_k = rotation_k
        self.behaviour = behaviour or PhoneBehaviour()
        self.rng = rng or random.Random()
        self.stats = PhoneStats()
        self.offers: dict[str, Offer] = {}
        self._on_offer = on_offer
        self._tasks: set[asyncio.Task[None]] = set()
        self.unacked: dict[str, tuple[float, bytes]] = {}  # feedback id -> (sent, payload)
        self.ack_timeout_s = _FEEDBACK_ACK_TIMEOUT_S
        self._ack_waiters: list[asyncio.Event] = []
        self.link = MqttLink(mqtt, client_id=f"phone-{inbox}-{role}",
                             subscriptions=[(topics.offers(inbox), 1),
                                            (topics.feedback_ack(inbox), 1)],
                             handler=self._handle)

    def token(self, unix_now: float | None = None) -> bytes:
        return eid_for(self.identity_key, time.time() if unix_now is None else unix_now,
                       self.rotation_k)

    async def __aenter__(self) -> Self:
        await self.link.__aenter__()
        self._spawn(self._resender(), "phone-feedback-resend")
        return self

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resender(self) -> None:
        while True:
            await asyncio.sleep(self.ack_timeout_s / 2)
            now = time.monotonic()
            for fid, (sent, payload) in list(self.unacked.items()):
                if now - sent < self.ack_timeout_s or not self.link.connected.is_set():
                    continue
                self.unacked[fid] = (now, payload)
                self.stats.feedback_resent += 1
                try:
                    await self.link.publish(topics.feedback(self.inbox), payload, qos=1)
                except (aiomqtt.MqttError, TimeoutError):
                    break

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.link.__aexit__(et, e, tb)

    async def _handle(self, msg: aiomqtt.Message) -> None:
        now = time.time()
        if msg.topic.value == topics.feedback_ack(self.inbox):
            try:
                ack = decode(msg.payload if isinstance(msg.payload, bytes) else b"", FeedbackAck)
            except (msgspec.ValidationError, msgspec.DecodeError):
                self.stats.bad_payloads += 1
                return
            for fid in ack.ids:
                if self.unacked.pop(fid, None) is not None:
                    self.stats.feedback_acked += 1
            for ev in self._ack_waiters:  # every waiter re-checks its id (wait_acked)
                ev.set()
            self._ack_waiters.clear()
            return
        try:
            offer = decode(msg.payload if isinstance(msg.payload, bytes) else b"", Offer)
        except (msgspec.ValidationError, msgspec.DecodeError):
            self.stats.bad_payloads += 1
            return
        if offer.inbox != self.inbox:
            self.stats.bad_payloads += 1
            return
        if offer.id in self.offers:
            self.stats.duplicates += 1  # QoS 1 redelivery: shown once
            return
        if offer.expires_at <= now:
            self.stats.offers_late += 1
            return
        self.offers[offer.id] = offer
        self.stats.offers_received += 1
        self.stats.latencies_s.append(now - offer.issued_at)
        if self._on_offer is not None:
            self._on_offer(offer)
        self._spawn(self._react(offer), f"phone-react-{offer.id[:8]}")

    async def feedback(self, offer: Offer, kind: FeedbackKind,
                       fields: dict[str, str] | None = None) -> str:
        """Publish one feedback (``fields``: a lead's form); kept and resent until HQ
        acknowledges it. Returns its id."""
        fb = Feedback(v=SCHEMA_VERSION, id=uuid.uuid4().hex, offer=offer.id, campaign=offer.campaign,
                      store=offer.store, inbox=self.inbox, kind=kind, ts=time.time(),
                      fields=fields)
        payload = encode(fb)
        self.unacked[fb.id] = (time.monotonic(), payload)
        await self.link.publish(topics.feedback(self.inbox), payload, qos=1)
        return fb.id

    async def wait_acked(self, fid: str) -> None:
        """Until HQ's ack names feedback ``fid`` (put a timeout around it)."""
        while fid in self.unacked:
            ev = asyncio.Event()
            self._ack_waiters.append(ev)
            await ev.wait()

    async def _react(self, offer: Offer) -> None:
        b = self.behaviour
        try:
            await self.feedback(offer, "delivered")
            if self.rng.random() >= b.open_p:
                return
            await asyncio.sleep(self.rng.uniform(*b.react_s))
            self.stats.opened += 1
            await self.feedback(offer, "opened")
            if self.rng.random() >= b.click_p:
                return
            self.stats.clicked += 1
            await self.feedback(offer, "clicked")
            if self.rng.random() < b.redeem_p:
                self.stats.redeemed += 1
                await self.feedback(offer, "redeemed")
        except (aiomqtt.MqttError, TimeoutError):
            return
