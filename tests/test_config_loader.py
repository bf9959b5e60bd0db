"""aislecast.kernel.config on a small schema of its own: where a refusal points, and what
the fix says, for each shape a TOML file can take."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import msgspec
import pytest

from aislecast.kernel.config import TcpPort, decode, dotted, load_toml
from aislecast.kernel.errors import ConfigError


class Link(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: TcpPort = 1883


class Place(msgspec.Struct, forbid_unknown_fields=True):
    zone: str
    weight: Annotated[float, msgspec.Meta(gt=0, le=1)] = 1.0


class Root(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=8)]
    mode: Literal["a", "b"] = "a"
    tags: Annotated[list[Annotated[str, msgspec.Meta(min_length=2)]], msgspec.Meta(max_length=3)] = []
    link: Link = msgspec.field(default_factory=Link)
    places: dict[str, Place] = {}
    debug: bool = False


def _refuse(data: dict[str, object]) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        decode(data, Root, file="x.toml")
    return err.value


def test_a_good_table_decodes_unchanged() -> None:
    """The witness: the data the refusals below change one thing in."""
    root = decode({"name": "n", "tags": ["ab"], "places": {"a.b": {"zone": "z"}}}, Root)
    assert root.places["a.b"].weight == 1.0
    assert root.link.port == 1883


@pytest.mark.parametrize(("data", "field", "problem", "fix"), [
    ({}, "name", "is required", "add name = a string of 1 to 8 characters"),
    ({"name": ""}, "name", '"" is not allowed', "use a string of 1 to 8 characters"),
    ({"name": "n", "mode": "c"}, "mode", '"c" is not one of the choices', 'use one of "a", "b"'),
    ({"name": "n", "mode": 1}, "mode", "1 is an integer", 'use one of "a", "b"'),
    ({"name": "n", "debug": "yes"}, "debug", '"yes" is a string', "use true or false"),
    ({"name": "n", "tags": ["ab", "c"]}, "tags[1]", '"c" is not allowed', "at least 2 characters"),
    ({"name": "n", "tags": ["ab"] * 4}, "tags", "is not allowed", "a list of 0 to 3 items"),
    ({"name": "n", "link": {"port": 0}}, "link.port", "0 is out of range", "from 1 to 65535"),
    ({"name": "n", "link": {"port": 1.5}}, "link.port", "1.5 is a number", "an integer"),
    ({"name": "n", "link": []}, "link", "[] is a list", "use a table [link]"),
    ({"name": "n", "places": {"a.b": {}}}, 'places."a.b".zone', "is required", "add zone ="),
    ({"name": "n", "places": {"p": {"zone": "z", "weight": 0}}}, "places.p.weight",
     "0 is out of range", "use a number > 0 and <= 1"),
    ({"name": "n", "places": {"p": {"zone": "z", "wieght": 1}}}, "places.p.wieght",
     "is not a setting of [places.p]", "did you mean places.p.weight?"),
    ({"name": "n", "port": 1}, "port", "is not a setting aislecast knows", "belongs in [link]"),
    ({"name": "n", "link": {"name": "n"}}, "link.name", "is not a setting of [link]",
     "at the top of the file"),
    ({"name": "n", "qqq": 1}, "qqq", "is not a setting aislecast knows",
     "remove it; the settings here are debug, link, mode, name, places, tags"),
])
def test_refusal_names_field_problem_and_fix(
    data: dict[str, object], field: str, problem: str, fix: str
) -> None:
    err = _refuse(data)
    assert (err.file, err.field) == ("x.toml", field)
    assert problem in err.problem
    assert err.fix is not None and fix in err.fix, err.fix
    assert str(err).startswith(f"x.toml: {field}: ")
    assert "\n" not in str(err) and "$." not in str(err)  # our words, not msgspec's


def test_dotted_spells_paths_as_toml_does() -> None:
    assert dotted(("nfc", "tags", "T-17", "zone")) == "nfc.tags.T-17.zone"
    assert dotted(("nfc", "tags", "T 17", "zone")) == 'nfc.tags."T 17".zone'
    assert dotted(("places", "a.b", "zone")) == 'places."a.b".zone'
    assert dotted(("tags", 2)) == "tags[2]"
    assert dotted(()) == ""


def test_load_toml_reads_decodes_and_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text('name = "n"\n[link]\nport = 1884\n')
    assert load_toml(path, Root, create_hint="make one").link.port == 1884
    path.write_text('name = "n"\n[link]\nport = 0\n')
    with pytest.raises(ConfigError) as err:
        load_toml(path, Root, create_hint="make one")
    assert (err.value.file, err.value.field) == (str(path), "link.port")


def test_unreadable_file_says_so(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text('name = "n"\n')
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root: every file is readable")
        with pytest.raises(ConfigError, match="permission denied"):
            load_toml(path, Root, create_hint="make one")
    finally:
        path.chmod(0o600)
