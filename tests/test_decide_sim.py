"""A smaller simulated week through the real decision engine, HQ's till desk and its lift
(see benchmarks/sim_week.py)."""

from __future__ import annotations

from benchmarks.sim_week import SimParams, simulate


def test_sim_week_small_holds_every_invariant() -> None:
    p = SimParams(shoppers=1_500, stores=2, campaigns=12, seed=3)
    r = simulate(p)
    assert r["violations"] == {}, r["violations"]
    assert r["budget_overspend_within_bound"] is True
    assert r["offers"] > 1_000  # type: ignore[operator]
    till = r["till"]
    assert isinstance(till, dict)
    # every visit checked out at the till; treated shoppers redeemed codes, none refused
    assert till["checkouts"] == till["baskets"] > 1_000
    assert till["codes_redeemed"] > 500 and till["codes_refused"] == 0 and till["errors"] == 0
    # both arms bought through the till, and HQ's lift holds the planted truth
    assert r["converted_treated"] > 0 and r["converted_holdout"] > 0  # type: ignore[operator]
    assert r["true_lift"] == p.true_lift
    assert r["lift_recovered"] is True, (r["lift"], r["lift_ci95"])
    covered, judged = r["campaigns_ci_cover_truth"]  # type: ignore[misc]
    assert judged >= 10 and covered >= judged - 2
