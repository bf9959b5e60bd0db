"""Is a gateway doing its job? One judgement, read in-process and on the gateway's host.

Everything here judges the flat metrics of :mod:`gateway.metrics` (the registry both
exporters read), so the running gateway and a person at a terminal see the same facts:

- :func:`scanner_problem`: the scanner never heard an advert since start, or has been
  silent longer than ``[scanner] silent_after_s``. The gateway's systemd watchdog
  withholds its pings while this says so (:mod:`gateway.app`), so systemd restarts a
  gateway whose radio stayed dead through the scanner's own recovery.
- :func:`observe` and :func:`verdict`: ``aislecast gateway health``. It reads the
  running gateway's local state report (``DATA_DIR/state.json``, :mod:`gateway.report`)
  and never logs in to the broker, so it cannot disturb the gateway it checks; it
  turns the report into an exit code: 0 healthy, 1 unhealthy, 2 no report, 3 a warning
  (running, but without a bundle a minute after connecting, with the likely cause).
- :func:`live_judgement`: the same judgement of the running gateway, put into every
  state report it publishes (``problem``, ``warning``), so HQ raises an alert from it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from aislecast.kernel.mqtt import tls_hint
from gateway.config import GatewayConfig
from gateway.report import BundleReport, LocalReport, NoReport, read_report, report_path

__all__ = ["BUNDLE_GRACE_S", "HEALTHY", "NO_REPORT", "UNHEALTHY", "WARNING", "Verdict",
           "live_judgement", "observe", "scanner_problem", "verdict"]

HEALTHY: Final = 0
UNHEALTHY: Final = 1
NO_REPORT: Final = 2
WARNING: Final = 3
# HQ's bundle is retained: a connected gateway has it within a second or two when HQ
# knows the store. A minute without one is not a slow start.
BUNDLE_GRACE_S: Final = 60.0
_POLL_S: Final = 0.2  # while waiting for a report file to appear


@dataclass(frozen=True, slots=True)
class Verdict:
    code: int  # HEALTHY, UNHEALTHY, NO_REPORT or WARNING
    reason: str


def scanner_problem(m: Mapping[str, float], silent_after_s: float, *, late_s: float = 0.0) -> str | None:
    """Why the scanner is not working, or None; ``late_s``: how old the metrics are."""
    age = m.get("scanner_last_advert_age_s")
    recoveries = m.get("scanner_restarts", 0.0)
    tried = f"; {recoveries:.0f} recoveries tried" if recoveries else ""
    if age is None:
        up = m.get("uptime_s", 0.0) + late_s
        if up <= silent_after_s:
            return None  # starting: the first adverts are on their way
        return (f"the scanner has heard no advert in {up:.0f} s since start{tried}: it never "
                "started (check `aislecast doctor` and [scanner] adapter)")
    age += late_s
    if age <= silent_after_s:
        return None  # hearing adverts, or recovering within its watchdog window
    return (f"the scanner has been silent for {age:.0f} s, past its {silent_after_s:.0f} s "
            f"watchdog{tried} (check the adapter: `aislecast doctor`, journalctl -u bluetooth)")


def _login(cfg: GatewayConfig) -> str:
    b = cfg.broker
    return b.username or (f"certificate {b.tls_cert}" if b.tls_cert else "anonymous")


def _no_bundle(b: BundleReport, cfg: GatewayConfig, m: Mapping[str, float]) -> Verdict | None:
    if m.get("bundle_version", 0) > 0:
        return None
    connected = m.get("connected_s")
    if connected is not None and connected < BUNDLE_GRACE_S:
        return Verdict(HEALTHY, f"starting: connected {connected:.0f} s ago, waiting for "
                       "the first bundle")
    if rejected := sum(b.refused.values()):
        last = f" (last: {b.last_refused})" if b.last_refused else ""
        cause = (f"it refused {rejected} bundle(s){last}: is hq_public_key HQ's current key "
                 "(GET /api/keys/bundle)?")
    elif b.subscription_refused is not None:
        cause = (f"the broker refused its subscription to the bundle topic "
                 f"({b.subscription_refused}): check the broker's ACL for {_login(cfg)}")
    elif b.received_since_connect == 0:
        cause = (f"no bundle for store {cfg.store!r} arrived since it connected: the broker "
                 "holds none (HQ is down, or it does not know this store id: check `store` "
                 "here and the store at HQ), or the broker's ACL hides it from this login")
    else:
        cause = (f"{b.received_since_connect} bundle message(s) arrived but none was applied "
                 "(see the gateway's log)")
    return Verdict(WARNING, f"no bundle a minute after connecting: {cause}")


def verdict(seen: LocalReport | NoReport, cfg: GatewayConfig, now: float) -> Verdict:
    """The judgement of one report (or of its absence) at unix time ``now``."""
    if isinstance(seen, NoReport):
        return Verdict(NO_REPORT, f"no state report: {seen.reason}")
    state, link = seen.state, seen.link
    if seen.stopped:
        return Verdict(UNHEALTHY, "the gateway reports offline: it has stopped")
    late = max(0.0, now - state.ts)
    if late > 3 * cfg.health_every_s:
        return Verdict(UNHEALTHY, f"last report {late:.0f} s old (expected every "
                       f"{cfg.health_every_s:.0f} s): the gateway is not running, or stuck")
    if link.login_refused is not None:
        return Verdict(UNHEALTHY, f"the broker refused this gateway's login ({_login(cfg)}): "
                       f"{link.login_refused} (check broker.username and its password; "
                       "`aislecast hq gateways add` issues them)")
    if not link.connected:
        why = link.last_error or "no answer yet"
        return Verdict(NO_REPORT, f"cannot reach the broker at {cfg.broker.host}:{cfg.broker.port} "
                       f"({why}{tls_hint(cfg.broker.mqtt_settings(), why)}): is it running? "
                       "check [broker] host and port")
    return _judge(state.metrics, seen.bundle, cfg, late)


def _judge(m: Mapping[str, float], bundle: BundleReport, cfg: GatewayConfig, late: float) -> Verdict:
    """The judgement of a connected gateway's metrics ``late`` seconds old."""
    problem = scanner_problem(m, cfg.scanner.silent_after_s, late_s=late)
    if problem is not None:
        return Verdict(UNHEALTHY, problem)
    if m.get("publisher_denied", 0) > 0:
        return Verdict(UNHEALTHY, "the broker refused publishes: check this gateway's credentials and ACL")
    return _no_bundle(bundle, cfg, m) or Verdict(HEALTHY, "healthy")


def live_judgement(m: Mapping[str, float], bundle: BundleReport,
                   cfg: GatewayConfig) -> tuple[str | None, str | None]:
    """``(problem, warning)`` of a running gateway from its current metrics, for its state
    report (HQ raises alerts from them): the same judgement ``gateway health`` makes."""
    if m.get("connected_s") is None:  # the report made as it connects: starting
        m = {**m, "connected_s": 0.0}
    v = _judge(m, bundle, cfg, 0.0)
    return (v.reason if v.code == UNHEALTHY else None, v.reason if v.code == WARNING else None)


def observe(cfg: GatewayConfig, wait_s: float = 0.0) -> LocalReport | NoReport:
    """The gateway's local report, waiting up to ``wait_s`` for one to appear (a gateway
    that has just started). Blocking: a command's, or a worker thread's."""
    path = report_path(cfg)
    deadline = time.monotonic() + wait_s
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(_POLL_S)
    return read_report(path)
