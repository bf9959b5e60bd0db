"""Schedule ticks: the gateway's own clock as a trigger (docs/architecture.md#decisions).

A campaign whose triggers include ``kind="schedule"`` fires when it *opens*: when its
schedule turns from closed to open, evaluated in the campaign's time zone
(``schedule.tz``, else the store's, from the bundle). Open means ``start <= now < end``
and, if it has windows, inside one of them in local time (DST is the zone database's).
So a campaign with a 17:00-19:00 weekday window opens at 17:00 local each weekday, one
with only an absolute ``start`` opens once at ``start``.

At an opening, every shopper this gateway places in a zone right then (in one of the
trigger's zones, or any zone when it names none) gets one decision with trigger
``schedule`` (:meth:`ScheduleTicker.due` returns them). That decision is an ordinary
one: consent, audience, quiet hours, every cap (per visit, per day, per campaign,
across campaigns, min gap), budget and holdout apply, and the engine ranks all
``schedule`` campaigns open now, so the one that opened competes with others already
open and a shopper capped for it gets ``cap_*`` rather than a second offer. Shoppers
arriving after the opening are not ticked: entry triggers are for them.

Not an opening: the state a campaign is in when the gateway first sees it (a bundle,
a delta, a restart in the middle of a window), so restarts and live edits never fire a
window twice. Evaluated on every gateway tick (0.5 s): an opening is seen within a tick;
a window that opens *and* closes between two ticks (a suspended process) is missed.
The ticker is pure: time is passed in, so tests drive it with any clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aislecast.kernel.campaign import Campaign
from gateway.decisions import LocalClock

__all__ = ["ScheduleTick", "ScheduleTicker"]

_OK_STATUS = frozenset({"live", "scheduled"})


@dataclass(frozen=True, slots=True)
class ScheduleTick:
    """One decision to make: ``inbox`` in ``zone``, because ``campaigns`` opened."""

    inbox: str
    zone: str
    campaigns: tuple[str, ...]


class _Entry:
    __slots__ = ("c", "open", "zones")

    def __init__(self, c: Campaign) -> None:
        self.c = c
        self.open: bool | None = None  # None: not evaluated yet (its first state is no edge)
        zones: set[str] = set()
        for t in c.all_triggers():
            if t.kind == "schedule":
                if not t.zones:
                    zones = set()
                    break
                zones |= set(t.zones)
        self.zones = frozenset(zones)  # empty: any zone


class ScheduleTicker:
    """The store's ``schedule`` campaigns and whether each is open; :meth:`due` finds
    openings and the shoppers to decide for."""

    def __init__(self, store: str, tz: str = "UTC") -> None:
        self.store = store
        self.tz = tz
        self.clock = LocalClock()
        self._entries: dict[str, _Entry] = {}
        self.openings = 0

    @staticmethod
    def _wanted(c: Campaign, store: str) -> bool:
        return (store in c.stores and c.status in _OK_STATUS
                and any(t.kind == "schedule" for t in c.all_triggers()))

    def load(self, campaigns: Iterable[Campaign], tz: str | None = None) -> None:
        """Replace from a bundle; campaigns already known keep their open state."""
        if tz is not None:
            self.tz = tz
        old = self._entries
        self._entries = {}
        for c in campaigns:
            if self._wanted(c, self.store):
                e = _Entry(c)
                prev = old.get(c.id)
                e.open = prev.open if prev is not None else None
                self._entries[c.id] = e

    def upsert(self, campaigns: Iterable[Campaign]) -> None:
        """Live edits and new campaigns from a delta (an edit keeps the open state)."""
        for c in campaigns:
            prev = self._entries.pop(c.id, None)
            if self._wanted(c, self.store):
                e = _Entry(c)
                e.open = prev.open if prev is not None else None
                self._entries[c.id] = e

    def pause(self, campaign_ids: Iterable[str]) -> None:
        for cid in campaign_ids:
            self._entries.pop(cid, None)

    def __len__(self) -> int:
        return len(self._entries)

    def is_open(self, c: Campaign, now: float) -> bool:
        s = c.schedule
        if (s.start is not None and now < s.start) or (s.end is not None and now >= s.end):
            return False
        if not s.windows:
            return True
        lt = self.clock.at(s.tz or self.tz, now)
        return any(w.covers(lt.weekday, lt.date, lt.minute) for w in s.windows)

    def opened(self, now: float) -> list[Campaign]:
        """Campaigns that turned open since the last call (first sight is not a turn)."""
        out: list[Campaign] = []
        for e in self._entries.values():
            state = self.is_open(e.c, now)
            if state and e.open is False:
                out.append(e.c)
            e.open = state
        self.openings += len(out)
        return out

    def due(self, now: float, present: Mapping[str, str]) -> list[ScheduleTick]:
        """One tick per shopper present in a zone of a campaign that opened at ``now``."""
        if not self._entries:
            return []
        opened = self.opened(now)
        if not opened:
            return []
        ticks: list[ScheduleTick] = []
        for inbox, zone in present.items():
            ids = tuple(c.id for c in opened
                        if not self._entries[c.id].zones or zone in self._entries[c.id].zones)
            if ids:
                ticks.append(ScheduleTick(inbox, zone, ids))
        return ticks
