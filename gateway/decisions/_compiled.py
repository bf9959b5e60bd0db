"""Campaigns compiled for the hot path: windows as minute ranges, local time cached.

Compiling turns each :class:`~aislecast.kernel.campaign.Campaign` into plain tuples the engine
checks with integer compares, and builds the ``(zone, trigger kind)`` index so a
decision looks only at campaigns that can fire on that trigger in that zone, however
many campaigns are live. A campaign that fails :func:`check_campaign` is not compiled:
it is returned as a rejection with every problem named.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass

from aislecast.kernel.campaign import Campaign, Trigger, Window, check_campaign

__all__ = ["Compiled", "LocalClock", "Rejection", "build_index", "compile_campaign"]

# (days bitmask over ISO weekdays 1..7, dates or None, start minute, end minute)
_Win = tuple[int, frozenset[str] | None, int, int]


@dataclass(frozen=True, slots=True)
class Rejection:
    campaign: str
    problems: tuple[str, ...]

    @property
    def reason(self) -> str:
        return "campaign_refused: " + "; ".join(self.problems)


@dataclass(frozen=True, slots=True)
class LocalTime:
    weekday: int  # ISO, 1 = Monday
    date: str  # YYYY-MM-DD local
    minute: int  # minute of the local day


class LocalClock:
    """Unix time -> local (weekday, date, minute), cached per minute and time zone."""

    def __init__(self) -> None:
        self._zones: dict[str, zoneinfo.ZoneInfo] = {}
        self._cache: dict[str, tuple[int, LocalTime]] = {}

    def at(self, tz: str, unix_ts: float) -> LocalTime:
        bucket = int(unix_ts // 60)
        hit = self._cache.get(tz)
        if hit is not None and hit[0] == bucket:
            return hit[1]
        z = self._zones.get(tz)
        if z is None:
            z = self._zones[tz] = zoneinfo.ZoneInfo(tz)
        d = dt.datetime.fromtimestamp(bucket * 60, z)
        lt = LocalTime(d.isoweekday(), d.date().isoformat(), d.hour * 60 + d.minute)
        self._cache[tz] = (bucket, lt)
        return lt


def _win(w: Window) -> _Win:
    mask = 0
    for d in w.days or range(1, 8):
        mask |= 1 << d
    lo, hi = w.minutes()
    return mask, frozenset(w.dates) if w.dates else None, lo, hi


def in_windows(wins: tuple[_Win, ...], lt: LocalTime) -> bool:
    bit = 1 << lt.weekday
    for mask, dates, lo, hi in wins:
        if mask & bit and lo <= lt.minute < hi and (dates is None or lt.date in dates):
            return True
    return False


@dataclass(frozen=True, slots=True)
class Compiled:
    c: Campaign
    id: str
    priority: int
    tz: str
    start: float  # -inf when open
    end: float  # +inf when open
    windows: tuple[_Win, ...]  # empty: always
    quiet: tuple[_Win, ...]
    triggers: tuple[Trigger, ...]
    segments: frozenset[str]
    tiers: frozenset[str]
    purposes: frozenset[str]  # consents needed beyond plain "offers"
    budgeted: bool

    def trigger_for(self, kind: str, zone: str | None, tag: str | None,
                    dwell_s: float) -> tuple[bool, str]:
        """(matches, reason if not): the first trigger of ``kind`` that fits."""
        reason = "no_campaign"
        for t in self.triggers:
            if t.kind != kind or (t.zones and zone not in t.zones):
                continue
            if t.tags and tag not in t.tags:
                reason = "tag_not_targeted"
                continue
            if kind == "dwell" and dwell_s < t.min_dwell_s:
                reason = "dwell_too_short"
                continue
            return True, ""
        return False, reason


def compile_campaign(c: Campaign, store_tz: str, zones: set[str] | None) -> Compiled | Rejection:
    problems = check_campaign(c, zones)
    if problems:
        return Rejection(c.id, tuple(problems))
    purposes = set(c.audience.purposes) | ({c.purpose} if c.purpose != "offers" else set())
    return Compiled(
        c=c, id=c.id, priority=c.priority, tz=c.schedule.tz or store_tz,
        start=c.schedule.start if c.schedule.start is not None else float("-inf"),
        end=c.schedule.end if c.schedule.end is not None else float("inf"),
        windows=tuple(_win(w) for w in c.schedule.windows),
        quiet=tuple(_win(w) for w in c.caps.quiet),
        triggers=tuple(c.all_triggers()),
        segments=frozenset(c.audience.segments), tiers=frozenset(c.audience.loyalty_tiers),
        purposes=frozenset(purposes), budgeted=c.budget.kind != "none",
    )


def build_index(campaigns: list[Compiled]) -> tuple[dict[tuple[str, str], list[Compiled]],
                                                   dict[str, list[Compiled]]]:
    """``(zone, kind) -> campaigns`` (zone-specific plus any-zone ones) and
    ``kind -> any-zone campaigns``, each sorted by priority, highest first."""
    wild: dict[str, list[Compiled]] = {}
    zoned: dict[tuple[str, str], list[Compiled]] = {}
    for cc in campaigns:
        for t in cc.triggers:
            if t.zones:
                for z in t.zones:
                    lst = zoned.setdefault((z, t.kind), [])
                    if cc not in lst:
                        lst.append(cc)
            elif cc not in (lst := wild.setdefault(t.kind, [])):
                lst.append(cc)
    for (_, kind), lst in zoned.items():
        lst.extend(c for c in wild.get(kind, []) if c not in lst)
    for lst in (*zoned.values(), *wild.values()):
        lst.sort(key=lambda c: (-c.priority, c.id))
    return zoned, wild
