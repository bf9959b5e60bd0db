"""What the commands that read or write a role's TOML config share.

:func:`add_init_arguments` and :func:`write_starter` are ``aislecast gateway init`` and
``aislecast hq init``: a commented starter file, never over an existing one without
``--force``. :func:`config_exit_code` wraps a command so that a bad config is one line
on stderr and exit code 2 (bad input, as argparse's own usage errors), not 1 (a
failure while running).
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path

from aislecast.kernel.errors import ConfigError

__all__ = ["CONFIG_EXIT", "add_init_arguments", "config_exit_code", "write_starter"]

CONFIG_EXIT = 2

Handler = Callable[[argparse.Namespace], int]


def config_exit_code(func: Handler) -> Handler:
    """``func``, with a :class:`ConfigError` printed as one line and exit code 2."""

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except ConfigError as exc:
            print(f"aislecast: error: {exc}", file=sys.stderr)
            return CONFIG_EXIT

    return run


def add_init_arguments(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("-o", "--output", default=default, metavar="FILE",
                        help="where to write it; - for stdout (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="overwrite FILE if it exists")


def write_starter(text: str, output: str, *, force: bool, check: str) -> int:
    """Write ``text`` to ``output`` (``-``: stdout); ``check`` is the command to try it."""
    if output == "-":
        sys.stdout.write(text)
        return 0
    path = Path(output)
    if path.is_dir():
        raise ConfigError("", "is a directory", file=output,
                          hint=f"name the file to write, e.g. -o {path / 'config.toml'}")
    try:
        with path.open("w" if force else "x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        raise ConfigError("", "already exists", file=output,
                          hint="pass --force to overwrite it, or -o another file") from None
    except OSError as exc:
        raise ConfigError("", f"cannot be written ({exc.strerror})", file=output,
                          hint="pick a directory you may write to") from None
    print(f"wrote {output}; edit it, then check it with: {check.format(path=output)}")
    return 0
