"""``aislecast install gateway|hq --root DIR``: the layout systemd/README.md describes,
written under a temporary root by the real CLI (no root, no systemd needed)."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import load_config, starter_toml
from hq.config import load_hq_config

ROOT = Path(__file__).resolve().parent.parent
EXE = Path(sys.executable).parent / "aislecast"


def install(*args: str) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "aislecast", "install", *args], capture_output=True,
                       text=True, timeout=60, check=False)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_gateway_layout(tmp_path: Path) -> None:
    r = install("gateway", "--root", str(tmp_path), "--exec", str(EXE))
    assert r.returncode == 0, r.stderr
    assert "skipped (--root): useradd --system --user-group --home-dir /var/lib/aislecast" in r.stdout
    assert (mode(tmp_path / "etc/aislecast"), mode(tmp_path / "var/lib/aislecast")) == (0o750, 0o750)
    config = tmp_path / "etc/aislecast/gateway.toml"
    assert config.read_text() == starter_toml() and mode(config) == 0o640
    assert load_config(config).scanner.backend == "bluez"  # never the simulator unasked
    unit = tmp_path / "etc/systemd/system/aislecast-gateway.service"
    shipped = (ROOT / "systemd/aislecast-gateway.service").read_text()
    assert unit.read_text() == shipped.replace("/opt/aislecast/venv/bin/aislecast", str(EXE))
    rules = (tmp_path / "etc/udev/rules.d/60-aislecast-nfc.rules").read_text().splitlines()
    for vid, pid in (("072f", "2200"), ("04e6", "5591"), ("054c", "06c3")):  # ACR122U, SCL3711, RC-S380
        assert (f'SUBSYSTEM=="usb", ATTRS{{idVendor}}=="{vid}", ATTRS{{idProduct}}=="{pid}", '
                'GROUP="plugdev", MODE="0660"') in rules
    assert all(line.startswith(("#", "SUBSYSTEM==")) and "  #" not in line for line in rules)
    assert (tmp_path / "etc/modprobe.d/aislecast-nfc.conf").read_text() == (
        "blacklist pn533_usb\nblacklist port100\n")
    assert "systemctl enable --now aislecast-gateway.service" in r.stdout


def test_a_second_run_keeps_the_config_and_puts_the_unit_back(tmp_path: Path) -> None:
    assert install("gateway", "--root", str(tmp_path)).returncode == 0
    config = tmp_path / "etc/aislecast/gateway.toml"
    config.write_text("# mine\n")
    unit = tmp_path / "etc/systemd/system/aislecast-gateway.service"
    unit.write_text("# edited in place\n")
    r = install("gateway", "--root", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert config.read_text() == "# mine\n" and f"{config} exists; kept" in r.stdout
    assert unit.read_text() == (ROOT / "systemd/aislecast-gateway.service").read_text()
    assert "udev rule" in r.stdout and "unchanged" in r.stdout


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    r = install("gateway", "--root", str(tmp_path / "img"), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "would: unit" in r.stdout and "would: starter config" in r.stdout
    assert not (tmp_path / "img").exists()


def test_hq_layout(tmp_path: Path) -> None:
    r = install("hq", "--root", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert mode(tmp_path / "var/lib/aislecast-hq") == 0o700
    cfg = load_hq_config(str(tmp_path / "etc/aislecast/hq.toml"))
    assert cfg.data_dir == "/var/lib/aislecast-hq"
    assert cfg.db_url() == "sqlite:////var/lib/aislecast-hq/hq.sqlite"  # the unit's StateDirectory
    assert (tmp_path / "etc/systemd/system/aislecast-hq.service").exists()
    assert not (tmp_path / "etc/udev").exists()
    assert "/opt/aislecast/venv/bin/aislecast hq init -o /etc/aislecast/hq.toml" in r.stdout


def test_bad_arguments_are_one_line(tmp_path: Path) -> None:
    r = install("gateway", "--root", str(tmp_path), "--exec", "bin/aislecast")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "--exec: 'bin/aislecast' is not an absolute path" in r.stderr


def test_a_root_it_may_not_write_is_one_line(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    r = install("gateway", "--root", str(ro / "img"))
    if r.returncode == 0:  # root ignores directory modes
        pytest.skip("running as root: a read-only directory does not stop it")
    assert r.returncode == 1 and "permission denied" in r.stderr and "--root DIR" in r.stderr


def test_installed_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    binary = shutil.which("systemd-analyze")
    if binary is None or not EXE.exists():
        pytest.skip("systemd-analyze or the venv's aislecast is not installed")
    for role in ("gateway", "hq"):
        assert install(role, "--root", str(tmp_path), "--exec", str(EXE)).returncode == 0
    units = sorted(str(p) for p in (tmp_path / "etc/systemd/system").glob("*.service"))
    r = subprocess.run([binary, "verify", *units], capture_output=True, text=True, check=False,
                       timeout=60)
    problems = [line for line in (r.stdout + r.stderr).splitlines()
                if line.strip() and "Failed to connect to bus" not in line]
    assert r.returncode == 0 and not problems, "\n".join(problems)
