"""The gateway's BLE scanner on bleak/BlueZ, with a watchdog and staged recovery.

Use::

    async with BlueZScanner(on_advert, adapter="hci0") as scanner:
        ...  # adverts arrive at on_advert; scanner.stats() for health
"""

from edge.bluez.errors import BlueZScannerError, ErrorClass, Recovery, classify
from edge.bluez.scanner import PASSIVE_OR_PATTERNS, BlueZScanner, ScanMode
from edge.bluez.watchdog import Stage, WatchdogSettings

__all__ = [
    "PASSIVE_OR_PATTERNS",
    "BlueZScanner",
    "BlueZScannerError",
    "ErrorClass",
    "Recovery",
    "ScanMode",
    "Stage",
    "WatchdogSettings",
    "classify",
]
