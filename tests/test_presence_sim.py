"""Presence defaults on the simulated store: zone accuracy >= 95 %, <= 1 flip per shopper-hour.

A smaller run of benchmarks/tune_presence.py (which defines the scoring and its grace
window) with fixed seeds, one run per noise condition: 4-6 dB noise, 10-20 % dropouts.
"""

from __future__ import annotations

import dataclasses

from benchmarks.tune_presence import CONDITIONS, score, simulate
from gateway.presence import PresenceParams


def test_defaults_meet_accuracy_and_flip_goals() -> None:
    runs = [simulate(1.5, noise, drop, seed=11 + k, concurrent=10)
            for k, (noise, drop) in enumerate(CONDITIONS)]
    s = score(PresenceParams(), runs)
    print(f"accuracy={s.accuracy:.4f} no-grace={s.accuracy_no_grace:.4f} transit={s.transit:.4f} "
          f"flips/h={s.flips_per_hour:.3f} over {s.shopper_hours:.1f} shopper-hours")
    assert s.shopper_hours > 4.0
    assert s.accuracy >= 0.95
    assert s.flips_per_hour <= 1.0
    assert s.transit >= 0.95
    assert s.missed_dwells == 0


def test_scoring_catches_a_bad_setting() -> None:
    """The test above could pass vacuously; a jumpy smoother must fail the flip goal."""
    run = simulate(1.0, 6.0, 0.2, seed=5, concurrent=10)
    jumpy = dataclasses.replace(PresenceParams(), smoother="one_euro", euro_min_cutoff=1.0,
                                euro_beta=0.05, hysteresis=0.0)
    assert score(jumpy, [run]).flips_per_hour > 1.0
