"""The ``aislecast`` command line.

Each sub-command lives in its own ``aislecast.cmd_*`` module exposing
``register(subparsers)``; its parser's help text carries worked examples and its
handler ``func(args) -> int`` returns the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from aislecast import __version__
from aislecast.errors import AislecastError

__all__ = ["build_parser", "main"]

_COMMAND_MODULES = (
    "aislecast.cmd_demo",
    "aislecast.cmd_decode",
    "aislecast.cmd_gateway",
    "aislecast.cmd_hq",
    "aislecast.cmd_phone",
    "aislecast.cmd_doctor",
    "aislecast.cmd_bench",
    "aislecast.cmd_tags",
    "aislecast.cmd_staff",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aislecast",
        description="In-store proximity marketing: store gateways, HQ and staff tools.",
        epilog="Start with `aislecast demo` to see a simulated store end to end.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"aislecast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # command not built yet in this tree
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args))
    except AislecastError as exc:
        print(f"aislecast: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
