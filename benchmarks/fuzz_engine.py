"""Run one fuzz target under hypothesis, with a per-input watchdog and a memory bound.

A :class:`Target` is a strategy of inputs and a ``feed`` that pushes one input through
real components; anything ``feed`` raises is a failure (kept, counted, never shrunk:
the run goes on), and so is a problem its ``check`` reports after the run. Hypothesis
only generates here (no shrinking, no example database, no deadline): the loop ends
after ``count`` inputs or ``budget_s`` seconds, whichever comes first.

The watchdog is :func:`faulthandler.dump_traceback_later`: an input that runs longer
than ``hang_s`` dumps every thread's stack and ends the process (a hang in a handler
is a bug, and nothing short of that stops it). Memory is traced by :mod:`tracemalloc`
(Python allocations, which is where an unbounded list or dict would grow): the peak
over the run (hypothesis's own bookkeeping included), and the growth of what the
product holds (allocations made in its packages' code: :data:`PRODUCT`) from after
the first tenth of the run to its end.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import random
import sys
import time
import traceback
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

import aislecast
import edge
import gateway
import hq

__all__ = ["PRODUCT", "FuzzResult", "Target", "print_kept", "quiet_logs", "run_target"]

_FAILURES_KEPT = 3


@dataclass(slots=True)
class Target:
    name: str
    inputs: st.SearchStrategy[Any]
    feed: Callable[[Any], None]
    check: Callable[[], list[str]] = list  # invariants over the whole run: problems found
    outcomes: Callable[[], dict[str, int]] = dict  # the witnesses: what the inputs did
    close: Callable[[], None] = lambda: None
    #: cheap variants of a drawn input (byte edits, spliced samples): hypothesis's draws
    #: cost milliseconds, a variant microseconds, so each draw is fed ``variants`` times more
    vary: Callable[[Any, random.Random], Any] | None = None


@dataclass(slots=True)
class FuzzResult:
    name: str
    inputs: int = 0
    failures: int = 0
    elapsed_s: float = 0.0
    slowest_s: float = 0.0
    peak_mib: float = 0.0
    growth_mib: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)

    def line(self) -> str:
        rate = self.inputs / self.elapsed_s if self.elapsed_s else 0.0
        return (f"fuzz-inputs {self.name}: {self.inputs:,} inputs, {self.failures} failures, "
                f"{self.elapsed_s:.1f} s ({rate:,.0f}/s), slowest {self.slowest_s * 1000:.1f} ms, "
                f"peak {self.peak_mib:.1f} MiB, growth {self.growth_mib:+.1f} MiB")


class _Stop(Exception):
    """Raised from the loop's body to end hypothesis's run (budget spent)."""


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """Handlers log each refusal; a million of them would be the run's cost, not its point."""
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _mib(n: int) -> float:
    return n / 2**20


#: Where the product's own allocations are made: what it holds is the growth measured.
#: Not hypothesis (its caches of drawn inputs grow with a run by design), nor the
#: strategies' own code.
PRODUCT = tuple(tracemalloc.Filter(True, str(Path(m.__file__).parent / "*"))
                for m in (aislecast, edge, gateway, hq) if m.__file__)


def _held() -> int:
    """Bytes held now by allocations made in the product's code."""
    return sum(t.size for t in tracemalloc.take_snapshot().filter_traces(PRODUCT).traces)


class _Feeder:
    """Feeds one input at a time: its time, the watchdog, failures, the warm-up mark."""

    def __init__(self, target: Target, res: FuzzResult, *, hang_s: float | None,
                 warm_at: int, warm_after_s: float) -> None:
        self.target, self.res, self.hang_s = target, res, hang_s
        self.warm_at, self.warm_after_s = warm_at, warm_after_s
        self.started = time.perf_counter()
        self.warm_mem = 0

    def __call__(self, value: Any) -> None:
        res, hang_s = self.res, self.hang_s
        if hang_s is not None:
            faulthandler.dump_traceback_later(hang_s, exit=True)
        t0 = time.perf_counter()
        try:
            self.target.feed(value)
        except Exception:  # noqa: BLE001 - a fuzzer counts every failure and goes on
            res.failures += 1
            if len(res.kept) < _FAILURES_KEPT:
                res.kept.append(f"input {str(value)[:300]!r}:\n{traceback.format_exc()}")
        took = time.perf_counter() - t0
        if hang_s is not None:
            faulthandler.cancel_dump_traceback_later()
        res.slowest_s = max(res.slowest_s, took)
        res.inputs += 1
        if not self.warm_mem and tracemalloc.is_tracing() and (
                res.inputs >= self.warm_at or t0 - self.started > self.warm_after_s):
            self.warm_mem = _held()


def run_target(target: Target, *, count: int, budget_s: float, seed: int,
               hang_s: float | None = None, trace_memory: bool = True,
               variants: int = 20) -> FuzzResult:
    """Feed up to ``count`` drawn inputs, each with ``variants`` variants (or ``budget_s``
    seconds of them) to ``target``."""
    res = FuzzResult(target.name)
    one = _Feeder(target, res, hang_s=hang_s, warm_at=max(1, count * (variants + 1) // 10),
                  warm_after_s=budget_s / 10)
    tracing = trace_memory and not tracemalloc.is_tracing()
    if tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()

    @settings(max_examples=count, database=None, deadline=None, derandomize=False,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck),
              report_multiple_bugs=False, verbosity=Verbosity.quiet)
    @given(st.data())
    def loop(data: st.DataObject) -> None:
        drawn = data.draw(target.inputs)
        rng = random.Random(data.draw(st.integers(0, 2**64 - 1)))  # cheap draws from here
        if time.perf_counter() - one.started > budget_s:
            raise _Stop  # after the draws: hypothesis replays this input the same way
        one(drawn)
        if target.vary is not None:
            for _ in range(variants):
                one(target.vary(drawn, rng))

    try:
        with quiet_logs():
            hypothesis_seed(seed)(loop)()
    except _Stop:
        pass
    finally:
        if tracemalloc.is_tracing():
            res.peak_mib = _mib(tracemalloc.get_traced_memory()[1])
            res.growth_mib = _mib(_held() - one.warm_mem) if one.warm_mem else 0.0
        if tracing:
            tracemalloc.stop()
        res.elapsed_s = time.perf_counter() - one.started
    res.kept += (problems := target.check())
    res.failures += len(problems)
    res.outcomes = target.outcomes()
    return res


def print_kept(res: FuzzResult) -> None:
    for text in res.kept:
        print(f"--- {res.name} failure ---\n{text}", file=sys.stderr)
