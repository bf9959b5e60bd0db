"""The gateway's local state report: ``DATA_DIR/state.json``, read by ``gateway health``.

A running gateway writes it every ``health_every_s`` (and promptly after each connect),
atomically and 0640, from a worker thread. It holds the very :class:`GatewayState`
the gateway publishes retained, plus what only the gateway knows about its broker
link (connected or not, a refused login, the last error) and about its bundle
(bundle messages received since it connected, bundles it refused and why, a refused
subscription to the bundle topic). ``aislecast gateway health`` judges this file on
the same host, so it never logs in to the broker: a login of its own with the
gateway's credentials would take over the gateway's client id (every listener sets
``use_username_as_clientid``) and disconnect the gateway it checks.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec

from aislecast.kernel.privatefile import write_private
from aislecast.kernel.schema import GatewayState
from gateway.config import GatewayConfig

__all__ = ["REPORT_FILE", "REPORT_MODE", "BundleReport", "LinkReport", "LocalReport", "NoReport",
           "ReportWriter", "read_report", "report_path"]

REPORT_FILE: Final = "state.json"
REPORT_MODE: Final = 0o640  # the gateway's user writes, its group (a monitoring agent) reads


class LinkReport(msgspec.Struct, frozen=True, kw_only=True):
    """The gateway's own view of its broker connection."""

    connected: bool
    connects: int = 0  # successful connections since start
    last_error: str = ""  # the last failed attempt or dropped connection
    login_refused: str | None = None  # the broker refused the last login: its reason


class BundleReport(msgspec.Struct, frozen=True, kw_only=True):
    """What the gateway knows about its store's bundle."""

    received_since_connect: int = 0  # bundle messages since the current connection began
    refused: dict[str, int] = msgspec.field(default_factory=dict)  # bundles+deltas by reason
    last_refused: str = ""  # "reason: why" of the last refusal
    subscription_refused: str | None = None  # the SUBACK reason, if the broker refused it


class LocalReport(msgspec.Struct, frozen=True, kw_only=True):
    v: int = 1
    pid: int
    stopped: bool = False  # written on the way out: the gateway is not running
    state: GatewayState  # as published retained (status: online while connected)
    link: LinkReport
    bundle: BundleReport


@dataclass(frozen=True, slots=True)
class NoReport:
    """No usable report: why (missing, unreadable, not a report)."""

    reason: str


_ENCODER: Final = msgspec.json.Encoder()
_DECODER: Final = msgspec.json.Decoder(LocalReport)


def report_path(cfg: GatewayConfig) -> Path:
    return Path(cfg.data_dir) / REPORT_FILE


class ReportWriter:
    """Replaces the report atomically, one write at a time, none after the final one.

    :meth:`write` blocks (call it in a worker thread). A cancelled ``to_thread`` leaves
    its thread running, so a periodic write cut short on the way out could otherwise
    land after the ``stopped`` report and make a stopped gateway look alive."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._final = False

    def write(self, report: LocalReport) -> None:
        with self._lock:
            if self._final:
                return
            write_private(self.path, _ENCODER.encode(report), mode=REPORT_MODE)
            self._final = report.stopped


def read_report(path: Path) -> LocalReport | NoReport:
    """The report at ``path``, or why there is none; never raises."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return NoReport(f"{path} does not exist: is the gateway running on this host, with "
                        "this config's data_dir?")
    except OSError as exc:
        user = os.environ.get("USER", "this user")
        return NoReport(f"cannot read {path} as {user}: {exc.strerror} (run the check as the "
                        "gateway's user or a member of its group)")
    try:
        return _DECODER.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return NoReport(f"{path} is not a gateway state report ({exc})")
