"""HQ's inbound MQTT router: one table from subscription filter to handler.

The table is the single statement of what HQ listens to: the MQTT link subscribes to
exactly its filters (:attr:`Router.subscriptions`), and each message goes to the
handler of the first filter it matches (aiomqtt's matching, which strips a
``$share/<group>/`` prefix). A handler may return a :class:`Reply` (a batch or
feedback acknowledgement) that the router hands to ``reply``, which must not block: HQ
queues it for its ack task so a slow broker never stalls ingest.

Messages reach the router through a bounded queue read by HQ's ingest task
(:meth:`Router.serve`), so a handler's database write never runs inside the MQTT
link's read loop, and a full queue pushes back on the link rather than growing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import aiomqtt

from aislecast.kernel.counters import by, count
from aislecast.kernel.logs import get_logger

__all__ = ["GROUP_MAX", "GroupHandler", "Handler", "Reply", "Route", "Router", "RouterStats"]

log = get_logger(__name__)


class Reply(NamedTuple):
    """A message a handler wants published in answer (QoS 1), on the broker of ``store``
    (None: the store the topic names, :class:`hq.shards.BrokerShards`)."""

    topic: str
    payload: bytes
    store: str | None = None


Handler = Callable[[aiomqtt.Message], Awaitable[Reply | None]]
#: a route's handler for several of its messages at once: one answer per message, in order
GroupHandler = Callable[[list[aiomqtt.Message]], Awaitable[list[Reply | None]]]
#: the most messages of one route handed to its group handler at once
GROUP_MAX = 32  # 3,200 events of 100-event batches: ~60 ms of SQLite writing


class Route(NamedTuple):
    kind: str  # names the route in metrics and logs: "events", "feedback", "state"
    filter: str  # the subscription, e.g. "$share/hq/px/v1/stores/+/gateways/+/events"
    handler: Handler
    qos: int = 1
    # takes the route's messages waiting together at once (HQ's event batches: one
    # transaction for all of them, :meth:`hq.ingest.Ingest.on_events_many`)
    many: GroupHandler | None = None


@dataclass(slots=True)
class RouterStats:
    messages: dict[str, int] = by("route", "inbound MQTT messages, per route")
    handler_errors: dict[str, int] = by("route", "handler failures (bugs), per route")
    replies: int = count("replies handed to the ack task")
    unrouted: int = count("messages matching no route (a subscription without a handler)")
    groups: dict[str, int] = by("route", "calls of a route's group handler (messages waiting"
                                " together handled at once), per route")


class Router:
    def __init__(self, routes: Sequence[Route], reply: Callable[[Reply], None]) -> None:
        kinds = [r.kind for r in routes]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"route kinds must be unique: {kinds}")
        self._routes = [(aiomqtt.Wildcard(r.filter), r) for r in routes]
        self._reply = reply
        self.stats = RouterStats()

    @property
    def subscriptions(self) -> list[tuple[str, int]]:
        return [(r.filter, r.qos) for _, r in self._routes]

    def _find(self, msg: aiomqtt.Message) -> Route | None:
        return next((r for w, r in self._routes if msg.topic.matches(w)), None)

    def _route(self, msg: aiomqtt.Message) -> Route | None:
        """``msg``'s route, counted (the message counted unrouted when it has none)."""
        route = self._find(msg)
        if route is None:
            self.stats.unrouted += 1
            log.warning("mqtt message matches no route", topic=msg.topic.value)
        else:
            self.stats.messages[route.kind] = self.stats.messages.get(route.kind, 0) + 1
        return route

    async def dispatch(self, msg: aiomqtt.Message) -> None:
        if (route := self._route(msg)) is not None:
            await self._handle(route, [msg])

    async def _handle(self, route: Route, msgs: list[aiomqtt.Message]) -> None:
        try:
            if route.many is not None and len(msgs) > 1:
                self.stats.groups[route.kind] = self.stats.groups.get(route.kind, 0) + 1
                replies = await route.many(msgs)
            else:
                replies = [await route.handler(m) for m in msgs]
        except Exception:  # a handler bug must not end ingest
            self.stats.handler_errors[route.kind] = self.stats.handler_errors.get(route.kind, 0) + 1
            log.exception("mqtt handler failed", route=route.kind, topic=msgs[0].topic.value)
            return
        for reply in replies:
            if reply is not None:
                self.stats.replies += 1
                self._reply(reply)

    async def serve(self, inbound: asyncio.Queue[aiomqtt.Message]) -> None:
        """Dispatch messages from ``inbound`` in arrival order, forever. Messages of a
        route with a group handler that are already waiting behind the first go to it
        together (up to :data:`GROUP_MAX`, up to the next message of another route)."""
        ahead: aiomqtt.Message | None = None
        while True:
            msg = ahead if ahead is not None else await inbound.get()
            ahead = None
            if (route := self._route(msg)) is None:
                continue
            group = [msg]
            while route.many is not None and len(group) < GROUP_MAX and not inbound.empty():
                nxt = inbound.get_nowait()
                if self._find(nxt) is not route:
                    ahead = nxt  # another route's: handled after this group, in order
                    break
                self._route(nxt)  # counted
                group.append(nxt)
            await self._handle(route, group)
