"""docs/cli.md is generated from every command's ``--help`` and must not drift."""

from __future__ import annotations

import difflib
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts" / "gen_cli_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_current() -> None:
    gen = _generator()
    expected = gen.render()
    current = gen.DOC.read_text() if gen.DOC.exists() else ""
    if current != expected:
        diff = "".join(difflib.unified_diff(
            current.splitlines(keepends=True), expected.splitlines(keepends=True),
            "docs/cli.md", "from --help", n=1))
        raise AssertionError(
            f"docs/cli.md is out of date with the commands' --help; regenerate it with\n\n"
            f"    {gen.COMMAND}\n\nand commit the result. Difference:\n{diff[:4000]}")


def test_every_command_and_action_is_documented() -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    for prog in ("aislecast demo", "aislecast decode", "aislecast gateway run",
                 "aislecast gateway check", "aislecast hq serve", "aislecast doctor",
                 "aislecast bench", "aislecast tags read", "aislecast tags write",
                 "aislecast qr", "aislecast beacons plan", "aislecast beacons check"):
        assert f"\n## {prog}\n" in text, f"{prog} missing from docs/cli.md"


def test_check_mode_names_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--check`` is what CI can run; it says which command regenerates the file."""
    ok = subprocess.run([sys.executable, "scripts/gen_cli_docs.py", "--check"], cwd=ROOT,
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    gen = _generator()
    gen.DOC = tmp_path / "cli.md"
    gen.DOC.write_text("stale\n")
    gen.ROOT = tmp_path
    assert gen.main(["--check"]) == 1
    assert "run .venv/bin/python scripts/gen_cli_docs.py" in capsys.readouterr().err
