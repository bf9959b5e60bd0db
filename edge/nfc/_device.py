"""Opening an nfcpy reader: path checks, error classification and udp-driver tuning.

Third-party failures are classified here and only here (STYLE: one place maps error
strings and errnos to causes), each cause with a hint that tells staff what to do.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import Any

import nfc
import nfc.clf
import nfc.clf.device
import nfc.clf.udp

from edge.nfc.settings import NfcDeviceError, check_path

__all__ = ["classify", "open_frontend", "tune_udp"]

def classify(device: str, exc: BaseException, *, was_open: bool) -> NfcDeviceError:
    """Map an exception raised by nfcpy or the OS to a :class:`NfcDeviceError`."""
    if isinstance(exc, NfcDeviceError):
        return exc
    if isinstance(exc, socket.gaierror):
        return NfcDeviceError(device, "missing", f"cannot resolve host ({exc})")
    if isinstance(exc, OSError):
        code = exc.errno
        if code in (errno.ENODEV, errno.ENOENT, errno.ENXIO):
            return NfcDeviceError(device, "unplugged" if was_open else "missing", str(exc))
        if code in (errno.EBUSY, errno.EADDRINUSE):
            return NfcDeviceError(device, "busy", str(exc))
        if code in (errno.EACCES, errno.EPERM):
            return NfcDeviceError(device, "denied", str(exc))
        return NfcDeviceError(device, "io", f"{type(exc).__name__}: {exc}")
    return NfcDeviceError(device, "driver", f"{type(exc).__name__}: {exc}")


def open_frontend(path: str) -> Any:
    """Open ``path`` and return a ready ``nfc.ContactlessFrontend`` (blocking; thread only).

    Uses ``nfc.clf.device.connect`` directly rather than ``ContactlessFrontend.open`` so
    that a missing reader does not log an nfcpy error line on every retry.
    """
    check_path(path)
    clf = nfc.ContactlessFrontend()
    try:
        device = nfc.clf.device.connect(path)
    except Exception as exc:
        raise classify(path, exc, was_open=False) from exc
    if device is None:
        raise NfcDeviceError(path, "missing", "no supported reader found on this path")
    clf.device = device
    return clf


def tune_udp(clf: Any, first_wait: float) -> bool:
    """Cap the udp driver's fixed 1 s wait for a poll answer to ``first_wait`` seconds.

    nfcpy's udp ``sense_tt*`` waits 1.0 s for the SENS_RES/SENSB_RES/SENSF_RES; real
    readers time out in milliseconds. Only that first wait of each poll is capped; the
    anticollision and tag commands keep nfcpy's own timeouts. Returns False for other
    drivers (nothing to do). Relies on ``Device._recv_data`` (see the canary test).
    """
    device = clf.device
    if not isinstance(device, nfc.clf.udp.Device):
        return False
    original_recv: Callable[..., Any] = device._recv_data
    capped = [False]

    def recv(timeout: float | None, *brty: str) -> Any:
        if capped[0]:
            capped[0] = False
            if timeout is not None:
                timeout = min(timeout, first_wait)
        return original_recv(timeout, *brty)

    def wrap(sense: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def capped_sense(target: Any) -> Any:
            capped[0] = True
            try:
                return sense(target)
            finally:
                capped[0] = False

        return capped_sense

    device._recv_data = recv
    for name in ("sense_tta", "sense_ttb", "sense_ttf"):
        setattr(device, name, wrap(getattr(device, name)))
    return True
