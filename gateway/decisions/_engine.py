"""The gateway's decision engine (docs/architecture.md#decisions).

trigger -> candidates from the ``(zone, kind)`` index, highest priority first -> trigger
detail (tag, dwell) -> schedule (absolute, then local windows in the store's time zone)
-> audience and consent -> quiet hours -> caps -> budget -> rank the eligible ones of the
top priority by predicted propensity -> holdout (deterministic; charged to caps, logged,
never messaged) -> Thompson-sampled variant -> offer expiring at ``min(now + validity,
campaign end)``. Every decision carries a reason: ``offer``, ``holdout`` or the rule
that stopped the best candidate (with that campaign's id).

Holdout is decided on the *winner*, not before ranking: a control shopper must get
nothing rather than the runner-up, or the control group would be contaminated.
"""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from aislecast.kernel.campaign import TRIGGER_KINDS, Campaign, Model, Profile
from aislecast.kernel.ids import new_id
from aislecast.kernel.redeem import mint_code, offer_id_for
from aislecast.kernel.schema import SCHEMA_VERSION, Offer
from gateway.caps import CapLedger, Charge
from gateway.decisions._compiled import (
    Compiled,
    LocalClock,
    Rejection,
    build_index,
    compile_campaign,
    in_windows,
)
from gateway.ranking import Ranker

__all__ = ["Decision", "DecisionEngine", "TriggerEvent", "in_holdout"]

_OK_STATUS = frozenset({"live", "scheduled"})


@dataclass(frozen=True, slots=True)
class TriggerEvent:
    kind: str  # enter, dwell, exit, tap, scan, schedule, flash
    inbox: str
    zone: str | None
    unix_ts: float
    dwell_s: float = 0.0
    visit: str = ""  # visit id: caps "per visit" count within it
    tag: str | None = None  # NFC tag / QR / product id for tap and scan


@dataclass(frozen=True, slots=True)
class Decision:
    trigger: TriggerEvent
    reason: str  # "offer", "holdout", or the rule that stopped the best candidate
    campaign: str | None = None
    variant: str | None = None
    offer: Offer | None = None

    @property
    def holdout(self) -> bool:
        return self.reason == "holdout"


def in_holdout(inbox: str, campaign: str, pct: float) -> bool:
    """Deterministic control-group membership: the same shopper+campaign always agrees."""
    if pct <= 0:
        return False
    h = int.from_bytes(hashlib.sha256(f"{inbox}|{campaign}".encode()).digest()[:8], "big")
    return (h / 2**64) * 100 < pct


class DecisionEngine:
    def __init__(self, conn: sqlite3.Connection, store: str, *, gateway: str = "",
                 tz: str = "UTC", rng: random.Random | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.gateway = gateway
        self.tz = tz
        self.ledger = CapLedger(conn, clock=clock)  # clock: for ticks without a decision
        self.ledger.ps.tz = tz  # a pseudonym day is the store's local date
        self.ranker = Ranker(rng)
        self.clock = LocalClock()
        self._campaigns: dict[str, Campaign] = {}
        self._zones: set[str] | None = None
        self._zoned: dict[tuple[str, str], list[Compiled]] = {}
        self._wild: dict[str, list[Compiled]] = {}
        self._opted_out: set[str] = set()
        self.rejected: dict[str, Rejection] = {}
        # the store's redemption key from the bundle: each offer then carries a till code
        self.redeem_key: bytes | None = None

    # ---- configuration --------------------------------------------------------------
    def load(self, campaigns: list[Campaign], opt_outs: list[str], *, tz: str | None = None,
             zones: list[str] | None = None, model: Model | None = None) -> list[Rejection]:
        """Replace everything from a bundle; returns the campaigns refused (with reasons)."""
        if tz is not None:
            self.tz = self.ledger.ps.tz = tz
        self._zones = set(zones) if zones is not None else None
        self._opted_out = set(opt_outs)
        self.ranker.set_model(model)
        self._campaigns = {c.id: c for c in campaigns if self.store in c.stores}
        return self._rebuild()

    def upsert(self, campaigns: list[Campaign]) -> list[Rejection]:
        """Add or replace campaigns (deltas: flash campaigns and live edits)."""
        ids = {c.id for c in campaigns}
        for c in campaigns:
            if self.store in c.stores:
                self._campaigns[c.id] = c
            else:
                self._campaigns.pop(c.id, None)
        return [r for r in self._rebuild() if r.campaign in ids]

    def pause(self, campaign_ids: list[str]) -> None:
        for cid in campaign_ids:
            self._campaigns.pop(cid, None)
        self._rebuild()

    def opt_out(self, inboxes: list[str]) -> None:
        self._opted_out.update(inboxes)

    def opt_in(self, inboxes: list[str]) -> None:
        """Shoppers who granted offers again (a consent delta): decided for once more."""
        self._opted_out.difference_update(inboxes)

    def set_model(self, model: Model | None) -> None:
        self.ranker.set_model(model)

    def add_profiles(self, profiles: dict[str, Profile]) -> None:
        """Profiles of shoppers a delta admitted (until the next bundle's model)."""
        self.ranker.add_profiles(profiles)

    def unprofile(self, inboxes: list[str]) -> int:
        """Shoppers who withdrew personalisation: decided for as anonymous shoppers (an
        audience rule does not match them; untargeted campaigns still do)."""
        return self.ranker.unprofile(inboxes)

    def _rebuild(self) -> list[Rejection]:
        ok: list[Compiled] = []
        self.rejected = {}
        for c in self._campaigns.values():
            cc = compile_campaign(c, self.tz, self._zones)
            if isinstance(cc, Rejection):
                self.rejected[c.id] = cc
            elif c.status in _OK_STATUS:
                ok.append(cc)
        self._zoned, self._wild = build_index(ok)
        return list(self.rejected.values())

    @property
    def live(self) -> int:
        return len(self._campaigns) - len(self.rejected)

    def allowance(self, c: Campaign) -> int:
        g = c.budget.grants
        if not g:
            return c.budget.total
        return g.get(self.gateway, g.get("*", 0))

    # ---- cross-gateway --------------------------------------------------------------
    def remote_charge(self, event_id: str, inbox: str, campaign: str, *, ts: float,
                      offer: bool) -> bool:
        """Apply another gateway's offer/holdout decision to caps here (idempotent)."""
        day = self.clock.at(self.tz, ts).date
        return self.ledger.charge_remote(event_id, inbox, campaign, day=day, ts=ts, offer=offer)

    # ---- the decision -------------------------------------------------------------------
    def _stop(self, cc: Compiled, t: TriggerEvent, p: Profile | None) -> str | None:
        """The rule that stops ``cc`` for this trigger, or None when it is eligible."""
        ok, why = cc.trigger_for(t.kind, t.zone, t.tag, t.dwell_s)
        if not ok:
            return why
        now = t.unix_ts
        if now < cc.start or now >= cc.end:
            return "outside_schedule"
        lt = self.clock.at(cc.tz, now)
        if cc.windows and not in_windows(cc.windows, lt):
            return "outside_window"
        if cc.segments or cc.tiers or cc.purposes or cc.c.audience.min_visits:
            if p is None:
                return "audience_unknown_shopper"
            if cc.purposes and not cc.purposes <= set(p.consents):
                return "no_consent_purpose"
            if cc.segments and not cc.segments & set(p.segments):
                return "audience_segment"
            if cc.tiers and p.tier not in cc.tiers:
                return "audience_tier"
            if p.visits < cc.c.audience.min_visits:
                return "audience_visits"
        if cc.quiet and in_windows(cc.quiet, self.clock.at(self.tz, now)):
            return "quiet_hours"
        cap = self.ledger.blocked(cc.c.caps, t.inbox, cc.id, t.visit, now=now)
        if cap is not None:
            return cap
        if cc.budgeted and self.ledger.budget_left(cc.id, self.allowance(cc.c)) <= 0:
            return "budget_spent"
        return None

    def flush(self) -> None:
        """Persist pending cap charges now (the gateway calls this before closing)."""
        self.ledger.flush()

    def decide(self, t: TriggerEvent) -> Decision:
        self.ledger.tick(t.unix_ts)  # local triggers: the gateway's clock starts the day
        if t.inbox in self._opted_out:
            return Decision(t, "no_consent")
        if t.kind not in TRIGGER_KINDS:
            return Decision(t, "unknown_trigger")
        if t.visit:
            self.ledger.seen_visit(t.inbox, t.visit, t.unix_ts)
        if t.kind == "dwell":
            self.ranker.observe_dwell(t.inbox, t.dwell_s)
        cands = (self._zoned.get((t.zone, t.kind)) if t.zone is not None else None) \
            or self._wild.get(t.kind)
        if not cands:
            return Decision(t, "no_campaign")
        p = self.ranker.profile(t.inbox)
        eligible: list[Campaign] = []
        top = 0
        stop: tuple[str, str] | None = None
        for cc in cands:
            if eligible and cc.priority < top:
                break
            why = self._stop(cc, t, p)
            if why is None:
                if not eligible:
                    top = cc.priority
                eligible.append(cc.c)
            elif stop is None:
                stop = (why, cc.id)
        if not eligible:
            return Decision(t, stop[0], stop[1]) if stop else Decision(t, "no_campaign")
        c = self.ranker.best(eligible, p)
        day = self.clock.at(self.tz, t.unix_ts).date
        if in_holdout(t.inbox, c.id, c.holdout_pct):
            self.ledger.charge(Charge(t.inbox, c.id, t.visit, day, t.unix_ts, offer=False))
            return Decision(t, "holdout", c.id)
        cr = self.ranker.variant(c, p)
        self.ledger.charge(Charge(t.inbox, c.id, t.visit, day, t.unix_ts, offer=True))
        if c.budget.kind != "none":
            self.ledger.spend(c.id)
        end = c.schedule.end
        expires = t.unix_ts + c.validity_s
        expires_at = min(expires, end) if end is not None else expires
        oid, code = new_id(), None
        if self.redeem_key is not None:
            serial = os.urandom(5)  # the offer id starts with it: HQ finds the offer by it
            oid = offer_id_for(serial, oid[10:])
            code = mint_code(self.redeem_key, store=self.store, campaign=c.id, variant=cr.id,
                             serial=serial, expires_at=expires_at)
        offer = Offer(
            v=SCHEMA_VERSION, id=oid, campaign=c.id, variant=cr.id,
            store=self.store, inbox=t.inbox, issued_at=t.unix_ts, expires_at=expires_at,
            title=cr.title, body=cr.body, format=cr.format, cta=cr.cta, url=cr.url,
            image_url=cr.image_url, coupon_code=cr.coupon_code, zone=t.zone,
            redeem_code=code,
            countdown=c.countdown, form=cr.form,
        )
        return Decision(t, "offer", c.id, cr.id, offer)
