"""A small fake ``bluetoothd``: ``org.bluez`` Adapter1, AdvertisementMonitorManager1, Device1.

Exported with dbus-fast on its own connection to a private bus. Property types are the
ones real BlueZ uses (``a{qv}`` ManufacturerData, ``a{sv}`` ServiceData, ``n`` RSSI),
so bleak's unmodified backend parses them. Like real BlueZ (and unlike a radio) it
applies no duplicate suppression of its own: every ``advertise`` is one
PropertiesChanged signal. Faults are knobs on :class:`FakeBlueZ`.

Bursts are bounded (:data:`MAX_UNDRAINED`, then ``await fake.drain()``): dbus-fast's
writer takes a full socket buffer (EAGAIN) for a lost connection and closes it, and the
next send fails with EBADF (the same code in python-dbus-next, its issue #153). The
daemon empties our buffer only when it gets the CPU, so on a loaded machine a burst of
200 adverts (the old throughput test) could fill it; on Linux's default buffer the 167th
unread message does, whatever its size.
"""

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from dbus_fast import BusType, DBusError, Message, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import (
    DBusBool,
    DBusDict,
    DBusInt16,
    DBusObjectPath,
    DBusSignature,
    DBusStr,
)
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

__all__ = ["MAX_UNDRAINED", "FakeBlueZ", "MuteUntil"]

ADAPTER1 = "org.bluez.Adapter1"
DEVICE1 = "org.bluez.Device1"
MONITOR_MANAGER1 = "org.bluez.AdvertisementMonitorManager1"
PROPS = "org.freedesktop.DBus.Properties"

DBusStrList = Annotated[list[str], DBusSignature("as")]
MuteUntil = Literal["restart", "power_cycle", "never"]
# adverts sent since the daemon last confirmed reading everything (FakeBlueZ.drain):
# well below the 167 queued messages that fill a default Linux socket buffer
MAX_UNDRAINED = 100


class _Adapter(ServiceInterface):
    def __init__(self, fake: "FakeBlueZ", address: str) -> None:
        super().__init__(ADAPTER1)
        self._fake = fake
        self._address = address
        self.powered = True
        self.discovering = False

    @dbus_method()
    def StartDiscovery(self) -> None:
        self._fake._start_discovery()

    @dbus_method()
    def StopDiscovery(self) -> None:
        self._fake._stop_discovery()

    @dbus_method()
    def SetDiscoveryFilter(self, properties: DBusDict) -> None:
        self._fake.discovery_filters.append({k: v.value for k, v in properties.items()})

    @dbus_method()
    def GetDiscoveryFilters(self) -> DBusStrList:
        return ["UUIDs", "RSSI", "Pathloss", "Transport", "DuplicateData"]

    @dbus_method()
    def RemoveDevice(self, device: DBusObjectPath) -> None:
        self._fake.remove_device_path(device)

    @dbus_property(PropertyAccess.READ)
    def Address(self) -> DBusStr:
        return self._address

    @dbus_property(PropertyAccess.READ)
    def AddressType(self) -> DBusStr:
        return "public"

    @dbus_property(PropertyAccess.READ)
    def Name(self) -> DBusStr:
        return "fakebluez"

    @dbus_property(PropertyAccess.READ)
    def Alias(self) -> DBusStr:
        return "fakebluez"

    @dbus_property()
    def Powered(self) -> DBusBool:
        return self.powered

    @Powered.setter
    def Powered(self, value: DBusBool) -> None:
        self._fake._set_powered(value, emit=False)

    @dbus_property(PropertyAccess.READ)
    def Discovering(self) -> DBusBool:
        return self.discovering

    @dbus_property(PropertyAccess.READ)
    def Roles(self) -> DBusStrList:
        return ["central", "peripheral"]

    @dbus_property(PropertyAccess.READ)
    def UUIDs(self) -> DBusStrList:
        return []


class _MonitorManager(ServiceInterface):
    def __init__(self, fake: "FakeBlueZ") -> None:
        super().__init__(MONITOR_MANAGER1)
        self._fake = fake

    @dbus_method()
    def RegisterMonitor(self, application: DBusObjectPath) -> None:
        self._fake._register_monitor(application)

    @dbus_method()
    def UnregisterMonitor(self, application: DBusObjectPath) -> None:
        self._fake._unregister_monitor(application)

    @dbus_property(PropertyAccess.READ)
    def SupportedMonitorTypes(self) -> DBusStrList:
        return ["or_patterns"]

    @dbus_property(PropertyAccess.READ)
    def SupportedFeatures(self) -> DBusStrList:
        return []


class _Device(ServiceInterface):
    def __init__(self, adapter_path: str, address: str) -> None:
        super().__init__(DEVICE1)
        self.adapter_path = adapter_path
        self.address = address
        self.rssi = -127
        self.manufacturer_data: dict[int, Variant] = {}
        self.service_data: dict[str, Variant] = {}

    @dbus_property(PropertyAccess.READ)
    def Address(self) -> DBusStr:
        return self.address

    @dbus_property(PropertyAccess.READ)
    def AddressType(self) -> DBusStr:
        return "random"

    @dbus_property(PropertyAccess.READ)
    def Alias(self) -> DBusStr:
        return self.address.replace(":", "-")

    @dbus_property(PropertyAccess.READ)
    def Adapter(self) -> DBusObjectPath:
        return self.adapter_path

    @dbus_property(PropertyAccess.READ)
    def RSSI(self) -> DBusInt16:
        return self.rssi

    @dbus_property(PropertyAccess.READ)
    def ManufacturerData(self) -> Annotated[dict[int, Variant], DBusSignature("a{qv}")]:
        return self.manufacturer_data

    @dbus_property(PropertyAccess.READ)
    def ServiceData(self) -> Annotated[dict[str, Variant], DBusSignature("a{sv}")]:
        return self.service_data

    @dbus_property(PropertyAccess.READ)
    def Paired(self) -> DBusBool:
        return False

    @dbus_property(PropertyAccess.READ)
    def Connected(self) -> DBusBool:
        return False

    @dbus_property(PropertyAccess.READ)
    def UUIDs(self) -> DBusStrList:
        return [str(k) for k in self.service_data]


@dataclass
class FakeStats:
    """What the fake did, for assertions."""

    adverts_sent: int = 0
    adverts_dropped: int = 0
    start_discovery_calls: int = 0
    stop_discovery_calls: int = 0
    monitors_registered: int = 0
    power_changes: list[bool] = field(default_factory=list)


class FakeBlueZ:
    """Owns ``org.bluez`` on the bus at ``DBUS_SYSTEM_BUS_ADDRESS``; faults are methods."""

    def __init__(self, adapter: str = "hci0", *, passive: bool = True) -> None:
        self.adapter_path = f"/org/bluez/{adapter}"
        self._passive = passive
        self._bus: MessageBus | None = None
        self._adapter = _Adapter(self, "00:1A:7D:DA:71:13")
        self._monitor_mgr = _MonitorManager(self)
        self._devices: dict[str, _Device] = {}
        self._sessions = 0
        self._monitors: set[str] = set()
        self._present = False
        self._fail_start: list[str] = []
        self._mute: MuteUntil | None = None
        self.discovery_filters: list[dict[str, Any]] = []  # every SetDiscoveryFilter body
        self.stats = FakeStats()
        self._undrained = 0

    # lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        self._bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        self.add_adapter()
        await self._bus.request_name("org.bluez")

    async def stop(self) -> None:
        if self._bus is not None:
            with contextlib.suppress(Exception):
                await self._bus.release_name("org.bluez")
            self._bus.disconnect()
            self._bus = None

    async def drain(self) -> None:
        """Return once the bus daemon has read every message sent so far: its reply to a
        ``GetId`` call comes after it read everything queued before the call."""
        if self._bus is None or self._undrained == 0:
            return
        await self._bus.call(Message(destination="org.freedesktop.DBus",
                                     path="/org/freedesktop/DBus",
                                     interface="org.freedesktop.DBus", member="GetId"))
        self._undrained = 0

    @property
    def delivering(self) -> bool:
        """True when an advert would reach a scanning client right now."""
        return (
            self._present
            and self._adapter.powered
            and (self._sessions > 0 or bool(self._monitors))
            and self._mute is None
        )

    @property
    def discovering(self) -> bool:
        return self._adapter.discovering

    @property
    def monitors(self) -> int:
        return len(self._monitors)

    # adverts ----------------------------------------------------------------------------
    def advertise(
        self,
        address: str,
        *,
        rssi: int,
        manufacturer_data: dict[int, bytes] | None = None,
        service_data: dict[str, bytes] | None = None,
    ) -> bool:
        """Emit one advert as BlueZ would; False if nobody could hear it (dropped).
        At most :data:`MAX_UNDRAINED` adverts between awaits of :meth:`drain`."""
        if not self.delivering or self._bus is None:
            self.stats.adverts_dropped += 1
            return False
        if self._undrained >= MAX_UNDRAINED:
            raise RuntimeError(f"{self._undrained} adverts sent since the last drain(): "
                               "await fake.drain() between bursts (see fakebluez._service)")
        self._undrained += 1
        path = f"{self.adapter_path}/dev_{address.replace(':', '_')}"
        dev = self._devices.get(path)
        changed: dict[str, Variant] = {"RSSI": Variant("n", rssi)}
        if manufacturer_data is not None:
            md = {k: Variant("ay", v) for k, v in manufacturer_data.items()}
            changed["ManufacturerData"] = Variant("a{qv}", md)
        if service_data is not None:
            sd = {k: Variant("ay", v) for k, v in service_data.items()}
            changed["ServiceData"] = Variant("a{sv}", sd)
        if dev is None:
            dev = _Device(self.adapter_path, address)
            dev.rssi = rssi
            dev.manufacturer_data = changed.get("ManufacturerData", Variant("a{qv}", {})).value
            dev.service_data = changed.get("ServiceData", Variant("a{sv}", {})).value
            self._devices[path] = dev
            self._bus.export(path, dev)  # emits InterfacesAdded with every property
        else:
            dev.rssi = rssi
            if manufacturer_data is not None:
                dev.manufacturer_data = changed["ManufacturerData"].value
            if service_data is not None:
                dev.service_data = changed["ServiceData"].value
            self._bus.send(
                Message.new_signal(path, PROPS, "PropertiesChanged", "sa{sv}as",
                                   [DEVICE1, changed, []])
            )
        self.stats.adverts_sent += 1
        return True

    def remove_device_path(self, path: str) -> None:
        dev = self._devices.pop(path, None)
        if dev is not None and self._bus is not None:
            self._bus.unexport(path, dev)

    # faults -----------------------------------------------------------------------------
    def power_off(self) -> None:
        self._set_powered(False, emit=True)

    def power_on(self) -> None:
        self._set_powered(True, emit=True)

    def remove_adapter(self) -> None:
        """The dongle is unplugged: devices and adapter vanish (InterfacesRemoved)."""
        assert self._bus is not None
        for path in list(self._devices):
            self.remove_device_path(path)
        self._sessions = 0
        self._monitors.clear()
        self._adapter.discovering = False
        self._bus.unexport(self.adapter_path)
        self._present = False

    def add_adapter(self, *, powered: bool = True) -> None:
        """The dongle is plugged (back) in (InterfacesAdded)."""
        assert self._bus is not None
        self._adapter.powered = powered
        self._adapter.discovering = False
        self._bus.export(self.adapter_path, self._adapter)
        if self._passive:
            self._bus.export(self.adapter_path, self._monitor_mgr)
        self._present = True

    def fail_start_discovery(self, times: int, error: str = "org.bluez.Error.InProgress") -> None:
        """The next ``times`` StartDiscovery calls fail with ``error``."""
        self._fail_start += [error] * times

    def mute(self, until: MuteUntil = "restart") -> None:
        """Adverts stop with no error anywhere; cleared by the named recovery."""
        self._mute = until

    # handlers -----------------------------------------------------------------------------
    def _set_powered(self, value: bool, *, emit: bool) -> None:
        a = self._adapter
        was = a.powered
        a.powered = value
        self.stats.power_changes.append(value)
        changed: dict[str, Any] = {"Powered": value}
        if not value:
            self._sessions = 0  # bluetoothd drops discovery sessions on power off
            if a.discovering:
                a.discovering = False
                changed["Discovering"] = False
        elif not was and self._mute == "power_cycle":
            self._mute = None
        if emit or was != value:
            a.emit_properties_changed(changed)

    def _start_discovery(self) -> None:
        self.stats.start_discovery_calls += 1
        if self._fail_start:
            raise DBusError(self._fail_start.pop(0), "Operation already in progress")
        if not self._adapter.powered:
            raise DBusError("org.bluez.Error.NotReady", "Resource Not Ready")
        self._sessions += 1
        if self._mute == "restart":
            self._mute = None
        if not self._adapter.discovering:
            self._adapter.discovering = True
            self._adapter.emit_properties_changed({"Discovering": True})

    def _stop_discovery(self) -> None:
        self.stats.stop_discovery_calls += 1
        if not self._adapter.powered:
            raise DBusError("org.bluez.Error.NotReady", "Resource Not Ready")
        if self._sessions == 0:
            raise DBusError("org.bluez.Error.Failed", "No discovery started")
        self._sessions -= 1
        if self._sessions == 0 and self._adapter.discovering:
            self._adapter.discovering = False
            self._adapter.emit_properties_changed({"Discovering": False})

    def _register_monitor(self, path: str) -> None:
        if path in self._monitors:
            raise DBusError("org.bluez.Error.AlreadyExists", "Already Exists")
        self._monitors.add(path)
        self.stats.monitors_registered += 1
        if self._mute == "restart":
            self._mute = None

    def _unregister_monitor(self, path: str) -> None:
        if path not in self._monitors:
            raise DBusError("org.bluez.Error.DoesNotExist", "Does Not Exist")
        self._monitors.discard(path)


async def beacon_loop(fake: "FakeBlueZ", *, hz: float = 20.0) -> None:
    """Two fixed store beacons advertising forever (cancel to stop), like a real store."""
    ibeacon = bytes.fromhex("0215" + "f7826da64fa24e988024bc5b71e0893e" + "0001" + "0002" + "c5")
    uid = bytes.fromhex("00e8" + "edd1ebeac04e5defa017" + "0123456789ab" + "0000")
    n = 0
    while True:
        n += 1
        fake.advertise("C0:FF:EE:00:00:01", rssi=-60 - n % 5, manufacturer_data={0x004C: ibeacon})
        fake.advertise(
            "C0:FF:EE:00:00:02", rssi=-70 - n % 3,
            service_data={"0000feaa-0000-1000-8000-00805f9b34fb": uid},
        )
        await fake.drain()
        await asyncio.sleep(1 / hz)  # the advertising interval: pacing, not a wait
