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
When the campaign's attribution names ``products`` or ``categories``, only the lines
of those count (what it promotes: a basket's staples would convert both arms alike);
when it names neither, any purchase does. Revenue is the sum of ``value_cents`` of
the lines that count.

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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import msgspec

from aislecast.kernel.campaign import Attribution
from hq.db import HqDb

__all__ = ["Z95", "Arm", "ArmLift", "arm_lift", "arms", "campaign_lift", "newcombe_diff",
           "welch_diff", "wilson"]

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


@dataclass(frozen=True, slots=True)
class Arm:
    """One arm's shoppers: how many, how many converted, revenue and its sum of squares
    (per shopper, in cents) for the variance."""

    shoppers: int = 0
    converted: int = 0
    cents: float = 0.0
    cents_sq: float = 0.0

    def __add__(self, o: Arm) -> Arm:
        return Arm(self.shoppers + o.shoppers, self.converted + o.converted,
                   self.cents + o.cents, self.cents_sq + o.cents_sq)

    def mean_var(self) -> tuple[float, float]:
        """Mean revenue per shopper and its sample variance."""
        n = self.shoppers
        m = self.cents / n
        return m, (max(0.0, self.cents_sq - n * m * m) / (n - 1) if n > 1 else 0.0)


def welch_diff(t: Arm, c: Arm, z: float = Z95) -> tuple[float, float, float]:
    """Difference of mean revenue per shopper, normal interval on Welch's standard error."""
    (m_t, v_t), (m_c, v_c) = t.mean_var(), c.mean_var()
    d = m_t - m_c
    se = math.sqrt(v_t / t.shoppers + v_c / c.shoppers)
    return d, d - z * se, d + z * se


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


# Each exposed shopper's first offer or holdout decision (ties: by event id), its
# purchases in the window in that store, then summed per (arm, variant): a few rows
# whatever the counts. The store is matched after the join, not in it, so the planner
# finds each shopper's purchases by the (inbox, ts) index rather than scanning a busy
# store's whole window through (store, ts).
_ARMS: Final = (
    "WITH d AS (SELECT inbox, ts, reason, variant, store,"
    " ROW_NUMBER() OVER (PARTITION BY inbox ORDER BY ts, id) AS k FROM events"
    " WHERE campaign = ? AND kind = 'decision' AND reason IN ('offer', 'holdout')"
    " AND inbox IS NOT NULL AND store IS NOT NULL),"
    " x AS (SELECT d.inbox, d.reason, d.variant,"
    " count(CASE WHEN p.store = d.store{lines} THEN p.id END) AS bought,"
    " coalesce(sum(CASE WHEN p.store = d.store{lines} THEN p.value_cents END), 0) AS cents"
    " FROM d LEFT JOIN purchases p ON p.inbox = d.inbox AND p.ts >= d.ts AND p.ts <= d.ts + ?"
    " WHERE d.k = 1 GROUP BY d.inbox, d.reason, d.variant)"
    " SELECT reason, variant, count(*), sum(CASE WHEN bought > 0 THEN 1 ELSE 0 END),"
    " sum(cents), sum(cents * cents) FROM x GROUP BY reason, variant")


def _lines(products: Sequence[str], categories: Sequence[str]) -> tuple[str, list[str]]:
    """The SQL that keeps only the lines named (``""``: every line), and its parameters."""
    terms = [f"p.{col} IN ({', '.join('?' * len(ids))})"
             for col, ids in (("product", products), ("category", categories)) if ids]
    return (f" AND ({' OR '.join(terms)})" if terms else ""), [*products, *categories]


def arms(db: HqDb, campaign: str, window_s: float, *, products: Sequence[str] = (),
         categories: Sequence[str] = ()) -> tuple[dict[str, Arm], Arm]:
    """``campaign``'s treated shoppers by variant (``""``: none recorded) and its holdout;
    a conversion is a line of ``products`` or ``categories`` (none named: any line)."""
    lines, ids = _lines(products, categories)
    rows = db.query(_ARMS.format(lines=lines), (campaign, *ids, *ids, window_s))
    treated: dict[str, Arm] = {}
    control = Arm()
    for reason, variant, n, x, cents, sq in rows:
        arm = Arm(int(n), int(x), float(cents or 0), float(sq or 0))
        if reason == "holdout":
            control += arm
        else:
            key = "" if variant is None else str(variant)
            treated[key] = treated.get(key, Arm()) + arm
    return treated, control


def arm_lift(variant: str | None, t: Arm, c: Arm, min_per_arm: int) -> ArmLift:
    a = ArmLift(variant, t.shoppers, c.shoppers, t.converted, c.converted,
                round(t.converted / t.shoppers, 4) if t.shoppers else 0.0,
                round(c.converted / c.shoppers, 4) if c.shoppers else 0.0,
                round(t.cents), round(c.cents), "not_enough_data", min_per_arm)
    if t.shoppers < min_per_arm or c.shoppers < min_per_arm:
        return a
    n_t = t.shoppers
    d, lo, hi = newcombe_diff(t.converted, n_t, c.converted, c.shoppers)
    r, r_lo, r_hi = welch_diff(t, c)
    a.status = "ok"
    a.lift, a.lift_lo, a.lift_hi = round(d, 4), round(lo, 4), round(hi, 4)
    a.incremental_conversions = round(d * n_t, 1)
    a.incremental_conversions_lo, a.incremental_conversions_hi = round(lo * n_t, 1), round(hi * n_t, 1)
    a.incremental_revenue_cents = round(r * n_t)
    a.incremental_revenue_lo, a.incremental_revenue_hi = round(r_lo * n_t), round(r_hi * n_t)
    return a


def campaign_lift(db: HqDb, campaign: str, settings: Attribution
                  ) -> tuple[ArmLift, list[ArmLift]]:
    """Lift of ``campaign``'s treated shoppers overall, and per variant (each against
    the shared holdout), under ``settings``."""
    treated, control = arms(db, campaign, settings.window_s, products=settings.products,
                            categories=settings.categories)
    overall = arm_lift(None, sum(treated.values(), Arm()), control, settings.min_per_arm)
    return overall, [arm_lift(v, treated[v], control, settings.min_per_arm) for v in sorted(treated)]
