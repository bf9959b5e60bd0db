"""The reference phone's commands on real brokers: one client id per command on an open
broker, one connection doing both on an authenticated one (``listen --sightings-stdin``)."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
from pathlib import Path

import aiomqtt

from aislecast.apps.cli import main
from aislecast.apps.phone import Phone
from aislecast.kernel import topics
from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.mqtt import MqttSettings
from aislecast.kernel.schema import PhoneSighting, decode
from hq.service import Enrollment
from tests.harness import STORE, authenticated_stack, until

_until = functools.partial(until, timeout=15.0)
ROOT = Path(__file__).resolve().parent.parent


def _me(path: Path, e: Enrollment, *, login: bool) -> Path:
    body = {"inbox": e.inbox, "identity_key": e.identity_key, "rotation_k": e.rotation_k}
    if login:
        body |= {"broker_username": e.broker_username, "broker_password": e.broker_password}
    path.write_text(json.dumps(body), encoding="utf-8")
    return path


async def test_sight_beside_listen_does_not_kick_it(broker: MosquittoProcess, tmp_path: Path) -> None:
    e = Enrollment("0123456789abcdef", "00" * 16, 9, ["offers"])
    me = _me(tmp_path / "me.json", e, login=False)
    got: list[PhoneSighting] = []
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="observer") as watch, \
            Phone(MqttSettings(port=broker.port), inbox=e.inbox, identity_key=bytes(16),
                  rotation_k=9, role="listen") as listening:
        await watch.subscribe(topics.sightings("+", "+"), qos=1)
        await listening.link.wait_connected(10)

        async def collect() -> None:
            async for m in watch.messages:
                got.append(decode(bytes(m.payload), PhoneSighting))  # noqa: PERF401 - as they come

        task = asyncio.create_task(collect())
        argv = ["phone", "sight", "--me", str(me), "--broker", f"127.0.0.1:{broker.port}",
                "--store", STORE, "--beacon", "b-1", "--rssi", "-61"]
        assert await asyncio.to_thread(main, argv) == 0
        await _until(lambda: len(got) == 1)  # the sighting arrived ...
        assert got[0].rssi == -61
        # ... and the listening connection was never taken over
        assert listening.link.connected.is_set() and listening.link.stats.disconnects == 0
        task.cancel()


async def test_listen_publishes_stdin_sightings_on_its_own_login(tmp_path: Path) -> None:
    async with authenticated_stack(tmp_path, []) as st:
        e = st.hq.service.enroll(["offers"], [STORE])
        assert st.hq.broker_sync is not None
        await st.hq.service.publish_bundle(STORE)
        gw = await st.start_gateway("gw-1")
        await st.hq.broker_sync.flush()
        me = _me(tmp_path / "me.json", e, login=True)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aislecast", "phone", "listen", "--me", str(me),
            "--broker", f"127.0.0.1:{st.mqtt.port}", "--sightings-stdin",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)})
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        try:
            line = await asyncio.wait_for(proc.stderr.readline(), 30)
            assert b"listening for offers" in line
            before = gw.parts.counters.sightings_in
            proc.stdin.write(f"{STORE} b-produce -58\nnot a sighting\n".encode())
            await proc.stdin.drain()
            out = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
            assert out["sighting"]["rssi"] == -58
            err = await asyncio.wait_for(proc.stderr.readline(), 30)
            assert b"is not 'STORE BEACON RSSI'" in err  # one line, and it keeps running
            await _until(lambda: gw.parts.counters.sightings_in > before)
            assert gw.parts.counters.bad_payloads.get("sighting_unresolved", 0) == 0
            assert proc.returncode is None
        finally:
            proc.terminate()
            await proc.wait()
