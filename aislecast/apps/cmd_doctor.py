"""``aislecast doctor``: check a store gateway's adapter, broker, clock and disk."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes.util
import json
import os
import re
import shutil
import textwrap
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, Literal

from dbus_fast import AuthError, BusType, DBusError
from dbus_fast.aio import MessageBus

from edge.bluez.adapter import read_adapter_state
from edge.nfc import NfcDeviceError, check_path, open_frontend

__all__ = ["Check", "register", "run_checks"]

Status = Literal["ok", "warn", "fail"]

# A gateway's SQLite outbox is bounded near 200 MiB (aislecast.kernel.const.OUTBOX_MAX_ROWS);
# below 256 MiB free it cannot hold a full outbox: fail. Below 1 GiB: warn early.
DISK_FAIL_BYTES: Final = 256 * 1024**2
DISK_WARN_BYTES: Final = 1024**3
# A Pi without an RTC boots at its last saved time or 1970; anything before this
# build's year means the clock was never set (certificates and bundle expiry break).
CLOCK_MIN_YEAR: Final = 2025
# Each network check waits at most this long (a broker on the LAN answers in ms).
CHECK_TIMEOUT_S: Final = 3.0
# Opening an NFC reader: a USB PN533 enumerates and answers its firmware query in
# ~100 ms, a tty PN532 in ~0.5 s at 115200 baud; nfcpy's tty probe of several baud
# rates can take seconds, so the reader gets longer than a network check.
NFC_OPEN_TIMEOUT_S: Final = 8.0

_HELP = textwrap.dedent(
    """\
    Check what a store gateway needs: Bluetooth adapter, BlueZ, D-Bus permissions,
    NFC reader, MQTT broker, clock and free disk. Each line is ok, warn or fail with
    what to do; the exit code is 1 when any check fails.

    examples:
      aislecast doctor                                  # hci0, broker on localhost:1883
      aislecast doctor --adapter hci1 --broker mqtt.store42.lan:1883
      aislecast doctor --nfc usb                        # also open the NFC reader briefly
      aislecast doctor --nfc tty:USB0:pn532
      aislecast doctor --data-dir /srv/aislecast --json | jq '.checks[] | select(.status != "ok")'
    """
)


@dataclass(frozen=True, slots=True)
class Check:
    """One result: ``hint`` says what to do when status is not ok."""

    name: str
    status: Status
    detail: str
    hint: str = ""


async def _check_bluetooth(adapter: str) -> list[Check]:
    path = f"/org/bluez/{adapter}"
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    except AuthError as exc:
        return [Check("permissions", "fail", f"D-Bus refused us: {exc}",
                      "run as root or a user allowed by the system bus policy")]
    except (OSError, TimeoutError, ValueError) as exc:
        reason = (exc.strerror.lower() if isinstance(exc, OSError) and exc.strerror
                  else "no answer" if isinstance(exc, TimeoutError) else str(exc))
        return [Check("permissions", "fail", f"system D-Bus unreachable ({reason}): "
                      f"{_system_bus_address()}", "apt-get install -y dbus && systemctl start dbus"),
                Check("adapter", "fail", f"{adapter} unknown: BlueZ is asked over the system D-Bus",
                      "start D-Bus first (above), then run doctor again")]
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            state = await read_adapter_state(bus, path)
    except DBusError as exc:
        if exc.type == "org.freedesktop.DBus.Error.ServiceUnknown":
            return [Check("permissions", "ok", "system D-Bus reachable"),
                    Check("adapter", "fail", "BlueZ (org.bluez) is not running",
                          "apt-get install -y bluez && systemctl start bluetooth")]
        return [Check("permissions", "fail", f"BlueZ refused us: {exc.type}",
                      "run as root or add the user to group `bluetooth`")]
    except TimeoutError:
        return [Check("adapter", "fail", "BlueZ did not answer", "systemctl restart bluetooth")]
    finally:
        bus.disconnect()
    out = [Check("permissions", "ok", "system D-Bus and org.bluez reachable")]
    if not state.present:
        out.append(Check("adapter", "fail", f"{adapter} not found",
                         "plug in the dongle; `bluetoothctl list` shows adapters"))
    elif not state.powered:
        out.append(Check("adapter", "warn", f"{adapter} present but powered off",
                         "`bluetoothctl power on` (the scanner also powers it on)"))
    else:
        out.append(Check("adapter", "ok", f"{adapter} {state.address} present and powered"))
    if state.present:
        out.append(
            Check("passive scan", "ok", "AdvertisementMonitorManager1 offered")
            if state.passive_supported
            else Check("passive scan", "warn", "not offered; the scanner will scan actively",
                       "start bluetoothd with --experimental (BlueZ >= 5.56, kernel >= 5.10)")
        )
    return out


def _system_bus_address() -> str:
    """Where dbus-fast looks for the system bus (its default, or the variable)."""
    return os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/var/run/dbus/system_bus_socket")


async def _check_bluez_version() -> Check:
    binary = shutil.which("bluetoothctl")
    if binary is None:
        return Check("bluez version", "warn", "unknown (bluetoothctl not installed)",
                     "apt-get install -y bluez")
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            proc = await asyncio.create_subprocess_exec(
                binary, "--version", stdout=asyncio.subprocess.PIPE
            )
            out, _ = await proc.communicate()
        m = re.search(rb"(\d+)\.(\d+)", out)
        if m:
            major, minor = int(m[1]), int(m[2])
            if (major, minor) < (5, 56):
                return Check("bluez version", "warn", f"{major}.{minor}",
                             "BlueZ >= 5.56 is needed for passive scanning")
            return Check("bluez version", "ok", f"{major}.{minor}")
    return Check("bluez version", "warn", "unknown (bluetoothctl --version failed)")


async def _check_broker(host: str, port: int) -> Check:
    """TCP connect, then an MQTT 3.1.1 CONNECT; CONNACK proves an MQTT broker answers."""
    cid = b"aislecast-doctor"
    var = b"\x00\x04MQTT\x04\x02\x00\x0a" + len(cid).to_bytes(2, "big") + cid
    packet = b"\x10" + bytes([len(var)]) + var
    where = f"{host}:{port}"
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(packet)
                await writer.drain()
                ack = await reader.readexactly(4)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        return Check("broker", "fail", f"{where} unreachable: {exc!r}",
                     "check --broker, the network, and `systemctl status mosquitto`")
    if ack[0] != 0x20:
        return Check("broker", "fail", f"{where} answered, but not as MQTT",
                     "is --broker pointing at the MQTT listener?")
    if ack[3] != 0:
        return Check("broker", "warn", f"{where} is MQTT but refused anonymous (rc={ack[3]})",
                     "expected with password auth; the gateway uses its own credentials")
    return Check("broker", "ok", f"{where} answers MQTT")


def _check_clock() -> Check:
    now = time.time()
    year = time.gmtime(now).tm_year
    if year < CLOCK_MIN_YEAR:
        return Check("clock", "fail", f"system time is in {year}",
                     "enable NTP: `timedatectl set-ntp true`")
    synced = Path("/run/systemd/timesync/synchronized").exists()
    if not synced:
        return Check("clock", "warn", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
                     + ", NTP sync not confirmed",
                     "`timedatectl` should say 'System clock synchronized: yes'")
    return Check("clock", "ok", "NTP synchronized")


def _check_disk(data_dir: Path) -> Check:
    if not data_dir.is_dir():
        return Check("disk", "fail", f"{data_dir} does not exist",
                     f"mkdir -p {data_dir} (or pass --data-dir)")
    free = shutil.disk_usage(data_dir).free
    text = f"{free / 1024**3:.1f} GiB free in {data_dir}"
    if free < DISK_FAIL_BYTES:
        return Check("disk", "fail", text, "free space: the outbox needs ~200 MiB")
    if free < DISK_WARN_BYTES:
        return Check("disk", "warn", text, "free space soon")
    return Check("disk", "ok", text)


def _probe_reader(device: str) -> str:
    """Open the reader, describe it, close it (blocking: nfcpy)."""
    clf = open_frontend(device)
    try:
        return str(clf)
    finally:
        clf.close()


async def _in_daemon_thread(device: str) -> str:
    """:func:`_probe_reader` in a daemon thread: a reader that hangs inside nfcpy must not
    keep the process alive after the timeout (executor threads are joined at exit)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[str] = loop.create_future()

    def settle(result: str | None, exc: BaseException | None) -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result or "")

    def work() -> None:
        try:
            result: Any = _probe_reader(device)
        except Exception as exc:  # noqa: BLE001 - handed to the event loop, classified there
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=work, name="doctor-nfc", daemon=True).start()
    return await fut


async def _check_nfc(device: str | None) -> Check:
    """Open the nfcpy device path briefly: found (with the reader's name) or why not."""
    if device is None:
        return Check("nfc reader", "ok", "no reader given (--nfc DEV checks one: usb, tty:USB0:pn532)")
    try:
        check_path(device)
    except NfcDeviceError as exc:
        return Check("nfc reader", "fail", f"{device!r} is not an nfcpy device path",
                     exc.hint or "")
    if device.startswith("usb") and ctypes.util.find_library("usb-1.0") is None:
        return Check("nfc reader", "fail", f"{device}: libusb-1.0 is not installed",
                     "apt-get install -y libusb-1.0-0")
    try:
        async with asyncio.timeout(NFC_OPEN_TIMEOUT_S):
            found = await _in_daemon_thread(device)
    except NfcDeviceError as exc:
        return Check("nfc reader", "fail", f"not found: {exc.message}", exc.hint or "")
    except TimeoutError:
        return Check("nfc reader", "fail", f"{device}: no answer within {NFC_OPEN_TIMEOUT_S:g} s",
                     "unplug and re-plug the reader; stop pcscd if it holds the device")
    return Check("nfc reader", "ok", f"{device}: found {found}")


async def run_checks(adapter: str, host: str, port: int, data_dir: Path,
                     nfc: str | None = None) -> list[Check]:
    """Every check, in display order; ``nfc`` is an nfcpy device path or None."""
    bt, version, reader, broker = await asyncio.gather(
        _check_bluetooth(adapter), _check_bluez_version(), _check_nfc(nfc),
        _check_broker(host, port),
    )
    return [*bt, version, reader, broker, _check_clock(), _check_disk(data_dir)]


def _broker(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError("expected HOST:PORT, e.g. 127.0.0.1:1883")
    return host, int(port)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("doctor", help="check adapter, reader, broker, clock and disk",
                       description=_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adapter", default="hci0", help="BlueZ adapter (default: hci0)")
    p.add_argument("--broker", type=_broker, default=("127.0.0.1", 1883), metavar="HOST:PORT",
                   help="MQTT broker to reach (default: 127.0.0.1:1883)")
    p.add_argument("--data-dir", type=Path, default=Path("/var/lib/aislecast"),
                   help="gateway data directory (default: /var/lib/aislecast)")
    p.add_argument("--nfc", metavar="DEV", default=None,
                   help="nfcpy device path of the reader to open briefly: usb, usb:VID:PID, "
                   "tty:USB0:pn532, udp:HOST:PORT (default: no reader check)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    host, port = args.broker
    checks = asyncio.run(run_checks(args.adapter, host, port, args.data_dir, nfc=args.nfc))
    failed = any(c.status == "fail" for c in checks)
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}))
    else:
        for c in checks:
            print(f"{c.status:<4}  {c.name:<13} {c.detail}")
            if c.hint and c.status != "ok":
                print(f"{'':<19} -> {c.hint}")
    return 1 if failed else 0
