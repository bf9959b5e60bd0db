"""Reading a gateway's health from outside: its retained state on the broker.

The gateway publishes ``GatewayState`` (status, bundle version, every metric) retained
every ``health_every_s`` and on the way out; its MQTT will says ``offline`` if it dies.
:func:`read_state` fetches that report; :func:`verdict` turns it into an exit code a
monitoring system (or systemd's ExecStartPost, or a person) can act on.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiomqtt
import msgspec

from aislecast.kernel import topics
from aislecast.kernel.mqtt import MqttLink
from aislecast.kernel.schema import GatewayState, decode
from gateway.config import GatewayConfig

__all__ = ["Verdict", "read_state", "verdict"]


@dataclass(frozen=True, slots=True)
class Verdict:
    code: int  # 0 healthy, 1 unhealthy, 2 no report
    reason: str


async def read_state(cfg: GatewayConfig, timeout: float = 5.0) -> GatewayState | None:
    """The gateway's last retained state report, or ``None`` if none arrives in time."""
    got: asyncio.Future[GatewayState] = asyncio.get_running_loop().create_future()

    async def on(msg: aiomqtt.Message) -> None:
        if got.done() or not isinstance(msg.payload, bytes):
            return
        try:
            got.set_result(decode(msg.payload, GatewayState))
        except (msgspec.ValidationError, msgspec.DecodeError):
            return

    link = MqttLink(cfg.broker.mqtt_settings(),
                    client_id=f"health-{cfg.store}-{cfg.gateway}-{time.monotonic_ns()}",
                    subscriptions=[(topics.gateway_state(cfg.store, cfg.gateway), 1)],
                    handler=on, clean_start=True)
    async with link:
        try:
            async with asyncio.timeout(timeout):
                return await got
        except TimeoutError:
            return None


def verdict(state: GatewayState | None, cfg: GatewayConfig, now: float) -> Verdict:
    if state is None:
        return Verdict(2, "no state report on the broker: is the gateway running and connected?")
    if state.status != "online":
        return Verdict(1, "the gateway reports offline (stopped, or its connection dropped)")
    age = now - state.ts
    if state.ts and age > 3 * cfg.health_every_s:
        return Verdict(1, f"last report {age:.0f} s old (expected every {cfg.health_every_s:.0f} s)")
    m = state.metrics
    if m.get("bundle_version", 0) <= 0:
        return Verdict(1, "no bundle applied yet: check that HQ publishes this store's bundle")
    if m.get("publisher_denied", 0) > 0:
        return Verdict(1, "the broker refused publishes: check this gateway's credentials and ACL")
    return Verdict(0, "healthy")
