"""The stand-in gateways of ``aislecast bench fanout_bundles``, in a process of their own.

Real gateways are other machines: their receiving costs HQ nothing. So the benchmark
runs its 1,000 stand-ins (one MQTT client per store, subscribed to the store's bundle
topic as a gateway is) here, in a child process, and HQ's process keeps its CPU for HQ.

The parent talks to the child over its stdin and stdout, one line each way; the child's
answers start with :data:`MARK` (anything else on its stdout is not an answer):

- the child connects every stand-in, then answers ``ready``;
- ``arm``: the child starts a round and answers ``armed``; when every stand-in holds its
  store's next bundle it answers one JSON object: ``arrived`` (store -> the time it did,
  :func:`time.monotonic`, one clock for both processes), ``sizes`` (bytes as received)
  and ``sample`` (the first store's payload, base64: the parent verifies it);
- end of input: the child disconnects and exits.

Run as ``python -m benchmarks.fanout_gateways PORT STORE...``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time

import aiomqtt

from aislecast.kernel import topics
from aislecast.kernel.mqtt import MqttLink, MqttSettings

__all__ = ["MARK", "StandIns", "serve"]

MARK = "@fanout "


class StandIns:
    """Arrival time per store of the current round (the first bundle message after the
    round started), and the last payload of the first store (for the witness)."""

    def __init__(self, stores: list[str]) -> None:
        self.stores = stores
        self.arrived: dict[str, float] = {}
        self.sizes: list[int] = []
        self.sample: bytes = b""
        self.done = asyncio.Event()
        self.open = False

    def start(self) -> None:
        self.arrived, self.sizes, self.open = {}, [], True
        self.done.clear()

    async def on(self, msg: aiomqtt.Message) -> None:
        m = topics.parse(msg.topic.value)
        store = None if m is None else m.store
        if not self.open or store is None or store in self.arrived:
            return
        self.arrived[store] = time.monotonic()
        assert isinstance(msg.payload, bytes)
        self.sizes.append(len(msg.payload))
        if store == self.stores[0]:
            self.sample = msg.payload
        if len(self.arrived) == len(self.stores):
            self.open = False
            self.done.set()


def _answer(text: str) -> None:
    sys.stdout.write(MARK + text + "\n")
    sys.stdout.flush()


async def serve(port: int, stores: list[str]) -> None:
    gws = StandIns(stores)
    mqtt = MqttSettings(port=port)
    links = [MqttLink(mqtt, client_id=f"gw-{s}", handler=gws.on, clean_start=True,
                      subscriptions=[(topics.bundle(s), 1)]) for s in stores]
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        for i in range(0, len(links), 100):  # connect in waves, as gateways would over time
            for gw in links[i:i + 100]:
                await gw.__aenter__()
            await asyncio.gather(*(gw.wait_connected(30) for gw in links[i:i + 100]))
        _answer("ready")
        while (await reader.readline()).strip() == b"arm":
            gws.start()
            _answer("armed")
            await gws.done.wait()
            _answer(json.dumps({"arrived": gws.arrived, "sizes": gws.sizes,
                                "sample": base64.b64encode(gws.sample).decode()}))
    finally:
        for gw in links:
            await gw.__aexit__(None, None, None)


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), sys.argv[2:]))
