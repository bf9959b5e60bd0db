"""Stores sharded across brokers: which broker each publish of HQ goes to.

HQ has one default broker (``[broker]`` in ``hq.toml``) and may have more, each serving
a fixed list of stores (``[[shards]]``). :class:`BrokerShards` holds one
:class:`aislecast.kernel.mqtt.MqttLink` per broker and sends every publish addressed to
a store (its bundle, delta, a gateway's batch ack, a phone's feedback ack) to the broker
of that store; a store no shard lists is on the default broker. Every link subscribes
the same ingest routes, so HQ hears each store on its own broker.

The mapping lives in ``hq.toml``, beside each broker's address and login: moving a store
means repointing its gateways' ``gateway.toml`` and restarting them, so a restart of HQ
with the new list costs nothing more, and no API, role or migration is needed for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiomqtt

from aislecast.kernel import topics
from aislecast.kernel.counters import by, gauges_by
from aislecast.kernel.logs import get_logger
from aislecast.kernel.mqtt import MqttLink, MqttSettings
from hq.broker_sync import PidSource

__all__ = ["DEFAULT_SHARD", "WATCH_EVERY_S", "BrokerShards", "NoStore", "ShardSettings", "ShardStats"]

log = get_logger(__name__)

# The default broker's name in metrics, logs and /health.
DEFAULT_SHARD: Final = "default"
# How often the per-shard "connected" gauges are refreshed and a change is logged.
WATCH_EVERY_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class ShardSettings:
    """One extra broker: its name, how HQ reaches it, the stores on it and, when it runs
    on HQ's host, the directory of its password/ACL files (rendered like ``[broker]``'s)."""

    name: str
    mqtt: MqttSettings
    stores: frozenset[str]
    auth_dir: Path | None = None
    pid: PidSource | None = None


@dataclass(slots=True)
class ShardStats:
    publishes: dict[str, int] = by("shard", "messages HQ published, per broker shard")
    failed: dict[str, int] = by("shard", "publishes a broker shard refused or lost")
    connected: dict[str, int] = gauges_by("shard", "1 while HQ's link to the broker shard is up")


class NoStore(ValueError):
    """A publish whose topic names no store and was given none: HQ cannot pick a broker."""

    def __init__(self, topic: str) -> None:
        super().__init__(f"topic {topic!r} names no store: give the store to pick its broker")
        self.topic = topic


class BrokerShards:
    """``links`` by shard name (the default first); ``publish`` picks by store."""

    def __init__(self, default: MqttLink, shards: Mapping[str, tuple[MqttLink, frozenset[str]]]
                 ) -> None:
        self.links: dict[str, MqttLink] = {DEFAULT_SHARD: default}
        self._shard_of: dict[str, str] = {}
        for name, (link, stores) in shards.items():
            self.links[name] = link
            for store in stores:
                self._shard_of[store] = name
        self.stats = ShardStats()

    @property
    def default(self) -> MqttLink:
        return self.links[DEFAULT_SHARD]

    def shard_of(self, store: str) -> str:
        return self._shard_of.get(store, DEFAULT_SHARD)

    def stores_of(self, shard: str) -> list[str]:
        return sorted(s for s, n in self._shard_of.items() if n == shard)

    def link_for(self, store: str) -> MqttLink:
        return self.links[self.shard_of(store)]

    def down(self) -> list[str]:
        """The shards whose broker link is down now, by name."""
        return [name for name, link in self.links.items() if not link.connected.is_set()]

    async def publish(self, topic: str, payload: bytes, *, store: str | None = None,
                      qos: int = 1, retain: bool = False, wait: bool = True) -> None:
        """Publish on the broker of ``store`` (default: the store the topic names). With
        ``wait=False`` a broker that is down now fails the publish at once instead of
        being waited for (acks: their senders resend, and a wait would hold one of the
        ack sender's slots for seconds per message)."""
        if store is None:
            m = topics.parse(topic)
            store = None if m is None else m.store
            if store is None:
                raise NoStore(topic)
        shard = self.shard_of(store)
        link = self.links[shard]
        try:
            if not wait and not link.connected.is_set():
                raise aiomqtt.MqttError(f"broker shard {shard!r} is down")
            await link.publish(topic, payload, qos=qos, retain=retain)
        except Exception:
            self.stats.failed[shard] = self.stats.failed.get(shard, 0) + 1
            raise
        self.stats.publishes[shard] = self.stats.publishes.get(shard, 0) + 1

    async def watch(self, every_s: float = WATCH_EVERY_S,
                    on_up: Callable[[str], None] | None = None) -> None:
        """Keep the ``connected`` gauges current; log each shard going down or up once,
        and call ``on_up`` with each store of a shard whose link came (back) up (HQ
        republishes their bundles: a round that ran while it was down skipped them)."""
        was: dict[str, bool] = {}
        while True:
            for name, link in self.links.items():
                up = link.connected.is_set()
                self.stats.connected[name] = int(up)
                if name in was and was[name] != up:
                    if up:
                        log.info("broker shard connected", shard=name)
                        if on_up is not None:
                            for store in self.stores_of(name):
                                on_up(store)
                    else:
                        log.warning("broker shard down", shard=name, stores=self.stores_of(name),
                                    error=link.stats.last_error)
                was[name] = up
            await asyncio.sleep(every_s)

