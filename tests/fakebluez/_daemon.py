"""A private ``dbus-daemon`` for tests: session-style policy, unix socket in a temp dir.

Why a real daemon and not a peer-to-peer socket: bleak connects with ``BusType.SYSTEM``
and speaks to ``org.bluez`` by well-known name, so a real bus with name ownership,
match rules and signal routing is the only faithful stand-in for the system bus.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["PrivateBus", "dbus_daemon_binary"]

_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def dbus_daemon_binary() -> str | None:
    """Path of ``dbus-daemon`` or None (Debian: ``apt-get install -y dbus-daemon``)."""
    return shutil.which("dbus-daemon")


class PrivateBus:
    """Start ``dbus-daemon --nofork`` with a private config; ``address`` is its address."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="fakebluez-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self.address = ""

    def start(self) -> str:
        binary = dbus_daemon_binary()
        if binary is None:
            raise RuntimeError("dbus-daemon not found (apt-get install -y dbus-daemon)")
        sock = self._dir / "bus"
        conf = self._dir / "bus.conf"
        conf.write_text(_CONFIG.format(socket=sock))
        with (self._dir / "dbus-daemon.log").open("wb") as log:  # "fd limit" noise as root
            self._proc = subprocess.Popen(
                [binary, f"--config-file={conf}", "--nofork", "--print-address=1"],
                stdout=subprocess.PIPE, stderr=log,
            )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().decode().strip()
        if not line:
            self.stop()
            raise RuntimeError("dbus-daemon printed no address")
        self.address = line
        return line

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> PrivateBus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def point_system_bus_at(address: str) -> str | None:
    """Set ``DBUS_SYSTEM_BUS_ADDRESS`` (before bleak first connects); return the old value."""
    old = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
    os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = address
    return old
