"""``aislecast demo``: the simulated store end to end (see aislecast.apps.demo)."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import signal
import sys
import textwrap
from typing import Any

from aislecast.apps.demo import DemoOptions, DemoState, run_demo
from aislecast.apps.live import live_view
from aislecast.apps.scenarios import SCENARIOS
from aislecast.kernel.logs import setup_logging

__all__ = ["register"]

_HELP = textwrap.dedent(
    """\
    Run HQ, one simulated store gateway and simulated phones on a private Mosquitto
    broker and SQLite in a temp dir. Shows a live view until Ctrl-C, or runs headless.

    examples:
      aislecast demo                            # live view until Ctrl-C
      aislecast demo --seconds 20 --json        # headless: a "started" line, the summary last
      aislecast demo --http-port 8080           # and open http://127.0.0.1:8080/console
      aislecast demo --shoppers 20 --seconds 60
      aislecast demo --scenario flash --json    # one real-time marketing scenario
    """
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:

    p = sub.add_parser("demo", help="run the simulated store end to end", description=_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=None,
                   help="stop after N seconds (default: until Ctrl-C; 20 with --json)")
    p.add_argument("--shoppers", type=int, default=6, help="simulated shoppers (default 6)")
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="location")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", action="store_true", help="headless; print one JSON object")
    p.add_argument("--http-port", type=int, default=0, metavar="PORT",
                   help="serve the demo's HQ (API and console) on 127.0.0.1:PORT while it runs "
                        "(default: a free port, shown in the live view)")
    p.add_argument("--log-level", default="warning")
    p.set_defaults(func=_run)


async def _main(args: argparse.Namespace) -> dict[str, Any]:

    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    # SIGINT too, not left to asyncio.run: Python leaves SIGINT ignored when the demo
    # was started with it ignored (a background job of a script, some test runners'
    # workers), and asyncio.run then installs no handler, so Ctrl-C did nothing (CI:
    # the main task still asleep in its 600 s, the faulthandler dump showed)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    seconds = args.seconds if args.seconds is not None else (20.0 if args.json else None)
    opts = DemoOptions(seconds=seconds, shoppers=args.shoppers, scenario=args.scenario,
                       seed=args.seed, http_port=args.http_port)
    view = None
    if not args.json and sys.stdout.isatty():

        view = live_view
    return await run_demo(opts, state=DemoState(), view=view,
                          on_started=_print_started if args.json else None)


def _print_started(state: DemoState) -> None:
    print(json.dumps(state.started_line()), flush=True)


def _run(args: argparse.Namespace) -> int:
    if args.shoppers < 1:
        print("aislecast demo: --shoppers must be at least 1", file=sys.stderr)
        return 2
    setup_logging(args.log_level)
    # `kill -USR1 <pid>` prints every thread's stack to stderr: for a demo that does not
    # stop (tests/test_processes.py sends it before giving up on a stop)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        result = asyncio.run(_main(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("demo stopped", file=sys.stderr)
        return 0
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>22}: {v}")
    return 0
