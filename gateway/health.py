"""Is a gateway doing its job? One judgement, read in-process and from outside.

Everything here judges the flat metrics of :mod:`gateway.metrics` (the registry both
exporters read), so the running gateway and a person at a terminal see the same facts:

- :func:`scanner_problem`: the scanner never heard an advert since start, or has been
  silent longer than ``[scanner] silent_after_s``. The gateway's systemd watchdog
  withholds its pings while this says so (:mod:`gateway.app`), so systemd restarts a
  gateway whose radio stayed dead through the scanner's own recovery.
- :func:`observe` and :func:`verdict`: ``aislecast gateway health``. It logs in with the
  gateway's own credentials, reads the retained ``GatewayState`` and whether the
  store's bundle is retained on the broker, and turns that into an exit code: 0
  healthy, 1 unhealthy, 2 no report, 3 a warning (running, but without a bundle a
  minute after connecting, with the likely cause).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import aiomqtt
import msgspec

from aislecast.kernel import topics
from aislecast.kernel.schema import GatewayState, decode
from gateway.config import GatewayConfig

__all__ = ["BUNDLE_GRACE_S", "HEALTHY", "NO_REPORT", "UNHEALTHY", "WARNING", "Observed",
           "Verdict", "observe", "read_state", "scanner_problem", "verdict"]

HEALTHY: Final = 0
UNHEALTHY: Final = 1
NO_REPORT: Final = 2
WARNING: Final = 3
# HQ's bundle is retained: a connected gateway has it within a second or two when HQ
# knows the store. A minute without one is not a slow start.
BUNDLE_GRACE_S: Final = 60.0
# CONNACK codes of a refused login: MQTT 3.1.1 (4, 5) and MQTT 5 (bad user name or
# password, not authorized, bad authentication method)
_REFUSED: Final = frozenset({0x04, 0x05, 0x86, 0x87, 0x8C})


@dataclass(frozen=True, slots=True)
class Verdict:
    code: int  # HEALTHY, UNHEALTHY, NO_REPORT or WARNING
    reason: str


@dataclass(frozen=True, slots=True)
class Observed:
    """What ``gateway health`` saw on the broker with the gateway's login."""

    state: GatewayState | None
    bundle_retained: bool | None = None  # the store's bundle is retained (None: not looked)
    refused: str | None = None  # the broker refused the login: its reason
    unreachable: str | None = None  # the broker could not be reached: why


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


def _no_bundle(obs: Observed, cfg: GatewayConfig, m: Mapping[str, float]) -> Verdict | None:
    if m.get("bundle_version", 0) > 0:
        return None
    connected = m.get("connected_s")
    if connected is not None and connected < BUNDLE_GRACE_S:
        return Verdict(HEALTHY, f"starting: connected {connected:.0f} s ago, waiting for "
                       "the first bundle")
    rejected = m.get("bundle_rejected", 0)
    if rejected:
        cause = (f"it refused {rejected:.0f} bundle(s): is hq_public_key HQ's current key "
                 "(GET /api/keys/bundle)?")
    elif obs.bundle_retained is False:
        cause = (f"the broker holds no bundle for store {cfg.store!r}: HQ is down, or it does "
                 "not know this store id (check `store` here and the store at HQ)")
    else:
        cause = ("the store's bundle is on the broker but never reached the gateway: are its "
                 "credentials refused on the bundle topic (the broker's ACL)?")
    return Verdict(WARNING, f"no bundle a minute after connecting: {cause}")


def verdict(obs: Observed, cfg: GatewayConfig, now: float) -> Verdict:
    if obs.refused is not None:
        return Verdict(UNHEALTHY, f"the broker refused this gateway's login "
                       f"({cfg.broker.username or 'anonymous'}): {obs.refused} (check broker.username "
                       "and its password; `aislecast hq gateways add` issues them)")
    state = obs.state
    if obs.unreachable is not None:
        return Verdict(NO_REPORT, f"cannot reach the broker at {cfg.broker.host}:{cfg.broker.port} "
                       f"({obs.unreachable}): is it running? check [broker] host and port")
    if state is None:
        return Verdict(NO_REPORT, "no state report on the broker: is the gateway running and connected?")
    if state.status != "online":
        return Verdict(UNHEALTHY, "the gateway reports offline (stopped, or its connection dropped)")
    late = max(0.0, now - state.ts) if state.ts else 0.0
    if state.ts and late > 3 * cfg.health_every_s:
        return Verdict(UNHEALTHY, f"last report {late:.0f} s old (expected every {cfg.health_every_s:.0f} s)")
    m = state.metrics
    problem = scanner_problem(m, cfg.scanner.silent_after_s, late_s=late)
    if problem is not None:
        return Verdict(UNHEALTHY, problem)
    if m.get("publisher_denied", 0) > 0:
        return Verdict(UNHEALTHY, "the broker refused publishes: check this gateway's credentials and ACL")
    return _no_bundle(obs, cfg, m) or Verdict(HEALTHY, "healthy")


async def observe(cfg: GatewayConfig, timeout: float = 5.0) -> Observed:
    """The retained state and bundle of this gateway's store, with its own login."""
    # the gateway's own link settings; one plain client, not MqttLink, because a refused
    # login must end the check with its reason rather than be retried
    s = cfg.broker.mqtt_settings()
    state_topic = topics.gateway_state(cfg.store, cfg.gateway)
    bundle_topic = topics.bundle(cfg.store)
    try:
        async with asyncio.timeout(timeout), aiomqtt.Client(
                s.host, s.port, username=s.username, password=s.password,
                identifier=f"health-{cfg.store}-{cfg.gateway}-{time.monotonic_ns()}",
                protocol=aiomqtt.ProtocolVersion.V5, clean_start=True,
                tls_params=s.tls_params(),
        ) as client:
            await client.subscribe(bundle_topic, qos=1)
            await client.subscribe(state_topic, qos=1)
            return await _read(client, state_topic, bundle_topic, cfg)
    except aiomqtt.MqttCodeError as exc:
        code = exc.rc if isinstance(exc.rc, int) else getattr(exc.rc, "value", None)
        if code in _REFUSED:
            return Observed(None, refused=str(exc))
        return Observed(None, unreachable=str(exc))
    except aiomqtt.MqttError as exc:
        return Observed(None, unreachable=str(exc))
    except TimeoutError:
        return Observed(None, unreachable=f"no answer in {timeout:.0f} s")


async def _read(client: aiomqtt.Client, state_topic: str, bundle_topic: str,
                cfg: GatewayConfig) -> Observed:
    # Retained messages follow each SUBACK in order: after a barrier subscription (a
    # topic nothing retains) has been acknowledged, both have arrived or never will.
    await client.subscribe(topics.gateway_acks(cfg.store, cfg.gateway), qos=0)
    state: GatewayState | None = None
    bundle = False
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(0.5):  # only what is already queued is read
            async for msg in client.messages:
                if msg.topic.matches(bundle_topic):
                    bundle = True
                elif msg.topic.matches(state_topic) and isinstance(msg.payload, bytes):
                    try:
                        state = decode(msg.payload, GatewayState)
                    except (msgspec.ValidationError, msgspec.DecodeError):
                        state = None
                if state is not None and bundle:
                    break
    return Observed(state, bundle_retained=bundle)


async def read_state(cfg: GatewayConfig, timeout: float = 5.0) -> GatewayState | None:
    """The gateway's last retained state report, or ``None`` if none arrives in time."""
    return (await observe(cfg, timeout)).state
