"""What a gateway's ``[nfc]`` settings are checked against, without loading nfcpy.

The reader (:class:`edge.nfc.NfcReader`) needs nfcpy and ndeflib, ~3 MiB of a gateway's
memory; a gateway with no reader configured imports only this module, so it can still
validate its configuration and name the fix for a bad device path.
"""

from __future__ import annotations

import re
from typing import Final

from aislecast.kernel.errors import AislecastError
from edge.nfc._const import (
    AISLECAST_AID,
    NFC_BACKOFF_BASE,
    NFC_BACKOFF_CAP_S,
    NFC_MUTE_AFTER_TAP_S,
    NFC_POLL_INTERVAL_S,
)

__all__ = [
    "AISLECAST_AID",
    "MAX_FIELD_LEN",
    "NFC_BACKOFF_BASE",
    "NFC_BACKOFF_CAP_S",
    "NFC_MUTE_AFTER_TAP_S",
    "NFC_POLL_INTERVAL_S",
    "TECHNOLOGIES",
    "NfcDeviceError",
    "check_path",
]

#: Technologies nfcpy can poll for: ISO 14443-A, -B and FeliCa at 212/424 kbit/s.
TECHNOLOGIES: Final = frozenset({"106A", "106B", "212F", "424F"})
#: Ids, zones and products are short printable tokens (shelf labels, SKUs).
MAX_FIELD_LEN: Final = 64

_PATH_RE = re.compile(
    r"usb(:[0-9a-fA-F]{4}(:[0-9a-fA-F]{4})?|:[0-9]{3}(:[0-9]{3})?)?"
    r"|tty:[A-Za-z0-9_./-]+(:[a-z0-9_]+)?"
    r"|udp(:[A-Za-z0-9_.-]*(:[0-9]{1,5})?)?"
)
_PATH_HELP = (
    "use usb, usb:VID:PID (e.g. usb:054c:06c3), usb:BUS:DEV, tty:PORT:DRIVER "
    "(e.g. tty:USB0:pn532) or udp:HOST:PORT"
)

_HINTS = {
    "bad_path": _PATH_HELP,
    "missing": "plug the reader in (lsusb should list it) or fix the device path",
    "unplugged": "the reader went away; check the USB cable and power, it is retried",
    "busy": "another process holds the reader: stop pcscd (systemctl stop pcscd) or "
    "unload the kernel driver (modprobe -r pn533_usb), or free the port",
    "denied": "no permission on the device node: add a udev rule for the reader "
    "(python -m nfc prints one) or add the user to the plugdev group",
    "io": "the reader stopped answering; it is reopened automatically",
    "driver": "unexpected driver error; run `python -m nfc -v` for details",
}


class NfcDeviceError(AislecastError):
    """The reader could not be opened or used: ``cause`` names why, ``hint`` the fix."""

    def __init__(self, device: str, cause: str, detail: str) -> None:
        super().__init__(f"NFC reader {device!r}: {cause}: {detail}", hint=_HINTS[cause])
        self.device = device
        self.cause = cause

    @property
    def transient(self) -> bool:
        """Worth retrying: everything but a malformed path."""
        return self.cause != "bad_path"


def check_path(path: str) -> None:
    """Raise :class:`NfcDeviceError` (``bad_path``) unless ``path`` is an nfcpy path."""
    if not _PATH_RE.fullmatch(path):
        raise NfcDeviceError(path, "bad_path", "not an nfcpy device path")
    if path.startswith("udp:") and path.count(":") == 2:
        port = int(path.rsplit(":", 1)[1])
        if not 0 < port < 65536:
            raise NfcDeviceError(path, "bad_path", f"port {port} out of range")
