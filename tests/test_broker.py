"""The private broker harness: config, ACL order, and no orphan when its parent dies."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from aislecast.kernel.broker import AclRule, BrokerConfig
from tests.harness import until

_CHILD = """
import asyncio, pathlib, sys
from aislecast.kernel.broker import BrokerConfig, MosquittoProcess, free_port
async def main():
    b = MosquittoProcess(BrokerConfig(directory=pathlib.Path(sys.argv[1]), port=free_port()))
    await b.__aenter__()
    print(b.pid, flush=True)
    await asyncio.sleep(60)  # parked until the test SIGKILLs this process
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


def _alive(pid: int, started: str) -> bool:
    """True while ``pid`` is the same, unreaped, not-yet-zombie process: a zombie waiting
    for a busy reaper, or the pid reused by another process, counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0] != "Z" and fields[19] == started  # state; starttime (field 22)


async def test_broker_dies_with_a_parent_killed_by_sigkill(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CHILD, str(tmp_path / "b"), stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    # generous bounds: on a loaded 2-core machine the child's imports alone take seconds
    broker_pid = int((await asyncio.wait_for(proc.stdout.readline(), 60)).decode())
    started = Path(f"/proc/{broker_pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    assert _alive(broker_pid, started)  # the witness: it runs before its parent dies
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    try:
        await until(lambda: not _alive(broker_pid, started), timeout=60, step=0.05)
    except TimeoutError:
        os.kill(broker_pid, signal.SIGKILL)
        raise AssertionError(f"mosquitto {broker_pid} outlived its parent by 60 s") from None


def test_a_child_whose_parent_died_before_prctl_exits() -> None:
    """The fork/prctl race: the parent pid passed in is no longer the child's parent."""
    code = ("import os, sys; from aislecast.kernel.broker import _die_with_parent;"
            " _die_with_parent(int(sys.argv[1])); print('running')")
    ok = subprocess.run([sys.executable, "-c", code, str(os.getpid())],
                        capture_output=True, text=True, check=False)
    assert (ok.returncode, ok.stdout) == (0, "running\n")  # its real parent: it runs on
    orphan = subprocess.run([sys.executable, "-c", code, str(os.getpid() + 1)],
                            capture_output=True, text=True, check=False)
    assert (orphan.returncode, orphan.stdout) == (1, "")
