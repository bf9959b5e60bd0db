"""Watch one BlueZ adapter over D-Bus and power-cycle it, with dbus-fast (no hciconfig).

bleak does not watch ``Powered`` or the adapter object itself: when the adapter is
powered off or unplugged mid-scan, adverts simply stop and nothing is raised
(docs/architecture.md#bluez-and-bleak). :class:`AdapterWatch` keeps its own system-bus
connection, subscribes to the adapter's PropertiesChanged, to InterfacesAdded/Removed
for its path and to ``org.bluez`` changing owner (bluetoothd restarting), and reports
each change as an :class:`AdapterEvent` to a synchronous callback.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from dbus_fast import BusType, DBusError, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from aislecast.kernel.logs import get_logger

__all__ = ["AdapterEvent", "AdapterState", "AdapterWatch", "read_adapter_state"]

_LOG = get_logger(__name__)

BLUEZ: Final = "org.bluez"
ADAPTER1: Final = "org.bluez.Adapter1"
MONITOR_MANAGER1: Final = "org.bluez.AdvertisementMonitorManager1"
_PROPS: Final = "org.freedesktop.DBus.Properties"
_OM: Final = "org.freedesktop.DBus.ObjectManager"


class AdapterEvent(enum.StrEnum):
    """A change of the watched adapter."""

    POWERED_ON = "powered_on"
    POWERED_OFF = "powered_off"
    ADDED = "added"
    REMOVED = "removed"


@dataclass(slots=True)
class AdapterState:
    """What BlueZ last told us about the adapter."""

    present: bool = False
    powered: bool | None = None
    passive_supported: bool = False
    address: str | None = None


def _raise_for_reply(reply: Message) -> None:
    if reply.message_type is MessageType.ERROR:
        detail = reply.body[0] if reply.body else ""
        raise DBusError(reply.error_name or "org.freedesktop.DBus.Error.Failed", str(detail))


async def read_adapter_state(bus: MessageBus, path: str) -> AdapterState:
    """One ``GetManagedObjects`` call: presence, Powered and passive-scan support."""
    reply = await bus.call(
        Message(destination=BLUEZ, path="/", interface=_OM, member="GetManagedObjects")
    )
    _raise_for_reply(reply)
    objects: dict[str, dict[str, dict[str, Variant]]] = reply.body[0]
    ifaces = objects.get(path)
    if ifaces is None or ADAPTER1 not in ifaces:
        return AdapterState()
    props = ifaces[ADAPTER1]
    monitor = ifaces.get(MONITOR_MANAGER1, {})
    types = monitor["SupportedMonitorTypes"].value if "SupportedMonitorTypes" in monitor else []
    return AdapterState(
        present=True,
        powered=bool(props["Powered"].value) if "Powered" in props else None,
        passive_supported="or_patterns" in types,
        address=str(props["Address"].value) if "Address" in props else None,
    )


class AdapterWatch:
    """Own D-Bus connection watching ``/org/bluez/<adapter>``; not re-entrant."""

    def __init__(self, adapter: str, on_event: Callable[[AdapterEvent], None]) -> None:
        self.path = f"/org/bluez/{adapter}"
        self.state = AdapterState()
        self._on_event = on_event
        self._bus: MessageBus | None = None

    @property
    def connected(self) -> bool:
        return self._bus is not None and self._bus.connected

    async def connect(self) -> None:
        """Connect, subscribe, then read the current state (in that order: no gap)."""
        bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        try:
            bus.add_message_handler(self._on_message)
            rules = (
                f"type='signal',interface='{_PROPS}',member='PropertiesChanged',"
                f"path='{self.path}',arg0='{ADAPTER1}'",
                f"type='signal',interface='{_OM}',member='InterfacesAdded',arg0path='{self.path}'",
                f"type='signal',interface='{_OM}',member='InterfacesRemoved',arg0path='{self.path}'",
                "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
                f"member='NameOwnerChanged',arg0='{BLUEZ}'",
            )
            for rule in rules:
                reply = await bus.call(
                    Message(
                        destination="org.freedesktop.DBus",
                        path="/org/freedesktop/DBus",
                        interface="org.freedesktop.DBus",
                        member="AddMatch",
                        signature="s",
                        body=[rule],
                    )
                )
                _raise_for_reply(reply)
            self._bus = bus
            await self.refresh()
        except BaseException:
            bus.disconnect()
            self._bus = None
            raise

    def _connected_bus(self) -> MessageBus:
        if self._bus is None:
            raise DBusError("org.freedesktop.DBus.Error.Disconnected", "not connected")
        return self._bus

    def close(self) -> None:
        if self._bus is not None:
            self._bus.disconnect()
            self._bus = None

    async def refresh(self) -> AdapterState:
        """Re-read the state; a missing ``org.bluez`` counts as "adapter not present"."""
        try:
            self.state = await read_adapter_state(self._connected_bus(), self.path)
        except DBusError as exc:
            if exc.type != "org.freedesktop.DBus.Error.ServiceUnknown":
                raise
            self.state = AdapterState()
        return self.state

    async def set_powered(self, value: bool) -> None:
        """``Set(org.bluez.Adapter1, Powered, value)``; raises DBusError on refusal."""
        reply = await self._connected_bus().call(
            Message(
                destination=BLUEZ,
                path=self.path,
                interface=_PROPS,
                member="Set",
                signature="ssv",
                body=[ADAPTER1, "Powered", Variant("b", value)],
            )
        )
        _raise_for_reply(reply)

    async def wait_powered(self, value: bool, timeout_s: float, poll_s: float = 0.05) -> None:
        """Wait until the Powered property reads ``value`` (signals, re-read as a backstop)."""
        async with asyncio.timeout(timeout_s):
            while True:
                if self.state.powered is value:
                    return
                await asyncio.sleep(poll_s)
                await self.refresh()

    async def power_cycle(self, off_s: float, wait_s: float) -> None:
        """Power off (if on), wait ``off_s``, power on and wait until BlueZ reports it."""
        if self.state.powered:
            await self.set_powered(False)
            await self.wait_powered(False, wait_s)
            await asyncio.sleep(off_s)
        await self.set_powered(True)
        await self.wait_powered(True, wait_s)

    # signals ----------------------------------------------------------------------------
    def _emit(self, event: AdapterEvent) -> None:
        _LOG.info("bluez adapter event path=%s event=%s", self.path, event.value,
                  adapter_path=self.path, code=event.value)
        self._on_event(event)

    def _on_message(self, msg: Message) -> None:
        if msg.message_type is not MessageType.SIGNAL:
            return
        member = msg.member
        body: list[Any] = msg.body
        if member == "PropertiesChanged" and msg.path == self.path and body[0] == ADAPTER1:
            changed: dict[str, Variant] = body[1]
            if "Powered" in changed:
                powered = bool(changed["Powered"].value)
                if powered is not self.state.powered:
                    self.state.powered = powered
                    self._emit(AdapterEvent.POWERED_ON if powered else AdapterEvent.POWERED_OFF)
        elif member == "InterfacesAdded" and body[0] == self.path:
            added: dict[str, dict[str, Variant]] = body[1]
            if MONITOR_MANAGER1 in added:
                types = added[MONITOR_MANAGER1].get("SupportedMonitorTypes")
                self.state.passive_supported = types is not None and "or_patterns" in types.value
            if ADAPTER1 in added:
                props = added[ADAPTER1]
                self.state.present = True
                self.state.powered = bool(props["Powered"].value) if "Powered" in props else None
                self._emit(AdapterEvent.ADDED)
        elif member == "InterfacesRemoved" and body[0] == self.path:
            if ADAPTER1 in body[1]:
                self.state = AdapterState()
                self._emit(AdapterEvent.REMOVED)
        elif (
            member == "NameOwnerChanged" and body[0] == BLUEZ and not body[2]
            and self.state.present
        ):
            # bluetoothd exited: every adapter object is gone with it
            self.state = AdapterState()
            self._emit(AdapterEvent.REMOVED)
