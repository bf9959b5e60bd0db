"""hq.router: messages of a route with a group handler that wait together go to it at
once, in arrival order, never past a message of another route."""

from __future__ import annotations

import asyncio
import contextlib

import aiomqtt

from hq.router import GROUP_MAX, Reply, Route, Router


def _msg(topic: str) -> aiomqtt.Message:
    return aiomqtt.Message(topic, b"", qos=1, retain=False, mid=1, properties=None)


async def test_waiting_messages_are_grouped_up_to_another_routes() -> None:
    seen: list[tuple[str, list[str]]] = []
    replies: list[Reply] = []

    async def one(kind: str, m: aiomqtt.Message) -> Reply | None:
        seen.append((kind, [m.topic.value]))
        return Reply(f"ack/{m.topic.value}", b"")

    async def many(ms: list[aiomqtt.Message]) -> list[Reply | None]:
        seen.append(("many", [m.topic.value for m in ms]))
        return [Reply(f"ack/{m.topic.value}", b"") for m in ms]

    router = Router([Route("events", "ev/+", lambda m: one("events", m), many=many),
                     Route("feedback", "fb/+", lambda m: one("feedback", m))], replies.append)
    inbound: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()
    topics = ["ev/1", "ev/2", "fb/1", "ev/3", *(f"ev/x{i}" for i in range(GROUP_MAX + 1))]
    for t in topics:
        inbound.put_nowait(_msg(t))
    task = asyncio.create_task(router.serve(inbound))
    async with asyncio.timeout(5):
        while len(replies) < len(topics):
            await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert seen[:3] == [("many", ["ev/1", "ev/2"]), ("feedback", ["fb/1"]),
                        ("many", ["ev/3", *(f"ev/x{i}" for i in range(GROUP_MAX - 1))])]
    assert seen[3:] == [("many", [f"ev/x{GROUP_MAX - 1}", f"ev/x{GROUP_MAX}"])]
    assert [r.topic for r in replies] == [f"ack/{t}" for t in topics]
    assert router.stats.messages == {"events": len(topics) - 1, "feedback": 1}
    assert router.stats.groups == {"events": 3}
