"""Gateway config errors name the field and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from aislecast.apps.cli import main
from aislecast.kernel.errors import ConfigError
from gateway.config import load_config

BASE = {"gateway": "gw-1", "store": "s1", "hq_public_key": "-----BEGIN PUBLIC KEY-----x"}


@pytest.mark.parametrize(("data", "field", "hint"), [
    ({"store": "s1", "hq_public_key": "k"}, "gateway", "gw-1"),
    (BASE | {"brokr": {}}, "brokr", "spelling"),
    (BASE | {"broker": {"prot": 1}}, "broker.prot", "spelling"),
    (BASE | {"broker": {"port": "x"}}, "broker.port", None),
    (BASE | {"broker": {"port": 70000}}, "broker.port", "1..65535"),
    (BASE | {"scanner": {"backend": "bt"}}, "scanner.backend", "bluez"),
    (BASE | {"gateway": "g/1"}, "gateway", "letters"),
    (BASE | {"presence": {"path_loss_exponent": 9.0}}, "presence.path_loss_exponent", "2.5"),
])
def test_each_error_names_field_and_fix(data: dict[str, object], field: str, hint: str | None) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(data)
    assert err.value.field == field
    if hint is not None:
        assert hint in str(err.value)


def test_missing_key_file_says_where_to_get_it(tmp_path: Path) -> None:
    cfg = load_config(BASE | {"hq_public_key": str(tmp_path / "hq.pem")})
    with pytest.raises(ConfigError) as err:
        cfg.public_key_pem()
    assert "/api/keys/bundle" in str(err.value)


def test_cli_check_reports_a_bad_file_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gw.toml"
    path.write_text('gateway = "gw-1"\nstore = "s1"\nhq_public_key = "k"\n[scanner]\nbackend = "bt"\n')
    assert main(["gateway", "check", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "scanner.backend" in err
    assert "Traceback" not in err
    path.write_text("gateway = ")
    assert main(["gateway", "check", "--config", str(path)]) == 1
    assert "not valid TOML" in capsys.readouterr().err
