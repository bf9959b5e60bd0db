"""Registry, runner and reporting for benchmarks (table on stdout, or one JSON object)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

__all__ = ["REGISTRY", "BenchOptions", "Measurement", "benchmark", "env_count", "mean_ms",
           "percentile", "run_benchmarks", "stop_process"]


def env_count(name: str, default: int, *, minimum: int, what: str, hint: str) -> int:
    """A benchmark's size from environment variable ``name`` (``default`` when unset);
    anything but a whole number of at least ``minimum`` is a one-line error."""
    from aislecast.kernel.errors import AislecastError  # noqa: PLC0415 - errors only

    text = os.environ.get(name, "")
    if not text:
        return default
    if not text.isdigit() or int(text) < minimum:
        raise AislecastError(f"{name}={text[:20]!r} is not {what}", hint=hint)
    return int(text)


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """``quick`` shrinks every benchmark to a smoke-sized run (used by the test suite);
    ``events`` sizes the benchmarks that take a number of events (``rollups``)."""

    quick: bool = False
    events: int | None = None


@dataclass(slots=True)
class Measurement:
    """One number: ``subject`` is ours (``aislecast``) or a peer's name."""

    benchmark: str
    subject: str
    metric: str
    value: float
    unit: str
    better: str = "higher"  # or "lower"
    extra: dict[str, float | int | str] = field(default_factory=dict)


BenchFn = Callable[[BenchOptions], Awaitable[list[Measurement]]]
REGISTRY: dict[str, BenchFn] = {}

# Modules holding benchmarks; importing one registers its functions.
_MODULES = (
    "benchmarks.bench_e2e",
    "benchmarks.bench_decode",
    "benchmarks.bench_nfc",
    "benchmarks.bench_decide",
    "benchmarks.bench_fanout",
    "benchmarks.bench_ingest",
    "benchmarks.bench_rollups",
    "benchmarks.bench_stats",
    "benchmarks.bench_hq_workers",
    "benchmarks.bench_tap_e2e",
    "benchmarks.bench_presence",
    "benchmarks.bench_creds",
    "benchmarks.bench_enrol",
    "benchmarks.bench_enrol_delta",
    "benchmarks.bench_gateway_rss",
    "benchmarks.bench_kill",
    "benchmarks.bench_soak",
    "benchmarks.bench_console",
    "benchmarks.bench_till",
    "benchmarks.bench_feeds",
    "benchmarks.bench_fleet",
    "benchmarks.bench_wallet",
    "benchmarks.bench_scope",
    "benchmarks.bench_fanout_bundles",
)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1) of ``values``, unsorted; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def mean_ms(fn: Callable[[], object], times: int) -> float:
    """Mean wall time of one ``fn()`` in ms, over ``times`` calls in a row."""
    t = time.perf_counter()
    for _ in range(times):
        fn()
    return (time.perf_counter() - t) / times * 1000


async def stop_process(proc: asyncio.subprocess.Process, within: float = 10.0) -> None:
    """SIGTERM ``proc`` (a clean shutdown), SIGKILL it if it is not gone ``within``
    seconds (a child blocked writing to a pipe nobody reads never acts on SIGTERM), and
    reap it. A process that already exited is only reaped."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
    try:
        async with asyncio.timeout(within):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()


def benchmark(name: str) -> Callable[[BenchFn], BenchFn]:
    def wrap(fn: BenchFn) -> BenchFn:
        REGISTRY[name] = fn
        return fn

    return wrap


def _load() -> None:
    for mod in _MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


def _ratios(rows: list[Measurement]) -> list[tuple[Measurement, float | None]]:
    """Pair each row with ours/peer on the same (benchmark, metric); None for our own."""
    ours = {(r.benchmark, r.metric): r.value for r in rows if r.subject == "aislecast"}
    out: list[tuple[Measurement, float | None]] = []
    for r in rows:
        base = ours.get((r.benchmark, r.metric))
        if r.subject == "aislecast" or base is None or r.value == 0 or base == 0:
            out.append((r, None))
        elif r.better == "higher":
            out.append((r, base / r.value))
        else:
            out.append((r, r.value / base))
    return out


def _print_table(rows: list[Measurement], out: TextIO) -> None:
    from rich.console import Console  # noqa: PLC0415 - only for the table
    from rich.table import Table  # noqa: PLC0415

    table = Table(title="aislecast benchmarks (ratio = how many times better aislecast is)")
    for col in ("benchmark", "subject", "metric", "value", "unit", "ratio"):
        table.add_column(col, justify="right" if col in {"value", "ratio"} else "left")
    for r, ratio in _ratios(rows):
        table.add_row(
            r.benchmark,
            r.subject,
            r.metric,
            f"{r.value:,.3f}" if abs(r.value) < 100 else f"{r.value:,.0f}",
            r.unit,
            "" if ratio is None else f"{ratio:,.1f}x",
        )
    Console(file=out, width=140).print(table)


def _save_json(text: str) -> Path:
    """The same numbers as JSON beside the table, for tooling and comparing runs."""
    path = Path(os.environ.get("AISLECAST_BENCH_JSON", "artifacts/bench.json"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


async def run_benchmarks(
    names: list[str], *, as_json: bool, opts: BenchOptions, out: TextIO = sys.stdout
) -> int:
    """Run the named benchmarks (all when empty); return a process exit code."""
    _load()
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(sorted(REGISTRY))}",
              file=sys.stderr)
        return 2
    rows: list[Measurement] = []
    for name in names or sorted(REGISTRY):
        t0 = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        rows += await REGISTRY[name](opts)
        print(f"[bench] {name} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    payload = {
        "results": [
            asdict(r) | ({"ratio": ratio} if ratio is not None else {})
            for r, ratio in _ratios(rows)
        ]
    }
    text = json.dumps(payload, indent=2) + "\n"
    if as_json:
        out.write(text)
    else:
        _print_table(rows, out)
        print(f"[bench] JSON written to {_save_json(text)}", file=sys.stderr)
    return 0
