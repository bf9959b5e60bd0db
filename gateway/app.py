"""The store gateway daemon: scanner -> identity -> presence -> decisions -> outbox -> MQTT.

One :class:`Gateway` per process, run with :meth:`Gateway.run` inside one TaskGroup of
named tasks. The scanner runs whether or not the broker is up (events queue in the
SQLite outbox); bundles arrive retained and signed over MQTT.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import msgspec

from aislecast import __version__
from aislecast.kernel import topics
from aislecast.kernel.campaign import Campaign
from aislecast.kernel.mqtt import MqttLink, MqttSettings
from aislecast.kernel.schema import (
    SCHEMA_VERSION,
    BatchAck,
    Bundle,
    BundleDelta,
    GatewayState,
    PhoneSighting,
    decode,
    encode,
)
from aislecast.kernel.signing import Verifier, public_key_from_pem
from edge.advert import Advertisement
from edge.scanner import AdvertCallback, Scanner
from gateway.adverts import AdvertRouter
from gateway.bundles import BundleStore
from gateway.config import GatewayConfig
from gateway.decisions import (
    Decision,
    DecisionEngine,
    Rejection,
    TriggerEvent,
    apply_peer_batch,
    peer_events_filter,
    peer_gateway,
)
from gateway.fleet import BeaconAlert, FleetHealth
from gateway.identity import IdentityResolver
from gateway.outbox import Outbox
from gateway.pooling import POOL_EXPIRY_S, SightingPool, presence_filter, presence_peer
from gateway.presence import PresenceEngine, PresenceEvent
from gateway.publisher import OutboxPublisher
from gateway.recorder import EventRecorder, EventRow, OfferRow
from gateway.schedule import ScheduleTicker
from gateway.storage import open_db
from gateway.taps import TapRouter, decide_tags
from gateway.visits import VisitBook

__all__ = ["Gateway", "GatewayCounters", "ScannerFactory"]

log = logging.getLogger("aislecast.gateway")

ScannerFactory = Callable[[AdvertCallback], Scanner]
_TICK_S = 0.5
_TICK_SLICE = 32  # presence events handled per loop turn in a tick (~2 ms of work)


@dataclass(slots=True)
class GatewayCounters:
    adverts: int = 0
    adverts_decoded: int = 0
    adverts_ignored: int = 0
    tokens_unknown: int = 0
    sightings_in: int = 0
    bad_payloads: dict[str, int] = field(default_factory=dict)
    presence_events: int = 0
    decisions: int = 0
    offers: int = 0


class Gateway:
    def __init__(self, cfg: GatewayConfig, scanner_factory: ScannerFactory) -> None:
        self.cfg = cfg
        self.store = cfg.store
        data = Path(cfg.data_dir)
        data.mkdir(parents=True, exist_ok=True)
        self.db = open_db(data / f"gateway-{cfg.gateway}.sqlite")
        self.outbox = Outbox(self.db)
        self.identity = IdentityResolver()
        self.decider = DecisionEngine(self.db, cfg.store, gateway=cfg.gateway)
        self.presence = PresenceEngine({}, cfg.presence.params(), gateway=cfg.gateway)
        self.pool = SightingPool(self.presence, cfg.store, cfg.gateway)
        self.fleet = FleetHealth(unheard_after_s=cfg.fleet.unheard_after_s,
                                 low_battery_mv=cfg.fleet.low_battery_mv)
        self.bundles = BundleStore(
            self.db, Verifier(public_key_from_pem(cfg.public_key_pem())), cfg.store,
            on_bundle=self._apply_bundle, on_delta=self._apply_delta,
        )
        self.counters = GatewayCounters()
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self.recorder = EventRecorder(self.outbox, store=cfg.store, gateway=cfg.gateway,
                                      counters=self.counters, notify=self._notify)
        self.router = AdvertRouter(identity=self.identity, fleet=self.fleet,
                                   receivers=dict(cfg.scanner.receivers),
                                   receiver_tx_power_1m=cfg.scanner.receiver_tx_power_1m,
                                   counters=self.counters, observe=self._observe)
        self._beacon_by_id: dict[str, tuple[str, int]] = {}
        # visit ids per shopper, persisted: per-visit caps hold across a restart
        self.visits = VisitBook(self.db.conn, absence_s=cfg.presence.absence_s, now=time.time())
        self.schedule = ScheduleTicker(cfg.store)  # `schedule` triggers at window openings
        self._paused: dict[str, Campaign] = {}  # paused at HQ, named in decisions they stop
        b = cfg.broker
        self.link = MqttLink(
            MqttSettings(host=b.host, port=b.port, username=b.username, password=b.password),
            client_id=f"gw-{cfg.store}-{cfg.gateway}",
            subscriptions=[(topics.bundle(cfg.store), 1), (topics.bundle_delta(cfg.store), 1),
                           (topics.sightings(cfg.store), 0), (peer_events_filter(cfg.store), 1),
                           (topics.gateway_acks(cfg.store, cfg.gateway), 1),
                           (topics.interactions(cfg.store), 1), (presence_filter(cfg.store), 0)],
            handler=self._on_message,
            will=aiomqtt.Will(topics.gateway_state(cfg.store, cfg.gateway),
                              self._state_payload("offline"), qos=1, retain=True),
            on_connect=self._on_connect,
        )
        header = (b'{"v":%d,"store":%s,"gateway":%s,'
                  % (SCHEMA_VERSION, msgspec.json.encode(cfg.store), msgspec.json.encode(cfg.gateway)))
        self._events_topic = topics.gateway_events(cfg.store, cfg.gateway)
        self._acks_topic = topics.gateway_acks(cfg.store, cfg.gateway)
        self.publisher = OutboxPublisher(self.outbox, self.link, events_topic=self._events_topic,
                                         batch_header=header, on_offer_acked=self.recorder.offer_acked)
        self.recorder.publisher = self.publisher
        self.scanner = scanner_factory(self.on_advert)
        self.taps = TapRouter(cfg.nfc, resolve=self.identity.resolve, zone_of=self.presence.zone_of,
                              zones=lambda: self.presence.max_radius, act=self.interaction,
                              bad=self._bad)
        self.ready = asyncio.Event()
        self._closed = False
        self.bundles.load_persisted()

    # ---- bundle ---------------------------------------------------------------------
    def _apply_bundle(self, b: Bundle) -> None:
        self.presence.max_radius = {z.id: z.max_radius_m for z in b.zones}
        self.identity.load(b.rotation_k, b.token_tables, b.opt_outs)
        self._refused(self.decider.load(b.campaigns, b.opt_outs, tz=b.store.tz,
                                        zones=[z.id for z in b.zones], model=b.model))
        self.fleet.plan(b.beacons, time.monotonic())
        self.router.reset_tokens()
        self._beacon_by_id = {bc.id: (bc.zone, bc.tx_power_1m) for bc in b.beacons}
        self.schedule.load(b.campaigns, tz=b.store.tz)
        for c in b.campaigns:  # live again (a bundle carries only live and scheduled ones)
            self._paused.pop(c.id, None)
        self.ready.set()

    def _apply_delta(self, d: BundleDelta) -> None:
        self.identity.opt_out(d.opt_outs)
        self.router.reset_tokens()
        self.decider.opt_out(d.opt_outs)
        known = {c.id: c for c in self.bundles.current.campaigns} if self.bundles.current else {}
        known |= {c.id: c for c in d.campaigns}
        self._paused |= {cid: known[cid] for cid in d.paused if cid in known}
        self._paused |= {c.id: c for c in d.campaigns if c.status == "paused"}
        for c in d.campaigns:
            if c.status != "paused":
                self._paused.pop(c.id, None)
        self.decider.pause(d.paused)
        self.schedule.pause(d.paused)
        if d.campaigns:
            self.schedule.upsert(d.campaigns)
            self._refused(self.decider.upsert(d.campaigns))
            if any(c.trigger.kind == "flash" for c in d.campaigns):
                self._flash()

    def _refused(self, rejections: list[Rejection]) -> None:
        """Campaigns this gateway cannot understand are not applied; say so to HQ."""
        rows = [self.recorder.event("gateway_health", campaign=r.campaign, reason=r.reason[:500])
                for r in rejections]
        if rows:
            self.recorder.commit([], rows)

    def _flash(self) -> None:
        """HQ flash: decide right now for every shopper present in this store."""
        now = time.time()
        rows: list[tuple[str, str, bytes]] = []
        offers: list[tuple[str, str, bytes, float]] = []
        for inbox, zone in self.presence.present().items():
            self._decide("flash", inbox, zone, now, rows=rows, offers=offers)
        self.recorder.commit(offers, rows)

    def schedule_tick(self, now: float) -> list[Decision]:
        """Decide (trigger ``schedule``) for the shoppers present when a campaign with a
        schedule trigger opens at ``now`` (semantics: gateway/schedule.py)."""
        ticks = self.schedule.due(now, self.presence.present())
        if not ticks:
            return []
        rows: list[tuple[str, str, bytes]] = []
        offers: list[tuple[str, str, bytes, float]] = []
        out: list[Decision] = []
        for t in ticks:
            d = self._decide("schedule", t.inbox, t.zone, now, rows=rows, offers=offers)
            self._notify("schedule", {"inbox": t.inbox, "zone": t.zone, "reason": d.reason})
            out.append(d)
        self.recorder.commit(offers, rows)
        return out

    # ---- hot path ---------------------------------------------------------------------
    def on_advert(self, adv: Advertisement) -> None:
        """Scanner callback: prefilter, decode, identity, presence (gateway.adverts)."""
        self.router(adv)

    def _observe(self, inbox: str, zone: str, rssi: int, tx: int, ts: float) -> None:
        # absurd RSSI, unknown zones and bad clocks are dropped and counted by the engine
        self._handle_presence(self.presence.observe(inbox, zone, rssi, tx, ts))

    def _handle_presence(self, events: list[PresenceEvent]) -> None:
        if not events:
            return
        now = time.time()
        rows: list[tuple[str, str, bytes]] = []
        offers: list[tuple[str, str, bytes, float]] = []
        for pe in events:
            self.counters.presence_events += 1
            rows.append(self.recorder.event(f"zone_{pe.kind}", inbox=pe.shopper, zone=pe.zone,
                                    dwell_s=round(pe.dwell_s, 1) if pe.kind != "enter" else None))
            d = self._decide(pe.kind, pe.shopper, pe.zone, now, rows=rows, offers=offers,
                             dwell_s=pe.dwell_s)
            if pe.kind == "exit" and self.presence.zone_of(pe.shopper) is None:
                self.visits.end(pe.shopper)
            self._notify(pe.kind, {"inbox": pe.shopper, "zone": pe.zone, "reason": d.reason})
        self.recorder.commit(offers, rows)

    def interaction(self, kind: str, inbox: str | None, zone: str | None, tags: Sequence[str],
                    detail: dict[str, float | int | str]) -> Decision | None:
        """A tap or QR scan (gateway/taps.py): a ``tap`` event, then a decision with trigger
        ``kind`` exactly like a zone entry's (caps, consent, holdout, outbox)."""
        rows = [self.recorder.event("tap", inbox=inbox, zone=zone, reason=kind, detail=detail)]
        offers: list[tuple[str, str, bytes, float]] = []
        d = None
        if inbox is not None:
            now = time.time()
            visit = self.visits.visit(inbox, now)
            d = decide_tags(self.decider, kind, inbox, zone=zone, now=now, visit=visit,
                            tags=tags)
            self.recorder.decision(d, rows, offers)
        self.recorder.commit(offers, rows)
        self._notify(kind, {"inbox": inbox, "zone": zone, "reason": d.reason if d else None})
        return d

    def _decide(self, kind: str, inbox: str, zone: str | None, now: float, *,
                rows: list[EventRow], offers: list[OfferRow], dwell_s: float = 0.0) -> Decision:
        """One decision for a shopper's trigger in their current visit, recorded with its
        reason (and offer) into ``rows``/``offers`` for the caller's commit."""
        visit = self.visits.visit(inbox, now)
        d = self._why_none(self.decider.decide(TriggerEvent(kind, inbox, zone, now, dwell_s, visit)))
        self.recorder.decision(d, rows, offers)
        return d

    def _why_none(self, d: Decision) -> Decision:
        """``no_campaign`` where a campaign paused at HQ would have matched: say so."""
        t = d.trigger
        if d.reason == "no_campaign" and self._paused:
            for c in self._paused.values():
                if any(tr.kind == t.kind and (not tr.zones or t.zone in tr.zones)
                       for tr in c.all_triggers()):
                    return Decision(t, "campaign_paused", c.id)
        return d

    def _notify(self, kind: str, data: dict[str, Any]) -> None:
        for fn in self.listeners:
            fn(kind, data)

    # ---- MQTT -----------------------------------------------------------------------
    def _bad(self, what: str) -> None:
        self.counters.bad_payloads[what] = self.counters.bad_payloads.get(what, 0) + 1

    async def _on_message(self, msg: aiomqtt.Message) -> None:
        if self._closed:  # stopping: the database is closed, the link not yet (run())
            return
        topic = msg.topic.value
        payload = msg.payload if isinstance(msg.payload, bytes) else str(msg.payload).encode()
        if topic == topics.bundle(self.store):
            if not self.bundles.offer_bundle(payload):
                self._bad("bundle")
        elif topic == topics.bundle_delta(self.store):
            if not self.bundles.offer_delta(payload):
                self._bad("delta")
        elif (sender := topics.reporter(topic, self.store, "sightings")) is not None:
            self._on_sighting(payload, sender)
        elif (sender := topics.reporter(topic, self.store, "interactions")) is not None:
            self.taps.on_report(payload, sender=sender)
        elif topic == self._acks_topic:
            try:
                ack = decode(payload, BatchAck)
            except (msgspec.ValidationError, msgspec.DecodeError):
                self._bad("ack")
                return
            self.publisher.batch_acked(ack.batch)
        elif presence_peer(topic, self.store) is not None:
            events = self.pool.ingest(topic, payload, time.monotonic())
            if events is None:
                self._bad("presence_summary")
            else:
                self._handle_presence(events)
        elif peer_gateway(topic, self.store) not in {None, self.cfg.gateway} and \
                apply_peer_batch(self.decider, payload, self.cfg.gateway) < 0:
            self._bad("peer_events")

    def _on_sighting(self, payload: bytes, sender: str) -> None:
        try:
            s = decode(payload, PhoneSighting)
        except (msgspec.ValidationError, msgspec.DecodeError):
            self._bad("sighting")
            return
        self.counters.sightings_in += 1
        beacon = self._beacon_by_id.get(s.beacon)
        inbox = self.identity.resolve(s.token, time.time())
        if beacon is None or inbox is None:
            self._bad("sighting_unresolved")
            return
        if inbox != sender:  # a token that is not the reporting phone's own
            self._bad("sighting_sender")
            return
        self._observe(inbox, beacon[0], s.rssi, beacon[1], time.monotonic())

    def _state_payload(self, status: str) -> bytes:
        return encode(GatewayState(
            v=SCHEMA_VERSION, gateway=self.cfg.gateway, store=self.store,
            status=status, version=__version__,  # type: ignore[arg-type]
            bundle_version=self.bundles.version if hasattr(self, "bundles") else 0,
            metrics=self.metrics() if hasattr(self, "publisher") else {}, ts=time.time(),
        ))

    async def _on_connect(self, client: aiomqtt.Client) -> None:
        await client.publish(topics.gateway_state(self.store, self.cfg.gateway),
                             self._state_payload("online"), qos=1, retain=True)

    def metrics(self) -> dict[str, float]:
        c, p = self.counters, self.publisher.stats
        return {
            "adverts": c.adverts, "adverts_decoded": c.adverts_decoded,
            "adverts_ignored": c.adverts_ignored, "tokens_unknown": c.tokens_unknown,
            "sightings_in": c.sightings_in, "bad_payloads": sum(c.bad_payloads.values()),
            "presence_events": c.presence_events, "decisions": c.decisions, "offers": c.offers,
            "offers_published": p.offers_published, "offers_expired": p.offers_expired,
            "events_published": p.events_published, "publish_denied": p.denied,
            "publish_failures": p.failures, "outbox_rows": len(self.outbox),
            "outbox_dropped_full": self.outbox.dropped_full,
            "bundle_version": self.bundles.version,
            "bundles_rejected": sum(self.bundles.rejected.values()),
            "mqtt_connects": self.link.stats.connects,
            "shoppers_present": len(self.presence.present()),
            **self.taps.metrics(), **self.fleet.metrics(time.monotonic()), **self.pool.metrics(),
            "presence_dropped": sum(self.presence.dropped.values()),
            **self._scanner_metrics(),
        }

    def _scanner_metrics(self) -> dict[str, float]:
        """The scanner's own counters (recoveries, errors, advert age), prefixed ``scanner_``;
        text fields (name, mode, state) and this host's monotonic stamps are left out."""
        scanner = getattr(self, "scanner", None)
        if scanner is None:
            return {}
        return {f"scanner_{k}": float(v) for k, v in scanner.stats().items()
                if isinstance(v, int | float) and not isinstance(v, bool)
                and not k.endswith("_monotonic")}

    # ---- tasks ----------------------------------------------------------------------
    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(_TICK_S)
            now = time.monotonic()
            # exits come due in bulk at a tick; hand them over in slices so adverts and
            # publishes in between wait microseconds, not the whole batch (p99 at 500/s)
            due = self.presence.tick(now)
            for i in range(0, len(due), _TICK_SLICE):
                self._handle_presence(due[i:i + _TICK_SLICE])
                await asyncio.sleep(0)
            self.schedule_tick(time.time())
            self.visits.sync(time.time(), self.presence.present())
            self._beacon_health(self.fleet.check(now))
            if self.pool.due(now) and self.link.connected.is_set():
                for payload in self.pool.build(now, time.time()):
                    try:
                        await self.link.publish(self.pool.topic, payload, qos=0, expiry_s=POOL_EXPIRY_S)
                    except aiomqtt.MqttError as exc:
                        log.debug("presence summary publish failed: %s", exc)

    def _beacon_health(self, alerts: list[BeaconAlert]) -> None:
        for a in alerts:
            log.log(logging.INFO if a.reason == "recovered" else logging.WARNING,
                    "beacon %s zone=%s %s %s", a.beacon, a.zone, a.reason, a.detail)
        if alerts:
            self.recorder.commit([], [self.recorder.event("beacon_health", zone=a.zone, reason=a.reason,
                                          detail={"beacon": a.beacon, **a.detail}) for a in alerts])

    async def _health(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.health_every_s)
            if self.link.connected.is_set():
                try:
                    await self.link.publish(topics.gateway_state(self.store, self.cfg.gateway),
                                            self._state_payload("online"), retain=True)
                except aiomqtt.MqttError as exc:
                    log.debug("health publish failed: %s", exc)

    async def run(self) -> None:
        """Run until cancelled; on cancel, publish ``offline`` and close everything."""
        async with self.link, self.scanner:
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self.publisher.run(), name="gw-publisher")
                    tg.create_task(self._ticker(), name="gw-presence-tick")
                    tg.create_task(self._health(), name="gw-health")
                    if self.cfg.nfc.device is not None:  # never raises: BLE carries on
                        tg.create_task(self.taps.run(), name="gw-nfc-reader")
            finally:
                if self.link.connected.is_set():
                    try:
                        async with asyncio.timeout(2):
                            await self.link.publish(
                                topics.gateway_state(self.store, self.cfg.gateway),
                                self._state_payload("offline"), retain=True)
                    except (aiomqtt.MqttError, TimeoutError):
                        pass
                self.publisher.flush()  # acks the broker gave: no republish after restart
                self.recorder.flush()  # decisions of the last loop turn are not lost
                self.visits.sync(time.time(), self.presence.present(), force=True)
                self.decider.flush()
                self._closed = self.recorder.closed = True
                self.db.conn.close()
