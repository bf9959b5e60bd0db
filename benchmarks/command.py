"""``aislecast bench``: run benchmarks and print a table or JSON."""

from __future__ import annotations

import argparse
import asyncio
import textwrap

from benchmarks import BenchOptions, run_benchmarks

__all__ = ["register"]

_HELP = textwrap.dedent(
    """\
    Run benchmarks side by side with the peers named in the issues.

    examples:
      aislecast bench                 # every benchmark, as a table
      aislecast bench e2e --json      # one benchmark, as one JSON object
      aislecast bench decode --quick  # smoke-sized run
    """
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench", help="run benchmarks", description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quick", action="store_true", help="smoke-sized run")
    p.add_argument("--events", type=_count, metavar="N",
                   help="events for the benchmarks that take a size (rollups: default 10000000)")
    p.set_defaults(func=_run)


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a count of events (e.g. 1000000)")
    return int(text)


def _run(args: argparse.Namespace) -> int:
    opts = BenchOptions(quick=args.quick, events=args.events)
    return asyncio.run(run_benchmarks(list(args.names), as_json=args.json, opts=opts))
