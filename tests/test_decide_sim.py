"""A smaller simulated week through the real decision engine (see benchmarks/sim_week.py)."""

from __future__ import annotations

from benchmarks.sim_week import SimParams, simulate


def test_sim_week_small_holds_every_invariant() -> None:
    r = simulate(SimParams(shoppers=1_500, stores=2, campaigns=12, seed=3))
    assert r["violations"] == {}, r["violations"]
    assert r["budget_overspend_within_bound"] is True
    assert r["offers"] > 1_000  # type: ignore[operator]
    assert r["lift_recovered"] is True, (r["lift"], r["lift_ci95"])
