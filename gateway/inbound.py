"""Every MQTT message the gateway receives, routed by the topic contract's parser.

:class:`InboundRouter` parses the topic once (:func:`aislecast.kernel.topics.parse`),
keeps only this store's topics, and hands the payload to the handler of that topic
kind in its table. Handlers never raise on bad input: a payload that does not decode,
or does not belong to its sender, is counted in the gateway's ``bad_payloads`` by
reason and dropped. Topics of another kind or store are counted as ``topic``.

Peers' batches and presence summaries are taken only from the gateway ids the bundle
lists as the store's provisioned gateways (``peer_unprovisioned`` otherwise), and a
batch only when it names the gateway of its topic (``peer_sender``): defence in depth
behind the broker's ACL, which already pins each gateway's own topics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import aiomqtt
import msgspec

from aislecast.kernel import topics
from aislecast.kernel.schema import BatchAck, PhoneSighting, decode
from aislecast.kernel.topics import Kind, TopicMatch
from gateway.decisions import PeerBatchRefused, apply_peer_batch
from gateway.parts import GatewayParts

__all__ = ["Handler", "InboundRouter"]

Handler = Callable[[TopicMatch, bytes], None]


class InboundRouter:
    """An :class:`~aislecast.kernel.mqtt.MqttLink` handler for one gateway's subscriptions."""

    def __init__(self, parts: GatewayParts) -> None:
        self.parts = parts
        self.store = parts.cfg.store
        self.gateway = parts.cfg.gateway
        self.closed = False  # set on the way out: the database is closed, the link not yet
        self.bundles_in = 0  # bundle messages handed over (the local state report reads it)
        self.table: Mapping[Kind, Handler] = {
            Kind.BUNDLE: self._bundle,
            Kind.BUNDLE_DELTA: self._delta,
            Kind.SIGHTINGS: self._sighting,
            Kind.INTERACTIONS: self._interaction,
            Kind.GATEWAY_ACKS: self._ack,
            Kind.GATEWAY_PRESENCE: self._presence,
            Kind.GATEWAY_EVENTS: self._peer_events,
        }

    def subscriptions(self) -> list[tuple[str, int]]:
        """What to subscribe to: every kind of the table, at the contract's QoS, for this
        store (and, for acknowledgements, this gateway only)."""
        own = {Kind.GATEWAY_ACKS}
        return [topics.subscription(k, store=self.store,
                                    gateway=self.gateway if k in own else "+")
                for k in self.table]

    async def __call__(self, msg: aiomqtt.Message) -> None:
        if self.closed:
            return
        payload = msg.payload if isinstance(msg.payload, bytes) else str(msg.payload).encode()
        self.route(msg.topic.value, payload)

    def route(self, topic: str, payload: bytes) -> None:
        m = topics.parse(topic)
        handler = self.table.get(m.kind) if m is not None and m.store == self.store else None
        if m is None or handler is None:
            self.parts.bad("topic")
            return
        handler(m, payload)

    # ---- handlers ---------------------------------------------------------------------
    def _bundle(self, m: TopicMatch, payload: bytes) -> None:
        self.bundles_in += 1
        if not self.parts.bundles.offer_bundle(payload):
            self.parts.bad("bundle")

    def _delta(self, m: TopicMatch, payload: bytes) -> None:
        if not self.parts.bundles.offer_delta(payload):
            self.parts.bad("delta")

    def _interaction(self, m: TopicMatch, payload: bytes) -> None:
        self.parts.taps.on_report(payload, sender=m.inbox)

    def _ack(self, m: TopicMatch, payload: bytes) -> None:
        if m.gateway != self.gateway:
            self.parts.bad("topic")
            return
        try:
            ack = decode(payload, BatchAck)
        except (msgspec.ValidationError, msgspec.DecodeError):
            self.parts.bad("ack")
            return
        self.parts.publisher.batch_acked(ack.batch)

    def _provisioned(self, peer: str | None) -> bool:
        """``peer`` is one of the store's gateways in the bundle (or the bundle names none)."""
        bundle = self.parts.bundles.current
        if bundle is None or not bundle.gateways or peer in bundle.gateways:
            return True
        self.parts.bad("peer_unprovisioned")
        return False

    def _presence(self, m: TopicMatch, payload: bytes) -> None:
        assert m.gateway is not None  # the pattern has the level
        if m.gateway != self.gateway and not self._provisioned(m.gateway):
            return
        events = self.parts.pool.ingest(m.gateway, payload, time.monotonic())
        if events is None:
            self.parts.bad("presence_summary")
        else:
            self.parts.triggers.presence_events(events)

    def _peer_events(self, m: TopicMatch, payload: bytes) -> None:
        if m.gateway == self.gateway:
            return  # our own batch (No Local stops most of them)
        if not self._provisioned(m.gateway):
            return
        try:
            apply_peer_batch(self.parts.decider, payload, self.gateway, sender=m.gateway)
        except PeerBatchRefused as exc:
            self.parts.bad(exc.reason)

    def _sighting(self, m: TopicMatch, payload: bytes) -> None:
        """A phone heard one of the store's fixed beacons; the token in it must be the
        reporting phone's own (the topic's inbox level, pinned by the broker ACL)."""
        parts = self.parts
        try:
            s = decode(payload, PhoneSighting)
        except (msgspec.ValidationError, msgspec.DecodeError):
            parts.bad("sighting")
            return
        parts.counters.sightings_in += 1
        beacon = parts.beacons.get(s.beacon)
        inbox = parts.identity.resolve(s.token, time.time())
        if beacon is None or inbox is None:
            parts.bad("sighting_unresolved")
            return
        if inbox != m.inbox:
            parts.bad("sighting_sender")
            return
        parts.triggers.observe(inbox, beacon[0], s.rssi, beacon[1], time.monotonic())
