"""What a person sees when a command cannot do its job: one line on stderr naming what is
wrong and what to do, an exit code (2 bad input, 1 a failure), never a traceback.
Each runs the real CLI in a subprocess, as a person or a unit file would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from aislecast.kernel.broker import free_port
from aislecast.kernel.signing import load_or_create_signing_key, public_key_pem

pytestmark = pytest.mark.timeout(60)


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aislecast", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=45, check=False)


def one_line(r: subprocess.CompletedProcess[str], code: int, *says: str) -> None:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "Task exception" not in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("aislecast: error: "), r.stderr
    for s in says:
        assert s in r.stderr, r.stderr


def test_gateway_check_of_a_directory(tmp_path: Path) -> None:
    one_line(run("gateway", "check", "--config", str(tmp_path), cwd=tmp_path), 2,
             "is a directory (pass the path of the TOML file itself)")


@pytest.mark.parametrize(("content", "says"), [
    (b"\x7fELF\x02\x01\x01\x00\x00\x00", "is a binary file, not TOML text"),
    (b"\xff\xfegateway = 1\n", "is not UTF-8 text (byte 0xff at offset 0) (save the file as UTF-8)"),
])
def test_gateway_check_of_a_binary_file(tmp_path: Path, content: bytes, says: str) -> None:
    (tmp_path / "gw.toml").write_bytes(content)
    one_line(run("gateway", "check", "--config", "gw.toml", cwd=tmp_path), 2, f"gw.toml: {says}")


def test_gateway_config_without_a_scanner_backend(tmp_path: Path) -> None:
    (tmp_path / "gw.toml").write_text('gateway = "g"\nstore = "s"\nhq_public_key = "k"\n'
                                      '[scanner]\nadapter = "hci0"\n')
    one_line(run("gateway", "check", "--config", "gw.toml", cwd=tmp_path), 2,
             'scanner.backend: is required (add it: backend = "bluez" for a real adapter')


def test_phone_enroll_with_hq_down(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    one_line(run("phone", "enroll", "--hq", url, "--token", "t", cwd=tmp_path), 1,
             f"--hq: cannot reach HQ at {url} (connection refused)")


def test_phone_token_of_a_missing_enrolment(tmp_path: Path) -> None:
    one_line(run("phone", "token", "--me", "missing.json", cwd=tmp_path), 2,
             "--me: missing.json does not exist", "aislecast phone enroll > me.json")


def test_hq_serve_on_a_busy_port(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        r = run("hq", "serve", "--db", f"sqlite:///{tmp_path}/hq.sqlite", "--key",
                str(tmp_path / "hq.pem"), "--http-port", str(port), "--broker", "127.0.0.1:1",
                cwd=tmp_path)
    one_line(r, 1, f"cannot listen on 127.0.0.1:{port}: address already in use",
             "pick another [http] host and port (--http-host, --http-port)")
    assert not (tmp_path / "hq.sqlite").exists()  # refused before anything was opened


def test_doctor_without_dbus(tmp_path: Path) -> None:
    r = run("doctor", "--data-dir", str(tmp_path), "--broker", f"127.0.0.1:{free_port()}",
            cwd=tmp_path, env={"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path}/no-bus"})
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stderr == "", r.stderr
    lines = {line.split()[1]: line for line in r.stdout.splitlines()
             if line.startswith(("ok", "warn", "fail"))}
    bus = lines["permissions"]
    assert bus.startswith("fail") and "D-Bus unreachable (no such file or directory)" in bus, r.stdout
    assert "FileNotFoundError" not in r.stdout
    assert lines["adapter"].startswith("fail") and "hci0 unknown" in lines["adapter"], r.stdout
    assert lines["disk"].startswith("ok"), r.stdout  # the checks after it still ran


def test_gateway_run_with_its_metrics_port_busy(tmp_path: Path) -> None:
    pem = public_key_pem(load_or_create_signing_key(tmp_path / "hq.pem").public_key())
    (tmp_path / "hq.pub.pem").write_text(pem)
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        (tmp_path / "gw.toml").write_text(
            f'gateway = "g"\nstore = "s"\nhq_public_key = "{tmp_path / "hq.pub.pem"}"\n'
            f'data_dir = "{tmp_path / "data"}"\n[broker]\nport = {free_port()}\n'
            f'[scanner]\nbackend = "sim"\n[metrics]\nport = {port}\n')
        r = run("gateway", "run", "--config", "gw.toml", cwd=tmp_path)
    # the log lines before it go to stderr too: the error is the last line, alone
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    last = r.stderr.splitlines()[-1]
    assert last.startswith("aislecast: error: ") and (
        f"cannot listen on 127.0.0.1:{port}: address already in use" in last), r.stderr
    assert "pick another [metrics] port" in last
