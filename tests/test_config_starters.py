"""``aislecast gateway init`` and ``aislecast hq init`` write the commented starters that
examples/ holds; they load as written and keep an existing file unless --force."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from aislecast.apps.cli import main
from gateway import config as gateway_config
from hq import config as hq_config

ROOT = Path(__file__).resolve().parent.parent

@dataclass(frozen=True)
class Role:
    name: str
    argv: list[str]  # its init command
    text: str  # its starter, as the package holds it
    load: Callable[[str], msgspec.Struct]
    defaults: msgspec.Struct  # what leaving every optional setting out gives


ROLES = [
    Role("gateway", ["gateway", "init"], gateway_config.starter_toml(), gateway_config.load_config,
         gateway_config.load_config({"gateway": "gw-1", "store": "store-1",
                                     "hq_public_key": "/etc/aislecast/hq.pub.pem",
                                     "scanner": {"backend": "bluez"}})),
    Role("hq", ["hq", "init", "--config-only"], hq_config.starter_toml(), hq_config.load_hq_config,
         hq_config.load_hq_config()),
]
each_role = pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])


@each_role
def test_init_writes_the_example_and_it_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], role: Role
) -> None:
    out = tmp_path / f"{role.name}.toml"
    assert main([*role.argv, "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    example = ROOT / "examples" / f"{role.name}.toml"
    assert out.read_text() == role.text == example.read_text()
    assert isinstance(role.load(str(out)), type(role.defaults))
    assert main([*role.argv, "-o", "-"]) == 0
    assert capsys.readouterr().out == role.text


@each_role
def test_commented_values_are_the_defaults(role: Role) -> None:
    """Each ``key = value`` a starter sets or shows commented out is what leaving it out
    gives, so the file cannot drift from the code (settings with no default, such as a
    device path or a password, are shown as examples and skipped here)."""
    table: tuple[str, ...] = ()
    checked = 0
    for line in role.text.splitlines():
        if m := re.fullmatch(r"#? ?\[\[?([\w.]+)\]\]?.*", line):
            table = tuple(m.group(1).split("."))  # [[shards]]: a list, no defaults to compare
            continue
        m = re.fullmatch(r"(?:# )?(\w+) = (.+?)(\s+#.*)?", line)
        if m is None:
            continue
        value = tomllib.loads(f"v = {m.group(2)}")["v"]
        node: Any = msgspec.to_builtins(role.defaults)
        for part in table:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if not isinstance(node, dict):
            continue
        default = node.get(m.group(1))
        if default is None:
            continue
        assert value == default, f"[{'.'.join(table)}] {m.group(1)}: starter says {value}, default {default}"
        checked += 1
    assert checked >= 5


@each_role
def test_init_keeps_an_existing_file_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], role: Role
) -> None:
    out = tmp_path / f"{role.name}.toml"
    out.write_text("# mine\n")
    assert main([*role.argv, "-o", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"aislecast: error: {out}: already exists (pass --force to overwrite it, or -o another file)\n")
    assert out.read_text() == "# mine\n"
    assert main([*role.argv, "-o", str(out), "--force"]) == 0  # the same command did write
    assert out.read_text() == role.text
    assert main([*role.argv, "-o", str(tmp_path / "no" / "dir.toml")]) == 2
    assert "cannot be written (No such file or directory)" in capsys.readouterr().err


def test_hq_init_without_config_only_writes_the_config_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the starter's data_dir is relative: keep it in tmp_path
    out = tmp_path / "hq.toml"
    assert main(["hq", "init", "-o", str(out)]) == 0
    assert out.read_text() == hq_config.starter_toml()
    assert "password (shown once)" in capsys.readouterr().out  # and the first admin
