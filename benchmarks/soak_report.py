"""The soak's numbers: the gateway process's sample lines, folded into benchmark rows and
a report directory (report.md plus PNG plots of RSS, latency and outbox over simulated time).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np

from benchmarks._harness import Measurement

__all__ = ["RSS_GOAL_MIB", "SoakRun", "summarize", "write_report"]

RSS_GOAL_MIB = 50.0  # issue 14: the gateway's RSS over a simulated day
_BUSY_ADVERTS = 200  # an hour with fewer adverts says little about its percentiles


@dataclass(slots=True)
class SoakRun:
    """What the gateway process reported: ``samples`` (every half real second) and
    ``hours`` (latency percentiles per simulated hour)."""

    params: dict[str, Any]
    shoppers: int
    samples: list[dict[str, Any]] = field(default_factory=list)
    hours: list[dict[str, Any]] = field(default_factory=list)

    def add(self, row: dict[str, Any]) -> None:
        if "hour" in row:
            self.hours.append(row)
        elif "sim" in row and "metrics" in row:
            self.samples.append(row)

    def sim_hours(self) -> np.ndarray:
        return np.array([s["sim"] / 3600 for s in self.samples])

    def rss(self) -> np.ndarray:
        return np.array([s["rss_mib"] for s in self.samples], dtype=float)

    def metric(self, name: str) -> np.ndarray:
        return np.array([s["metrics"].get(name, math.nan) for s in self.samples], dtype=float)

    def tasks_died(self) -> int:
        """Named tasks of the gateway found not alive in any sample (0: none ever died)."""
        return len({name for s in self.samples for name in s["died"]})

    def busy_hours(self) -> list[dict[str, Any]]:
        return [h for h in self.hours if h["adverts"] >= _BUSY_ADVERTS]


def _slope_per_hour(run: SoakRun) -> float:
    """Least-squares RSS slope (MiB per simulated hour) after the first bundle and the
    first shoppers: the warm-up (imports, first tables, first SQLite pages) is not a leak."""
    t, rss = run.sim_hours(), run.rss()
    busy = [h["hour"] for h in run.busy_hours()]
    start = busy[0] if busy else 0
    keep = t >= start
    if keep.sum() < 3:
        return math.nan
    return float(np.polyfit(t[keep], rss[keep], 1)[0])


def _spread(values: list[float]) -> float:
    """Worst hour over the median hour (1.0: perfectly stable)."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return max(vals) / float(np.median(vals)) if vals else math.nan


def summarize(run: SoakRun) -> list[Measurement]:
    if not run.samples:
        raise RuntimeError("the soak gateway reported no samples")
    rss, busy = run.rss(), run.busy_hours()
    extra: dict[str, float | int | str] = {
        "shoppers": run.shoppers, "sim_hours": run.params["hours"], "scale": run.params["scale"]}
    offers = float(np.nanmax(run.metric("publisher_offers_published")))
    versions = {v for v in run.metric("bundle_version") if v > 0}

    def row(metric: str, value: float, unit: str, better: str = "lower",
            more: dict[str, float | int | str] | None = None) -> Measurement:
        return Measurement("soak", "aislecast", metric, value, unit, better, extra={**extra, **(more or {})})

    all_adv = [h["advert_p99_us"] for h in busy]
    return [
        row("gateway RSS, start", float(rss[0]), "MiB"),
        row("gateway RSS, end", float(rss[-1]), "MiB", more={"goal_mib": RSS_GOAL_MIB}),
        row("gateway RSS, peak", float(rss.max()), "MiB", more={"goal_mib": RSS_GOAL_MIB}),
        row("gateway RSS slope", _slope_per_hour(run), "MiB/sim h"),
        row("named tasks died", float(run.tasks_died()), "tasks"),
        row("offers made", offers, "offers", "higher"),
        row("bundles applied", float(len(versions)), "bundles", "higher"),
        row("outbox depth, peak", float(np.nanmax(run.metric("outbox_rows"))), "rows"),
        row("advert p50 (median hour)", float(np.median([h["advert_p50_us"] for h in busy])), "us"),
        row("advert p99 (median hour)", float(np.median(all_adv)), "us"),
        row("advert p99 spread", _spread(all_adv), "worst/median hour"),
        row("decision p99 (median hour)",
            float(np.median([h["decision_p99_us"] for h in busy if h["decision_p99_us"] is not None]
                            or [math.nan])), "us"),
    ]


def _plot(path: Path, title: str, ylabel: str, series: list[tuple[str, Any, Any]],
          goal: float | None = None) -> None:
    fig, ax = plt.subplots(figsize=(8, 3.5), dpi=110)
    for label, x, y in series:
        ax.plot(x, y, label=label, marker="o" if len(x) < 40 else None, markersize=3)
    if goal is not None:
        ax.axhline(goal, color="red", linestyle="--", linewidth=1, label=f"goal {goal:g}")
    ax.set_xlabel("simulated hour of the day")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(run: SoakRun, out: Path) -> None:
    """``out``/report.md with the rows, three plots and every sample (samples.jsonl, to
    look again without running again) beside it."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*run.samples, *run.hours]))
    first = run.params["first_hour"]
    t = run.sim_hours() + first
    _plot(out / "rss.png", "gateway RSS over the simulated day", "MiB", [("VmRSS", t, run.rss())],
          goal=RSS_GOAL_MIB)
    hours = run.busy_hours()
    hx = [h["hour"] + first + 0.5 for h in hours]
    _plot(out / "latency.png", "per-advert path latency per simulated hour", "µs", [
        ("advert p50", hx, [h["advert_p50_us"] for h in hours]),
        ("advert p99", hx, [h["advert_p99_us"] for h in hours]),
        ("decision p99", hx, [h["decision_p99_us"] or math.nan for h in hours])])
    _plot(out / "load.png", "shoppers and the outbox", "count", [
        ("shoppers walking", t, [s["present"] for s in run.samples]),
        ("outbox rows", t, run.metric("outbox_rows")),
        ("offers made / 10", t, run.metric("publisher_offers_published") / 10)])
    rows = summarize(run)
    lines = [
        "# Soak report", "",
        f"Generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by `aislecast bench soak`"
        f"{' --quick' if run.params['hours'] < 24 else ''}: {run.shoppers:,} shoppers, "
        f"{run.params['hours']:g} simulated hours from {first:02.0f}:00 at {run.params['scale']:g}x "
        f"({run.params['hours'] * 3600 / run.params['scale'] / 60:.1f} real minutes).", "",
        "Real: Mosquitto, HQ (ingest, signed bundles republished every simulated 5 min), the "
        "gateway process and the bytes on air. Accelerated: `time.time`/`time.monotonic` in "
        "both processes; the event loop's sleeps stay real, so periodic tasks run coarser in "
        "simulated time (docs/architecture.md, section Soak). samples.jsonl holds every sample.", "",
        "| metric | value | unit |", "|---|---:|---|",
        *(f"| {r.metric} | {r.value:,.3f} | {r.unit} |" for r in rows), "",
        "| simulated hour | adverts | decisions | advert p50 µs | advert p99 µs | decision p99 µs |",
        "|---:|---:|---:|---:|---:|---:|",
        *(f"| {h['hour'] + first:02.0f}:00 | {h['adverts']:,} | {h['decisions']:,} | "
          f"{h['advert_p50_us']:.0f} | {h['advert_p99_us']:.0f} | "
          f"{'' if h['decision_p99_us'] is None else format(h['decision_p99_us'], '.0f')} |"
          for h in run.hours), "",
        "![RSS](rss.png)", "", "![latency](latency.png)", "", "![load](load.png)", "",
    ]
    (out / "report.md").write_text("\n".join(lines))
