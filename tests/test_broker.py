"""The private broker harness: config, ACL order, and no orphan when its parent dies."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from aislecast.kernel.broker import AclRule, BrokerConfig

_CHILD = """
import asyncio, pathlib, sys
from aislecast.kernel.broker import BrokerConfig, MosquittoProcess, free_port
async def main():
    b = MosquittoProcess(BrokerConfig(directory=pathlib.Path(sys.argv[1]), port=free_port()))
    await b.__aenter__()
    print(b.pid, flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""


def test_acl_patterns_come_before_the_first_user_line(tmp_path: Path) -> None:
    cfg = BrokerConfig(directory=tmp_path, port=1, acl=[
        AclRule("read", "a/%u"), AclRule("write", "b", user="gw"), AclRule("write", "c/%u")])
    lines = cfg.render_acl().splitlines()
    assert lines == ["pattern read a/%u", "pattern write c/%u", "user gw", "topic write b"]


def test_config_has_the_measured_settings(tmp_path: Path) -> None:
    text = BrokerConfig(directory=tmp_path, port=1234).render()
    assert "listener 1234 127.0.0.1" in text
    assert "set_tcp_nodelay true" in text
    assert "max_queued_messages 100000" in text


async def test_broker_dies_with_a_parent_killed_by_sigkill(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CHILD, str(tmp_path / "b"), stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    broker_pid = int((await asyncio.wait_for(proc.stdout.readline(), 20)).decode())
    os.kill(broker_pid, 0)  # running
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(broker_pid, 0)
        except ProcessLookupError:
            return
        await asyncio.sleep(0.1)
    os.kill(broker_pid, signal.SIGKILL)
    raise AssertionError(f"mosquitto {broker_pid} outlived its parent")
