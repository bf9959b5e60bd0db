#!/usr/bin/env python3
"""Write docs/cli.md from every ``aislecast`` command's ``--help`` (all sub-commands).

Each command's help text is its docstring-with-examples (aislecast/cmd_*.py), so the
reference cannot say something the command does not. tests/test_docs.py fails when
docs/cli.md drifts from the parsers (sqlite-utils' docs/cli-reference habit).

    .venv/bin/python scripts/gen_cli_docs.py           # rewrite docs/cli.md
    .venv/bin/python scripts/gen_cli_docs.py --check   # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "cli.md"
COMMAND = ".venv/bin/python scripts/gen_cli_docs.py"
WIDTH = "100"  # argparse wraps help to $COLUMNS: fixed, so the text is the same everywhere

_HEADER = f"""# aislecast command reference

Generated from each command's `--help` by `{COMMAND}`; do not edit by hand
(`tests/test_docs.py` fails when this file and the commands disagree).

"""


def _subcommands(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """The parser, then each sub-command's parser, depth first, in registration order."""
    yield parser
    seen: set[int] = set()
    for action in parser._actions:  # argparse has no public walk of sub-parsers
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if id(sub) not in seen:  # an alias maps to the same parser
                    seen.add(id(sub))
                    yield from _subcommands(sub)


def render() -> str:
    """The whole of docs/cli.md, from the parsers as they are now."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        sys.path.insert(0, str(ROOT))
        from aislecast.apps.cli import build_parser  # noqa: PLC0415 - after the path is set

        parsers = list(_subcommands(build_parser()))
        contents = "\n".join(f"- [`{p.prog}`](#{p.prog.replace(' ', '-')})" for p in parsers)
        sections = [f"## {p.prog}\n\n```text\n{p.format_help().rstrip()}\n```\n" for p in parsers]
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    return _HEADER + contents + "\n\n" + "\n".join(sections)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/cli.md is out of date")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        current = DOC.read_text() if DOC.exists() else ""
        if current != text:
            print(f"{DOC.relative_to(ROOT)} is out of date: run {COMMAND}", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text)
    print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
