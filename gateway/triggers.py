"""From triggers to recorded decisions: presence events, schedule openings, HQ flash, taps.

Every trigger source ends the same way: the shopper's current visit, one decision of
the :class:`~gateway.decisions.DecisionEngine` (a ``no_campaign`` explained by
:class:`~gateway.decisions.PausedCampaigns`), the ``decision`` event with its reason and
the offer, if any, into the recorder's group commit, and a note to the listeners (the
demo's live view, tests). Presence events are recorded as ``zone_*`` events first; taps
and QR scans as ``tap`` events.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.decisions import Decision, DecisionEngine, PausedCampaigns, TriggerEvent
from gateway.presence import PresenceEngine, PresenceEvent
from gateway.recorder import EventRecorder, EventRow, OfferRow
from gateway.schedule import ScheduleTicker
from gateway.taps import decide_tags
from gateway.visits import VisitBook

__all__ = ["Notify", "TriggerStats", "Triggers"]

Notify = Callable[[str, dict[str, Any]], None]


@dataclass(slots=True)
class TriggerStats:
    presence_events: int = 0
    schedule_ticks: int = 0
    flashes: int = 0
    interactions: int = 0


class Triggers:
    def __init__(self, *, presence: PresenceEngine, visits: VisitBook, decider: DecisionEngine,
                 paused: PausedCampaigns, schedule: ScheduleTicker, recorder: EventRecorder,
                 notify: Notify) -> None:
        self.presence = presence
        self.visits = visits
        self.decider = decider
        self.paused = paused
        self.schedule = schedule
        self.recorder = recorder
        self._notify = notify
        self.stats = TriggerStats()

    def _decide(self, kind: str, inbox: str, zone: str | None, now: float, *,
                rows: list[EventRow], offers: list[OfferRow], dwell_s: float = 0.0) -> Decision:
        """One decision for a shopper's trigger in their current visit, recorded with its
        reason (and offer) into ``rows``/``offers`` for the caller's commit."""
        visit = self.visits.visit(inbox, now)
        d = self.decider.decide(TriggerEvent(kind, inbox, zone, now, dwell_s, visit))
        d = self.paused.why_none(d)
        self.recorder.decision(d, rows, offers)
        return d

    def observe(self, inbox: str, zone: str, rssi: int, tx: int, ts: float) -> None:
        """A resolved sighting (advert or phone report) at monotonic ``ts``; absurd RSSI,
        unknown zones and bad clocks are dropped and counted by the presence engine."""
        self.presence_events(self.presence.observe(inbox, zone, rssi, tx, ts))

    def presence_events(self, events: Sequence[PresenceEvent]) -> None:
        if not events:
            return
        now = time.time()
        rows: list[EventRow] = []
        offers: list[OfferRow] = []
        for pe in events:
            self.stats.presence_events += 1
            rows.append(self.recorder.event(
                f"zone_{pe.kind}", inbox=pe.shopper, zone=pe.zone,
                dwell_s=round(pe.dwell_s, 1) if pe.kind != "enter" else None))
            d = self._decide(pe.kind, pe.shopper, pe.zone, now, rows=rows, offers=offers,
                             dwell_s=pe.dwell_s)
            if pe.kind == "exit" and self.presence.zone_of(pe.shopper) is None:
                self.visits.end(pe.shopper)
            self._notify(pe.kind, {"inbox": pe.shopper, "zone": pe.zone, "reason": d.reason})
        self.recorder.commit(offers, rows)

    def schedule_tick(self, now: float) -> list[Decision]:
        """Decide (trigger ``schedule``) for the shoppers present when a campaign with a
        schedule trigger opens at ``now`` (semantics: gateway/schedule.py)."""
        ticks = self.schedule.due(now, self.presence.present())
        if not ticks:
            return []
        rows: list[EventRow] = []
        offers: list[OfferRow] = []
        out: list[Decision] = []
        for t in ticks:
            self.stats.schedule_ticks += 1
            d = self._decide("schedule", t.inbox, t.zone, now, rows=rows, offers=offers)
            self._notify("schedule", {"inbox": t.inbox, "zone": t.zone, "reason": d.reason})
            out.append(d)
        self.recorder.commit(offers, rows)
        return out

    def flash(self, present: Mapping[str, str]) -> None:
        """HQ flash: decide right now for every shopper in ``present`` (inbox -> zone)."""
        now = time.time()
        rows: list[EventRow] = []
        offers: list[OfferRow] = []
        for inbox, zone in present.items():
            self.stats.flashes += 1
            self._decide("flash", inbox, zone, now, rows=rows, offers=offers)
        self.recorder.commit(offers, rows)

    def interaction(self, kind: str, inbox: str | None, zone: str | None, tags: Sequence[str],
                    detail: dict[str, float | int | str]) -> Decision | None:
        """A tap or QR scan (gateway/taps.py): a ``tap`` event, then a decision with trigger
        ``kind`` exactly like a zone entry's (caps, consent, holdout, outbox)."""
        self.stats.interactions += 1
        rows = [self.recorder.event("tap", inbox=inbox, zone=zone, reason=kind, detail=detail)]
        offers: list[OfferRow] = []
        d = None
        if inbox is not None:
            now = time.time()
            visit = self.visits.visit(inbox, now)
            d = self.paused.why_none(decide_tags(self.decider, kind, inbox, zone=zone, now=now,
                                                 visit=visit, tags=tags))
            self.recorder.decision(d, rows, offers)
        self.recorder.commit(offers, rows)
        self._notify(kind, {"inbox": inbox, "zone": zone, "reason": d.reason if d else None})
        return d
