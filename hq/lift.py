"""Honest lift: till purchases of offered shoppers against the holdout's, with intervals
that keep their coverage at small counts.

Who is in which arm (from the gateways' ``decision`` events of a campaign):

- a **treated** shopper is an inbox with a ``decision`` of reason ``offer``; a
  **holdout** shopper one with reason ``holdout`` (the gateway logged the trigger and
  sent nothing). Holdout is a deterministic hash of (inbox, campaign), so an inbox is
  in one arm; its exposure time ``t0`` and store are those of its first such decision,
  and a treated shopper's variant is the one of that first offer;
- per variant, each variant's treated shoppers are compared against the **whole
  shared holdout** (holdout has no variant); the variants' intervals are each 95 %,
  not jointly.

A shopper **converts** with a purchase (the ``purchases`` table the till feed fills)
by that inbox, in the store of ``t0``, with ``t0 <= ts <= t0 + window_s``
(:class:`~aislecast.kernel.campaign.Attribution` of the campaign, 24 h by default).
Any purchase counts, not only the campaign's products: the campaign model names
trigger tags, not the products it promotes. Revenue is the sum of ``value_cents`` of
those purchases.

The interval of the difference of conversion rates is Newcombe's hybrid score interval
(method 10 in R. G. Newcombe, "Interval estimation for the difference between
independent proportions: comparison of eleven methods", Statistics in Medicine 17
(1998) 873-890), built from each arm's Wilson score interval (E. B. Wilson, JASA 22
(1927) 209-212) without continuity correction. Incremental conversions are ``(rate_t -
rate_c) * n_t`` with the interval scaled alike; incremental revenue is ``(mean_t -
mean_c) * n_t`` of revenue per shopper with a Welch (normal, unequal variances)
interval, a large-sample approximation. Below ``min_per_arm`` shoppers in either arm
no number is given: ``status`` is ``not_enough_data`` with the counts. See
docs/architecture.md#lift.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import msgspec

from aislecast.kernel.campaign import Attribution
from hq.db import HqDb

__all__ = ["Z95", "ArmLift", "Exposure", "Outcome", "arm_lift", "campaign_lift", "exposures",
           "newcombe_diff", "outcomes", "welch_diff", "wilson"]

Z95: Final = 1.959963984540054  # the standard normal's 97.5 % quantile


def wilson(x: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval of a proportion ``x / n`` (``(0, 1)`` when ``n`` is 0)."""
    if n <= 0:
        return 0.0, 1.0
    p, z2 = x / n, z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_diff(x_t: int, n_t: int, x_c: int, n_c: int, z: float = Z95
                  ) -> tuple[float, float, float]:
    """``p_t - p_c`` with Newcombe's hybrid score interval (method 10): each side
    combines the near ends of the two Wilson intervals. Both ``n`` must be positive."""
    if n_t <= 0 or n_c <= 0:
        raise ValueError(f"both arms need shoppers (treated {n_t}, control {n_c})")
    p_t, p_c = x_t / n_t, x_c / n_c
    (l_t, u_t), (l_c, u_c) = wilson(x_t, n_t, z), wilson(x_c, n_c, z)
    d = p_t - p_c
    lo = d - math.sqrt((p_t - l_t) ** 2 + (u_c - p_c) ** 2)
    hi = d + math.sqrt((u_t - p_t) ** 2 + (p_c - l_c) ** 2)
    return d, lo, hi


def welch_diff(t: Sequence[float], c: Sequence[float], z: float = Z95
               ) -> tuple[float, float, float]:
    """Difference of means with the normal interval on Welch's standard error."""
    def mean_var(xs: Sequence[float]) -> tuple[float, float]:
        m = sum(xs) / len(xs)
        return m, (sum((x - m) ** 2 for x in xs) / (len(xs) - 1) if len(xs) > 1 else 0.0)
    (m_t, v_t), (m_c, v_c) = mean_var(t), mean_var(c)
    d = m_t - m_c
    se = math.sqrt(v_t / len(t) + v_c / len(c))
    return d, d - z * se, d + z * se


@dataclass(frozen=True, slots=True)
class Exposure:
    """A shopper's first decision for a campaign."""

    inbox: str
    t0: float
    store: str
    holdout: bool
    variant: str | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one exposed shopper bought within the attribution window."""

    exposure: Exposure
    converted: bool
    cents: int


class ArmLift(msgspec.Struct):
    """Lift of the treated shoppers (all, or one ``variant``) against the holdout."""

    variant: str | None  # None: every variant together
    treated: int
    control: int
    converted_treated: int
    converted_control: int
    rate_treated: float
    rate_control: float
    revenue_treated_cents: int
    revenue_control_cents: int
    status: str  # "ok", or "not_enough_data" (an arm below min_per_arm: no numbers)
    min_per_arm: int
    lift: float | None = None  # rate_treated - rate_control
    lift_lo: float | None = None
    lift_hi: float | None = None
    incremental_conversions: float | None = None
    incremental_conversions_lo: float | None = None
    incremental_conversions_hi: float | None = None
    incremental_revenue_cents: float | None = None
    incremental_revenue_lo: float | None = None
    incremental_revenue_hi: float | None = None


def exposures(db: HqDb, campaign: str) -> list[Exposure]:
    """Every exposed shopper of ``campaign``: its first ``offer`` or ``holdout`` decision."""
    first: dict[str, Exposure] = {}
    for inbox, ts, reason, variant, store in db.query(
            "SELECT inbox, ts, reason, variant, store FROM events WHERE campaign = ?"
            " AND kind = 'decision' AND reason IN ('offer', 'holdout') AND inbox IS NOT NULL"
            " AND store IS NOT NULL ORDER BY ts, id", (campaign,)):
        if inbox not in first:
            first[inbox] = Exposure(str(inbox), float(ts), str(store), reason == "holdout",
                                    None if reason == "holdout" or variant is None else str(variant))
    return list(first.values())


def outcomes(db: HqDb, exposed: Sequence[Exposure], window_s: float) -> list[Outcome]:
    """Each exposure with its purchases in ``[t0, t0 + window_s]`` in its store."""
    if not exposed:
        return []
    by_inbox: dict[tuple[str, str], list[tuple[float, int]]] = {}
    stores = sorted({e.store for e in exposed})
    if "purchases" in db.tables():
        marks = ", ".join("?" * len(stores))
        rows = db.query(
            f"SELECT inbox, store, ts, value_cents FROM purchases WHERE store IN ({marks})"  # noqa: S608 - placeholders only
            " AND ts >= ? AND ts <= ? AND inbox IS NOT NULL",
            [*stores, min(e.t0 for e in exposed), max(e.t0 for e in exposed) + window_s])
        for inbox, store, ts, cents in rows:
            by_inbox.setdefault((str(inbox), str(store)), []).append((float(ts), int(cents)))
    out = []
    for e in exposed:
        bought = [cents for ts, cents in by_inbox.get((e.inbox, e.store), ())
                  if e.t0 <= ts <= e.t0 + window_s]
        out.append(Outcome(e, bool(bought), sum(bought)))
    return out


def arm_lift(variant: str | None, treated: Sequence[Outcome], control: Sequence[Outcome],
             min_per_arm: int) -> ArmLift:
    n_t, n_c = len(treated), len(control)
    x_t, x_c = sum(o.converted for o in treated), sum(o.converted for o in control)
    a = ArmLift(variant, n_t, n_c, x_t, x_c, round(x_t / n_t, 4) if n_t else 0.0,
                round(x_c / n_c, 4) if n_c else 0.0, sum(o.cents for o in treated),
                sum(o.cents for o in control), "not_enough_data", min_per_arm)
    if n_t < min_per_arm or n_c < min_per_arm:
        return a
    d, lo, hi = newcombe_diff(x_t, n_t, x_c, n_c)
    r, r_lo, r_hi = welch_diff([o.cents for o in treated], [o.cents for o in control])
    a.status = "ok"
    a.lift, a.lift_lo, a.lift_hi = round(d, 4), round(lo, 4), round(hi, 4)
    a.incremental_conversions = round(d * n_t, 1)
    a.incremental_conversions_lo, a.incremental_conversions_hi = round(lo * n_t, 1), round(hi * n_t, 1)
    a.incremental_revenue_cents = round(r * n_t)
    a.incremental_revenue_lo, a.incremental_revenue_hi = round(r_lo * n_t), round(r_hi * n_t)
    return a


def _split(outs: Iterable[Outcome]) -> tuple[list[Outcome], list[Outcome]]:
    treated: list[Outcome] = []
    control: list[Outcome] = []
    for o in outs:
        (control if o.exposure.holdout else treated).append(o)
    return treated, control


def campaign_lift(db: HqDb, campaign: str, settings: Attribution
                  ) -> tuple[ArmLift, list[ArmLift]]:
    """Lift of ``campaign``'s treated shoppers overall, and per variant (each against
    the shared holdout), under ``settings``."""
    treated, control = _split(outcomes(db, exposures(db, campaign), settings.window_s))
    overall = arm_lift(None, treated, control, settings.min_per_arm)
    variants = sorted({o.exposure.variant or "" for o in treated})
    return overall, [arm_lift(v, [o for o in treated if (o.exposure.variant or "") == v], control,
                              settings.min_per_arm) for v in variants]
