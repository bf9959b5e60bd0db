"""The gateway's in-process pipeline, built once from its config: every component and
how a bundle or a delta reaches them.

:meth:`GatewayParts.open` does all the start-up I/O (the data directory, the SQLite
file and the state persisted in it, HQ's public key, the last good bundle and its
deltas); nothing here touches the network. :class:`gateway.app.Gateway` adds the MQTT
link, the scanner and the tasks around it; tests and offline tools may use the parts
alone.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import msgspec

from aislecast.kernel.logs import get_logger
from aislecast.kernel.schema import SCHEMA_VERSION, Bundle, BundleDelta
from aislecast.kernel.verify import Verifier
from gateway.adverts import AdvertRouter
from gateway.bundles import BundleStore
from gateway.config import GatewayConfig
from gateway.consent import ConsentOverlay
from gateway.decisions import DecisionEngine, PausedCampaigns, Rejection
from gateway.first_visit import FirstVisits
from gateway.fleet import BeaconAlert, FleetHealth
from gateway.identity import IdentityResolver
from gateway.outbox import Outbox
from gateway.pooling import SightingPool
from gateway.presence import PresenceEngine
from gateway.publisher import OutboxPublisher
from gateway.recorder import EventMaker, EventRecorder
from gateway.retention import EdgeRetention
from gateway.schedule import ScheduleTicker
from gateway.storage import open_db
from gateway.taps import TapRouter
from gateway.triggers import Notify, Triggers
from gateway.visits import VisitBook

__all__ = ["GatewayCounters", "GatewayParts"]

log = get_logger(__name__)


@dataclass(slots=True)
class GatewayCounters:
    """What the gateway's hot path and its inbound handlers count."""

    adverts: int = 0
    adverts_decoded: int = 0
    adverts_ignored: int = 0
    tokens_unknown: int = 0
    sightings_in: int = 0
    bad_payloads: dict[str, int] = field(default_factory=dict)


class GatewayParts:
    """All components of one gateway; ``on_bundle`` is called (maybe from a worker
    thread, see :meth:`open`) after each bundle is applied."""

    def __init__(self, cfg: GatewayConfig, db: sqlite3.Connection, verifier: Verifier, *,
                 notify: Notify, on_bundle: Callable[[], None]) -> None:
        self.cfg = cfg
        self.db = db
        self._on_bundle = on_bundle
        self.counters = GatewayCounters()
        self.outbox = Outbox(db)
        self.identity = IdentityResolver()
        # tokens no table has, reported to HQ by the ticker (first visits to the store)
        self.first_visits = FirstVisits(cfg.store, cfg.gateway)
        self.identity.on_unknown = self.first_visits.note
        self.decider = DecisionEngine(db, cfg.store, gateway=cfg.gateway)
        self.presence = PresenceEngine({}, cfg.presence.params(), gateway=cfg.gateway)
        self.pool = SightingPool(self.presence, cfg.store, cfg.gateway)
        self.fleet = FleetHealth(unheard_after_s=cfg.fleet.unheard_after_s,
                                 low_battery_mv=cfg.fleet.low_battery_mv)
        self.paused = PausedCampaigns()
        self.schedule = ScheduleTicker(cfg.store)  # `schedule` triggers at window openings
        # visit ids per shopper, persisted: per-visit caps hold across a restart
        self.visits = VisitBook(db, absence_s=cfg.presence.absence_s, now=time.time())
        self.events = EventMaker(store=cfg.store, gateway=cfg.gateway, notify=notify)
        header = (b'{"v":%d,"store":%s,"gateway":%s,' % (
            SCHEMA_VERSION, msgspec.json.encode(cfg.store), msgspec.json.encode(cfg.gateway)))
        self.publisher = OutboxPublisher(self.outbox, events_topic=self.events.topic,
                                         batch_header=header, on_offer_acked=self.events.offer_acked)
        # cap charges and new visits commit with their offers (one transaction: a crash
        # keeps all of them or none)
        self.recorder = EventRecorder(self.outbox, self.events, self.publisher,
                                      charges=self.decider.ledger, visits=self.visits)
        self.triggers = Triggers(presence=self.presence, visits=self.visits, decider=self.decider,
                                 paused=self.paused, schedule=self.schedule,
                                 recorder=self.recorder, notify=notify)
        self.adverts = AdvertRouter(identity=self.identity, fleet=self.fleet,
                                    receivers=dict(cfg.scanner.receivers),
                                    receiver_tx_power_1m=cfg.scanner.receiver_tx_power_1m,
                                    counters=self.counters, observe=self.triggers.observe)
        self.taps = TapRouter(cfg.nfc, resolve=self.identity.resolve, zone_of=self.presence.zone_of,
                              zones=lambda: self.presence.max_radius,
                              act=self.triggers.interaction, bad=self.bad)
        self.beacons: dict[str, tuple[str, int]] = {}  # beacon id -> (zone, tx power @ 1 m)
        # enrolments, opt-ins, opt-outs and erasures from deltas, held over older bundles
        self.consent = ConsentOverlay(self.identity, self.decider, self.decider.ledger,
                                      self.visits, self.presence, self.outbox)
        self.retention = EdgeRetention(db, self.outbox, self.decider.ledger)  # from the ticker
        self.bundles = BundleStore(db, verifier, cfg.store, on_bundle=self.apply_bundle,
                                   on_delta=self.apply_delta)

    @classmethod
    def open(cls, cfg: GatewayConfig, *, notify: Notify, on_bundle: Callable[[], None]) -> Self:
        """Open the data directory and database, and apply the persisted bundle. Blocking
        (file I/O, a signature check, maybe 10k shoppers' tables): run it in a thread."""
        data = Path(cfg.data_dir)
        data.mkdir(parents=True, exist_ok=True)
        verifier = Verifier(*cfg.public_keys())
        db = open_db(data / f"gateway-{cfg.gateway}.sqlite")
        try:
            parts = cls(cfg, db, verifier, notify=notify, on_bundle=on_bundle)
            parts.bundles.load_persisted()
        except BaseException:
            db.close()
            raise
        return parts

    def bad(self, what: str) -> None:
        """Count a payload dropped for reason ``what`` (never raises, never logs per item)."""
        bad = self.counters.bad_payloads
        bad[what] = bad.get(what, 0) + 1

    # ---- bundle and deltas -------------------------------------------------------------
    def apply_bundle(self, b: Bundle) -> None:
        self.presence.max_radius = {z.id: z.max_radius_m for z in b.zones}
        self.identity.load(b.rotation_k, b.token_tables, b.opt_outs)
        self.decider.redeem_key = bytes.fromhex(b.redeem_key) if b.redeem_key else None
        self._refused(self.decider.load(b.campaigns, b.opt_outs, tz=b.store.tz,
                                        zones=[z.id for z in b.zones], model=b.model))
        self.consent.bundle(b.delta_seq)  # consent deltas the bundle does not include yet
        self.fleet.plan(b.beacons, time.monotonic())
        self.adverts.reset_tokens()
        self.beacons = {bc.id: (bc.zone, bc.tx_power_1m) for bc in b.beacons}
        self.schedule.load(b.campaigns, tz=b.store.tz)
        self.paused.bundle_applied(b.campaigns)
        self.decider.ledger.ends.hold(b.campaigns, replace=True)  # their lifetime counts stay
        self._on_bundle()

    def apply_delta(self, d: BundleDelta) -> None:
        self.consent.delta(d)  # opt-ins (with tokens), opt-outs, erasures
        self.adverts.reset_tokens()
        current = self.bundles.current
        known = {c.id: c for c in current.campaigns} if current is not None else {}
        known |= {c.id: c for c in d.campaigns}
        self.paused.delta_applied(known, d.paused, d.campaigns)
        self.decider.pause(d.paused)
        self.schedule.pause(d.paused)
        if d.campaigns:
            self.decider.ledger.ends.hold(d.campaigns, replace=False)
            self.schedule.upsert(d.campaigns)
            self._refused(self.decider.upsert(d.campaigns))
            if any(c.trigger.kind == "flash" for c in d.campaigns):
                self.triggers.flash(self.presence.present())

    def _refused(self, rejections: list[Rejection]) -> None:
        """Campaigns this gateway cannot understand are not applied; say so to HQ."""
        rows = [self.events.event("gateway_health", campaign=r.campaign, reason=r.reason[:500])
                for r in rejections]
        if rows:
            self.recorder.commit([], rows)

    # ---- periodic ----------------------------------------------------------------------
    def beacon_health(self, alerts: list[BeaconAlert]) -> None:
        for a in alerts:
            log.log(logging.INFO if a.reason == "recovered" else logging.WARNING,
                    "beacon %s zone=%s %s %s", a.beacon, a.zone, a.reason, a.detail)
        if alerts:
            self.recorder.commit([], [self.events.event(
                "beacon_health", zone=a.zone, reason=a.reason,
                detail={"beacon": a.beacon, **a.detail}) for a in alerts])

    def close(self) -> None:
        """Commit what is pending (acks, decisions, visits, caps) and close the database."""
        self.publisher.flush()  # acks the broker gave: no republish after restart
        self.recorder.flush()  # decisions of the last loop turn are not lost
        self.visits.sync(time.time(), self.presence.present(), force=True)
        self.decider.flush()
        self.recorder.closed = True
        self.db.close()
