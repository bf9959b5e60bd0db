"""The soak benchmark's own machinery: the accelerated clock and the report's arithmetic.

The soak itself (real Mosquitto, HQ and gateway processes) runs in
tests/test_bench_smoke.py as ``aislecast bench --quick``.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks._harness import percentile
from benchmarks.simclock import RealTimeLoop, SimClock
from benchmarks.soak_gateway import LatencyHistogram
from benchmarks.soak_report import SoakRun, summarize, write_report


def test_sim_clock_keeps_wall_and_monotonic_a_fixed_offset_apart() -> None:
    clock = SimClock(scale=120.0, origin_real=time.monotonic(), origin_wall=1_780_000_000.0)
    # read in either order: the offset is exact up to the reading between them
    wall, mono = clock.time(), clock.monotonic()
    assert wall - mono == pytest.approx(clock.origin_wall - clock.origin_real, abs=1.0)
    assert clock.mono_of(clock.origin_wall + 3600) == clock.origin_real + 3600
    assert clock.elapsed() >= 0


def test_real_time_loop_ignores_a_patched_monotonic(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = RealTimeLoop()
    try:
        monkeypatch.setattr(time, "monotonic", lambda: 1e12)  # what the soak's patch does
        assert loop.time() < 1e11  # the real clock, not the patched one
        assert loop.run_until_complete(asyncio.sleep(0, result="slept")) == "slept"
    finally:
        loop.close()


def _sample(sim_h: float, rss: float, died: list[str], version: int, offers: int) -> dict[str, Any]:
    return {"sim": sim_h * 3600, "rss_mib": rss, "died": died, "present": 3,
            "metrics": {"publisher_offers_published": offers, "bundle_version": version,
                        "outbox_rows": 2}}


def _hour(h: int, p99: float) -> dict[str, Any]:
    return {"hour": h, "adverts": 1000, "decisions": 10, "advert_p50_us": 2.0,
            "advert_p99_us": p99, "decision_p50_us": 100.0, "decision_p99_us": 300.0}


def _run(died_at: int | None) -> SoakRun:
    run = SoakRun(params={"hours": 4, "scale": 100.0, "first_hour": 8.0}, shoppers=10)
    for i in range(9):  # RSS grows 1 MiB per simulated hour
        run.add(_sample(i / 2, 40 + i / 2, ["gw-health"] if i == died_at else [], 1 + i // 2, i))
    for h, p99 in enumerate([20.0, 22.0, 40.0, 21.0]):
        run.add(_hour(h, p99))
    return run


def test_summary_counts_a_task_missing_from_one_sample_and_fits_the_slope() -> None:
    rows = {r.metric: r.value for r in summarize(_run(died_at=5))}
    assert rows["named tasks died"] == 1
    assert rows["gateway RSS slope"] == pytest.approx(1.0)
    assert (rows["gateway RSS, start"], rows["gateway RSS, peak"]) == (40.0, 44.0)
    assert rows["bundles applied"] == 5  # versions 1..5
    assert rows["offers made"] == 8
    assert rows["advert p99 spread"] == pytest.approx(40.0 / 21.5)
    assert {r.metric: r.value for r in summarize(_run(died_at=None))}["named tasks died"] == 0


def test_report_writes_markdown_plots_and_samples(tmp_path: Path) -> None:
    write_report(_run(died_at=None), tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "| named tasks died | 0.000 | tasks |" in text
    assert "| 10:00 | 1,000 | 10 |" in text  # simulated hour 2 of a run from 08:00
    assert len((tmp_path / "samples.jsonl").read_text().splitlines()) == 9 + 4
    for png in ("rss.png", "latency.png", "load.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_latency_histogram_is_within_a_bucket_below_the_nearest_rank() -> None:
    rng = random.Random(3)
    h = LatencyHistogram()
    for n in (1, 2, 10, 1000, 20_000):
        values = [rng.lognormvariate(3, 1.5) for _ in range(n)] + [5.0] * (n // 3) + [0.01, 1e10]
        h.clear()
        for v in values:
            h.add(v)
        assert len(h) == len(values)
        for q in (0.0, 0.5, 0.99, 1.0):
            exact, got = percentile(values, q), h.percentile(q)
            if exact < 0.1:  # below the first edge
                assert got == 0.0, (n, q)
            elif exact >= 1e8:  # past the last edge (100 s)
                assert got == pytest.approx(1e8, rel=1e-3), (n, q)
            else:
                assert got <= exact < got * 1.001, (n, q, exact, got)
    h.clear()
    assert math.isnan(h.percentile(0.5))
    assert len(h) == 0 and not any(h.counts)
