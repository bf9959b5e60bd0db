"""An accelerated clock for one process: ``time.time`` and ``time.monotonic`` run
``scale`` times faster than real time, while the event loop keeps real time.

What reads the clock through the ``time`` module at call time (the gateway's ticker,
presence, visits, caps, the decision engine's day windows, the outbox, HQ's bundle
builder, token epochs) sees the simulated clock. The event loop's own clock
(``asyncio.sleep``, timeouts), paho's keepalive and the threading primitives stay on the
real one: they took ``time.monotonic`` at import, or are given :class:`RealTimeLoop`.
So a task sleeping 0.5 s wakes after 0.5 real seconds, which is ``0.5 * scale``
simulated seconds; the broker, the network and the CPU work stay real.

Some components bind ``time.time`` when their module is imported (a default argument
``clock=time.time``), so the clock is installed before the product is imported: a soak
process is started as ``python -m benchmarks.simclock PLAN.json MODULE``, which imports
the MQTT client (paho keeps the real monotonic clock), installs the clock from the plan
and only then runs ``MODULE`` as ``__main__`` with ``PLAN.json`` as its argument.

Every process of one run is given the same origin (a real ``CLOCK_MONOTONIC`` reading,
shared by all processes of a host, and the simulated wall time it stands for), so their
simulated clocks agree.
"""

from __future__ import annotations

import asyncio
import json
import runpy
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt  # noqa: F401 - imported before the patch: paho binds the real monotonic clock

from aislecast.apps.cli import refuse_unused

__all__ = ["RealTimeLoop", "SimClock", "installed", "main", "run_on_real_loop"]

T = TypeVar("T")

_REAL_MONOTONIC = time.monotonic  # taken before any patch
#: The product command a soak process stands for: it refuses the same unused libraries
#: (rich and greenlet, which structlog imports where installed: ~5 MiB of the soak's
#: gateway RSS that `aislecast gateway run` never holds).
_AS_COMMAND = {"benchmarks.soak_gateway": "gateway"}


@dataclass(frozen=True, slots=True)
class SimClock:
    """``scale`` simulated seconds per real second from ``origin_real`` (a real
    monotonic reading), which stands for simulated wall time ``origin_wall``."""

    scale: float
    origin_real: float
    origin_wall: float

    def elapsed(self) -> float:
        """Simulated seconds since the origin."""
        return (_REAL_MONOTONIC() - self.origin_real) * self.scale

    def time(self) -> float:
        return self.origin_wall + self.elapsed()

    def monotonic(self) -> float:
        return self.origin_real + self.elapsed()

    def mono_of(self, wall: float) -> float:
        """The simulated monotonic reading at simulated wall time ``wall``."""
        return self.origin_real + (wall - self.origin_wall)


class RealTimeLoop(asyncio.SelectorEventLoop):
    """The default loop, on the real clock whatever ``time.monotonic`` says."""

    def time(self) -> float:
        return _REAL_MONOTONIC()


class ClockNotInstalled(RuntimeError):
    def __init__(self) -> None:
        super().__init__("no simulated clock: start this as `python -m benchmarks.simclock PLAN MODULE`")


_installed: SimClock | None = None


def installed() -> SimClock:
    """The clock this process runs on."""
    if _installed is None:
        raise ClockNotInstalled
    return _installed


def run_on_real_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on a :class:`RealTimeLoop` (``asyncio.run`` would use a loop on the
    patched clock, whose sleeps then last ``scale`` times too long)."""
    with asyncio.Runner(loop_factory=RealTimeLoop) as runner:
        return runner.run(main)


def main(argv: list[str]) -> None:
    """``PLAN.json MODULE``: install the plan's clock, then run ``MODULE`` as ``__main__``."""
    global _installed  # noqa: PLW0603 - one clock per process, installed once
    plan_file, module = argv
    plan = json.loads(Path(plan_file).read_text())
    clock = SimClock(plan["scale"], plan["origin_real"], plan["origin_wall"])
    _installed = clock
    refuse_unused(_AS_COMMAND.get(module))
    time.time = clock.time
    time.monotonic = clock.monotonic
    sys.argv = [module, plan_file]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    # the module by its own name, imported before the patch: the one the soak processes
    # import (this __main__ copy is another module object, never used past this line)
    from benchmarks.simclock import main as _main

    _main(sys.argv[1:])
