"""systemd/*.service: the keys the deployment relies on, and ``systemd-analyze verify``.

The units name /opt/aislecast/venv/bin/aislecast (systemd/README.md); verify checks that
ExecStart exists, so the test verifies a copy pointing at this tree's ``aislecast``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNITS = {"gateway": ROOT / "systemd" / "aislecast-gateway.service",
         "hq": ROOT / "systemd" / "aislecast-hq.service",
         "broker-sync": ROOT / "systemd" / "aislecast-broker-sync.service"}
INSTALLED = "/opt/aislecast/venv/bin/aislecast"

COMMON = {
    "Type": "notify", "NotifyAccess": "main", "Restart": "on-failure", "KillSignal": "SIGTERM",
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
    "PrivateTmp": "yes",
}


def parse(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values (systemd allows a key more than once), continuations joined."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            out.setdefault(section, {})
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not key=value: {line!r}"
        out[section].setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_has_required_keys(name: str) -> None:
    unit = parse(UNITS[name])
    svc = unit["Service"]
    for key, value in COMMON.items():
        assert svc.get(key) == [value], f"{name}: {key}={svc.get(key)}"
    assert svc["User"][0] and svc["User"][0] != "root"
    assert svc["StateDirectory"], name
    assert 0 < int(svc["TimeoutStopSec"][0]) <= 30
    # the process pings at half the timeout (tests/test_notify.py); a hang is a restart
    assert 10 <= int(svc["WatchdogSec"][0]) <= 60
    assert int(svc["TimeoutStartSec"][0]) >= 60  # READY waits for the broker (and a bundle)
    assert "PYTHONFAULTHANDLER=1" in svc["Environment"][0].split()  # SIGABRT shows the stacks
    assert svc["ExecStart"][0].startswith(INSTALLED)
    families = set(svc["RestrictAddressFamilies"][0].split())
    assert {"AF_UNIX", "AF_INET"} <= families
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    if name == "gateway":
        assert " gateway run --config /etc/aislecast/gateway.toml" in svc["ExecStart"][0]
        assert "MALLOC_ARENA_MAX=2" in svc["Environment"][0].split()  # as the soak runs it
        assert "bluetooth" in svc["SupplementaryGroups"][0].split()  # D-Bus policy of org.bluez
        assert "bluetooth.service" in unit["Unit"]["After"][0]
        assert svc["StateDirectory"] == ["aislecast"]  # = gateway.toml's default data_dir
        assert svc.get("PrivateDevices") is None  # the NFC reader's USB/serial node
        assert "char-usb_device rw" in svc["DeviceAllow"]
    elif name == "broker-sync":
        assert " broker sync " in svc["ExecStart"][0] and "--pid-file" in svc["ExecStart"][0]
        assert svc["User"] == ["mosquitto"]  # may write the broker's files and SIGHUP it
        assert svc["ReadWritePaths"] == ["/etc/mosquitto/aislecast"]
        assert svc["PrivateDevices"] == ["yes"]
    else:
        assert " hq serve --config /etc/aislecast/hq.toml" in svc["ExecStart"][0]
        assert svc["PrivateDevices"] == ["yes"]


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    binary = shutil.which("systemd-analyze")
    if binary is None:
        pytest.skip("systemd-analyze is not installed; the key checks above still ran")
    exe = Path(sys.executable).parent / "aislecast"
    if not exe.exists():
        pytest.skip(f"{exe} not installed (pip install -e .)")
    copies = []
    for path in UNITS.values():
        copy = tmp_path / path.name
        copy.write_text(path.read_text().replace(INSTALLED, str(exe)))
        copies.append(str(copy))
    r = subprocess.run([binary, "verify", *copies], capture_output=True, text=True, check=False,
                       timeout=60)
    problems = [line for line in (r.stdout + r.stderr).splitlines()
                if line.strip() and "Failed to connect to bus" not in line]
    assert r.returncode == 0 and not problems, "\n".join(problems)


def test_every_documented_curl_to_hqs_api_sends_a_token() -> None:
    """/api/keys/bundle needs a token like every /api route (tests/test_refusals.py fetches
    it with the gateway_provisioning token these lines issue)."""
    docs = [ROOT / "systemd" / "README.md", ROOT / "gateway" / "starter.toml",
            ROOT / "hq" / "starter.toml"]
    curls = [line for p in docs for line in p.read_text(encoding="utf-8").splitlines()
             if "curl" in line and "/api/" in line]
    assert len(curls) >= 4  # the witness: the lines are there
    assert all('-H "Authorization: Bearer $TOKEN"' in line for line in curls), curls
