"""The ``aislecast`` command line.

Each sub-command lives in its own module exposing ``register(subparsers)``; its
parser's help text carries worked examples and its handler ``func(args) -> int``
returns the exit code.

A command module imports what its role needs at module level (``gateway`` needs
bleak, ``hq`` needs FastAPI, ...). A machine installed with one role's extra only
(``pip install 'aislecast[gateway]'`` on a Pi) cannot import the other roles'
commands; those are still listed, and running one says which extra to install
instead of failing with a traceback. ``bench`` lives with the benchmarks, which
ship in a source checkout and not in the wheel.

Running one command imports that command's module only (``aislecast gateway run``
would otherwise carry HQ's FastAPI and the staff tools' imaging stack: measured 43 MiB
of the gateway's resident memory); ``aislecast --help`` and unknown commands import
them all, so the listing is complete.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Final

from aislecast import __version__
from aislecast.kernel.errors import AislecastError

__all__ = ["build_parser", "main", "refuse_unused"]

# (commands, module, what to install when the module's dependencies are missing)
_COMMANDS: Final = (
    ("demo", "aislecast.apps.cmd_demo", "pip install 'aislecast[demo]'"),
    ("decode", "aislecast.apps.cmd_decode", "pip install aislecast"),
    ("gateway", "aislecast.apps.cmd_gateway", "pip install 'aislecast[gateway]'"),
    ("hq", "aislecast.apps.cmd_hq", "pip install 'aislecast[hq]'"),
    ("broker", "aislecast.apps.cmd_broker", "pip install 'aislecast[broker]'"),
    ("phone", "aislecast.apps.cmd_phone", "pip install aislecast"),
    ("doctor", "aislecast.apps.cmd_doctor", "pip install 'aislecast[gateway]'"),
    ("install", "aislecast.apps.cmd_install", "pip install aislecast"),
    ("bench", "benchmarks.command", "run it from a source checkout: make bench"),
    ("tags", "aislecast.apps.cmd_tags", "pip install 'aislecast[staff]'"),
    ("till", "aislecast.apps.cmd_till", "pip install aislecast"),
    ("qr beacons", "aislecast.apps.cmd_staff", "pip install 'aislecast[staff]'"),
)
_OWN_PACKAGES: Final = frozenset({"aislecast", "edge", "gateway", "hq", "firmware_config"})
# Libraries a command's process must not load even where they are installed (a full
# [dev] or [demo] install), because a dependency imports them when it finds them and
# never uses them there: structlog imports rich (for pretty tracebacks the gateway's
# log format never prints) and greenlet (for a deprecated thread-local), 3.8 and ~1 MiB
# of `gateway run`'s resident memory, measured; numpy and pandas, which sqlite-utils
# imported before the gateway stopped using it, stay refused (numpy was 17 MiB).
_REFUSED: Final = {"gateway": ("greenlet", "numpy", "pandas", "rich")}


def _unavailable(command: str, missing: str, fix: str) -> Callable[[argparse.Namespace], int]:
    def run(_args: argparse.Namespace) -> int:
        print(f"aislecast {command}: needs {missing!r}, which is not installed here; {fix}",
              file=sys.stderr)
        return 2

    return run


def _command_of(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv`` when it is one we know, else None."""
    first = next((a for a in argv if not a.startswith("-")), None)
    known = {c for commands, _, _ in _COMMANDS for c in commands.split()}
    return first if first in known else None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI, or with ``only`` the one command's module imported and registered."""
    parser = argparse.ArgumentParser(
        prog="aislecast",
        description="In-store proximity marketing: store gateways, HQ and staff tools.",
        epilog="Start with `aislecast demo` to see a simulated store end to end.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"aislecast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for commands, name, fix in _COMMANDS:
        if only is not None and only not in commands.split():
            continue
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            missing = (exc.name or "").split(".")[0]
            if missing in _OWN_PACKAGES and not name.startswith(missing):
                raise  # our own code is broken: show it
            for command in commands.split():
                stub = sub.add_parser(command, help=f"(not installed: {fix})", add_help=False)
                stub.add_argument("rest", nargs=argparse.REMAINDER)
                stub.set_defaults(func=_unavailable(command, exc.name or missing, fix))
            continue
        module.register(sub)
    return parser


def refuse_unused(command: str | None) -> None:
    """Make the libraries ``command``'s process must not load unimportable here (also
    used by the soak's gateway process, benchmarks/simclock.py, to measure what `gateway run` holds)."""
    for name in _REFUSED.get(command or "", ()):
        # None in sys.modules is the import system's "refuse": `import numpy` raises ImportError
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    command = _command_of(sys.argv[1:] if argv is None else argv)
    refuse_unused(command)
    parser = build_parser(command)
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
