"""``aislecast doctor --json`` from outside: fake BlueZ on a private bus, private broker,
an nfcpy udp reader, and the same with the reader and the broker missing."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from fakebluez import FakeBlueZ

from aislecast.kernel.broker import MosquittoProcess, free_port

pytest_plugins = ["fakebluez.fixtures"]
pytestmark = pytest.mark.timeout(60)

NAMES = ["permissions", "adapter", "passive scan", "bluez version", "nfc reader", "broker",
         "clock", "disk"]
UDP_READER = "udp:127.0.0.1:24613"  # below 32768 (docs/architecture.md#nfc-with-nfcpy), used by no other test


async def doctor(bus: str, *args: str) -> tuple[int, dict[str, Any]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aislecast", "doctor", "--json", *args,
        env={**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": bus},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(30):  # the fake answers from this test's own event loop
        out, err = await proc.communicate()
    assert proc.returncode is not None
    assert not err.strip(), err.decode()
    return proc.returncode, json.loads(out)


def by_name(report: dict[str, Any]) -> dict[str, dict[str, str]]:
    assert set(report) == {"ok", "checks"}
    assert [c["name"] for c in report["checks"]] == NAMES
    for c in report["checks"]:
        assert set(c) == {"name", "status", "detail", "hint"}
        assert c["status"] in {"ok", "warn", "fail"}
        assert c["detail"]
        assert c["status"] == "ok" or c["hint"] or c["name"] == "bluez version", c
    return {c["name"]: c for c in report["checks"]}


async def test_doctor_json_all_present(
    private_system_bus: str, fake_bluez: FakeBlueZ, broker: MosquittoProcess, tmp_path: Path
) -> None:
    rc, report = await doctor(private_system_bus, "--broker", f"127.0.0.1:{broker.port}",
                              "--data-dir", str(tmp_path), "--nfc", UDP_READER)
    checks = by_name(report)
    assert rc == 0 and report["ok"] is True, report
    for name in ("permissions", "adapter", "passive scan", "nfc reader", "broker"):
        assert checks[name]["status"] == "ok", checks[name]
    assert "found" in checks["nfc reader"]["detail"]
    assert UDP_READER in checks["nfc reader"]["detail"]


async def test_doctor_json_reader_and_broker_missing(
    private_system_bus: str, fake_bluez: FakeBlueZ, tmp_path: Path
) -> None:
    fake_bluez.power_off()
    rc, report = await doctor(private_system_bus, "--broker", f"127.0.0.1:{free_port()}",
                              "--data-dir", str(tmp_path), "--nfc", "tty:USB9:pn532",
                              "--adapter", "hci0")
    checks = by_name(report)
    assert rc == 1 and report["ok"] is False
    failed = {n for n, c in checks.items() if c["status"] == "fail"}
    assert failed == {"nfc reader", "broker"}, checks
    assert checks["nfc reader"]["detail"].startswith("not found")
    assert "plug the reader in" in checks["nfc reader"]["hint"]
    assert checks["adapter"]["status"] == "warn"  # powered off: the scanner powers it on


async def test_doctor_json_bad_reader_path(private_system_bus: str, fake_bluez: FakeBlueZ,
                                           broker: MosquittoProcess, tmp_path: Path) -> None:
    rc, report = await doctor(private_system_bus, "--broker", f"127.0.0.1:{broker.port}",
                              "--data-dir", str(tmp_path), "--nfc", "serial0")
    reader = by_name(report)["nfc reader"]
    assert rc == 1
    assert reader["status"] == "fail" and "not an nfcpy device path" in reader["detail"]
    assert "tty:PORT:DRIVER" in reader["hint"]
