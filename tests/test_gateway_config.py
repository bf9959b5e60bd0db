"""Gateway config errors name the dotted field and the fix; through the CLI they are one
line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aislecast.apps.cli import main
from aislecast.kernel.errors import ConfigError
from aislecast.kernel.signing import public_key_pem
from aislecast.kernel.verify import key_id, public_key_from_pem
from gateway.config import load_config

BASE = {"gateway": "gw-1", "store": "s1", "hq_public_key": "-----BEGIN PUBLIC KEY-----x",
        "scanner": {"backend": "sim"}}
_PEM = public_key_pem(Ed25519PrivateKey.generate().public_key())
# `gateway check` parses the pinned key: a real one
TOP = f'gateway = "gw-1"\nstore = "s1"\nhq_public_key = """{_PEM}"""\n'
GOOD = TOP + '[scanner]\nbackend = "sim"\n'


@pytest.mark.parametrize(("data", "field", "fix"), [
    ({"store": "s1", "hq_public_key": "k"}, "gateway", '"gw-1"'),
    (BASE | {"brokr": {}}, "brokr", "did you mean broker?"),
    (BASE | {"broker": {"prot": 1}}, "broker.prot", "did you mean broker.port?"),
    (BASE | {"scanner": {"port": 1}}, "scanner.port", "belongs in [broker]"),
    (BASE | {"broker": {"port": "x"}}, "broker.port", "an integer from 1 to 65535"),
    (BASE | {"broker": {"port": 70000}}, "broker.port", "an integer from 1 to 65535"),
    (BASE | {"broker": 3}, "broker", "a table [broker]"),
    (BASE | {"scanner": {"backend": "bt"}}, "scanner.backend", '"bluez", "sim"'),
    (BASE | {"gateway": "g/1"}, "gateway", "letters"),
    (BASE | {"store": "s1\n"}, "store", "letters"),
    (BASE | {"presence": {"path_loss_exponent": 9.0}}, "presence.path_loss_exponent", "2.5"),
    (BASE | {"presence": {"hysteresis": 1.0}}, "presence.hysteresis", ">= 0 and < 1"),
    (BASE | {"nfc": {"poll_interval": 5.0}}, "nfc.poll_interval", "0.001 to 2.0"),
    (BASE | {"nfc": {"repeat_holdoff_s": -1.0}}, "nfc.repeat_holdoff_s", ">= 0"),
    (BASE | {"nfc": {"technologies": []}}, "nfc.technologies", "106A"),
    (BASE | {"nfc": {"technologies": ["106A", "bogus"]}}, "nfc.technologies", "106A"),
    (BASE | {"nfc": {"device": "com3"}}, "nfc.device", "usb"),
    (BASE | {"nfc": {"tags": {"T-17": {"zne": "dairy"}}}}, "nfc.tags.T-17.zne", "zone"),
    (BASE | {"scanner": {"backend": "bluez", "receivers": {"hci0": 1}}}, "scanner.receivers.hci0",
     "a string"),
    (BASE | {"scanner": {"adapter": "hci0"}}, "scanner.backend", 'backend = "bluez"'),
    ({k: v for k, v in BASE.items() if k != "scanner"}, "scanner", 'backend = "bluez"'),
    (BASE | {"metrics": {"port": 65536}}, "metrics.port", "0 to 65535"),
])
def test_each_error_names_field_and_fix(data: dict[str, object], field: str, fix: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(data)
    assert err.value.field == field
    assert err.value.fix is not None and fix in err.value.fix, err.value
    assert "\n" not in str(err.value)


def test_every_setting_and_default_is_kept() -> None:
    cfg = load_config(BASE)
    assert (cfg.data_dir, cfg.broker.host, cfg.broker.port, cfg.scanner.backend) == (
        "/var/lib/aislecast", "127.0.0.1", 1883, "sim")
    assert (cfg.nfc.technologies, cfg.nfc.repeat_holdoff_s, cfg.health_every_s) == (["106A"], 2.0, 10.0)
    assert cfg.metrics_port is None
    assert load_config(BASE | {"metrics": {"port": 9108}}).metrics_port == 9108
    tuned = load_config(BASE | {"presence": {"path_loss_exponent": 3.0}, "nfc": {"device": "usb"}})
    assert tuned.presence.params().path_loss_exponent == 3.0
    assert tuned.nfc.device == "usb"


def test_missing_key_file_says_where_to_get_it(tmp_path: Path) -> None:
    cfg = load_config(BASE | {"hq_public_key": str(tmp_path / "hq.pem")})
    with pytest.raises(ConfigError) as err:
        cfg.public_keys()
    assert "/api/keys/bundle" in str(err.value)


def test_several_keys_are_pinned_and_a_bad_one_is_named(tmp_path: Path) -> None:
    pems = [public_key_pem(Ed25519PrivateKey.generate().public_key()) for _ in range(2)]
    (tmp_path / "next.pem").write_text(pems[1])
    cfg = load_config(BASE | {"hq_public_key": [pems[0], str(tmp_path / "next.pem")]})
    assert [key_id(k) for k in cfg.public_keys()] == [
        key_id(public_key_from_pem(p)) for p in pems]
    bad = load_config(BASE | {"hq_public_key": [pems[0], "-----BEGIN PUBLIC KEY-----\nxx\n"]})
    with pytest.raises(ConfigError) as err:
        bad.public_keys()
    assert err.value.field == "hq_public_key[1]" and "Ed25519" in err.value.problem
    with pytest.raises(ConfigError) as empty:
        load_config(BASE | {"hq_public_key": []})
    assert empty.value.field == "hq_public_key"


def _binary(path: Path) -> None:
    path.write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00")


@pytest.mark.parametrize(("content", "says"), [
    (GOOD + "[brokr]\nport = 1\n", "brokr: is not a setting aislecast knows (did you mean broker?)"),
    (GOOD + "[broker]\nport = \"1883\"\n", 'broker.port: "1883" is a string (use an integer'),
    (GOOD + "[broker]\nport = 0\n", "broker.port: 0 is out of range (use an integer from 1 to 65535)"),
    ('store = "s1"\nhq_public_key = "k"\n', "gateway: is required (add it: "),
    (GOOD + "[scanner.receivers.hci0]\nzone = \"entrance\"\n",
     "scanner.receivers.hci0: is a table (use a string)"),
    (GOOD + "host = \"mqtt\"\n", "scanner.host: is not a setting of [scanner] "
                                           "(it belongs in [broker]"),
    (TOP + "[broker]\nport = 1884\n", 'scanner: is required (add it: a [scanner] table with '
                                        'backend = "bluez"'),
    (TOP + "[scanner]\nadapter = \"hci1\"\n", 'scanner.backend: is required (add it: backend = "bluez"'),
    ("gateway = \n", "is not valid TOML: Invalid value (at line 1, column 11)"),
    (b'gateway = "gw\xe9"\n', "is not UTF-8 text (byte 0xe9 at offset 13) (save the file as UTF-8)"),
    (_binary, "is a binary file, not TOML text"),
    (None, "does not exist (check the path, or write a starter file: aislecast gateway init -o "),
    (Path.mkdir, "is a directory (pass the path of the TOML file itself)"),
])
def test_cli_check_reports_a_bad_file_in_one_line_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: object, says: str
) -> None:
    path = tmp_path / "gw.toml"
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif callable(content):
        content(path)
    assert main(["gateway", "check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"aislecast: error: {path}: "), err
    assert says in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_cli_check_passes_a_good_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The witness for the refusals above: the same command, the same base, accepted."""
    path = tmp_path / "gw.toml"
    path.write_text(GOOD + "[broker]\nport = 1884\n[metrics]\nport = 9108\n")
    assert main(["gateway", "check", "--config", str(path)]) == 0
    assert "ok: gateway gw-1 of store s1, scanner sim, broker 127.0.0.1:1884" in capsys.readouterr().out


def test_broker_login_from_a_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "gw.mqtt-password"
    secret.write_text("s3cret-from-hq\n")
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")  # read at connect, not here
    cfg = load_config(BASE | {"broker": {"username": "gw.s1.gw-1", "password_file": str(secret),
                                         "tls_ca": str(tmp_path / "ca.pem")}})
    settings = cfg.broker.mqtt_settings()
    assert (settings.username, settings.password) == ("gw.s1.gw-1", "s3cret-from-hq")
    assert settings.tls_ca == str(tmp_path / "ca.pem")
    with pytest.raises(ConfigError, match=r"broker\.password_file: cannot read .*none") as err:
        load_config(BASE | {"broker": {"password_file": str(tmp_path / "none")}})
    assert "s3cret" not in str(err.value)
    with pytest.raises(ConfigError, match=r"broker\.password_file: is set together with broker\.password"):
        load_config(BASE | {"broker": {"password": "x", "password_file": str(secret)}})
    (tmp_path / "empty").write_text("")
    with pytest.raises(ConfigError, match=r"broker\.password_file: .*empty is empty"):
        load_config(BASE | {"broker": {"password_file": str(tmp_path / "empty")}})
