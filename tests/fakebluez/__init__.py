"""A fake BlueZ on a private D-Bus bus, for running bleak's real backend in tests.

Start: :class:`PrivateBus` runs ``dbus-daemon --config-file=<tmp>/bus.conf --nofork
--print-address=1`` (session-style policy: anyone may own any name), and
``DBUS_SYSTEM_BUS_ADDRESS`` is pointed at it before bleak first connects. Then
:class:`FakeBlueZ` connects to that bus, exports ``/org/bluez/hci0`` (Adapter1 and
AdvertisementMonitorManager1) and owns the name ``org.bluez``. Devices appear as
adverts are injected. Fixtures live in :mod:`fakebluez.fixtures`; :func:`drive` runs a
scanner's watchdog on a fake clock.

Why dbus-fast and not python-dbusmock's ``bluez5`` template: no PyGObject build
(dbusmock needs it, and on Debian 12 a pinned PyGObject plus four -dev packages),
property types are right by construction, and faults (power, removal, InProgress,
silence) are plain Python calls on an object in the test's own event loop.
"""

from fakebluez._daemon import PrivateBus, dbus_daemon_binary, point_system_bus_at
from fakebluez._drive import LIVENESS_S, drive, settle
from fakebluez._service import MAX_UNDRAINED, FakeBlueZ, MuteUntil, beacon_loop

__all__ = [
    "LIVENESS_S",
    "MAX_UNDRAINED",
    "FakeBlueZ",
    "MuteUntil",
    "PrivateBus",
    "beacon_loop",
    "dbus_daemon_binary",
    "drive",
    "point_system_bus_at",
    "settle",
]
