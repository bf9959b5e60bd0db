"""docs/quickstart.md is true: its ``sh`` blocks, run in order in one shell (in a temp
directory, HQ on a free port, the suite's private Mosquitto), end with the offer on the
reference phone. The ``sh no-test`` blocks (install, start a broker) are what this test
does itself: the venv is the one running pytest, the broker is the fixture's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from aislecast.kernel.broker import MosquittoProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "quickstart.md"
pytestmark = pytest.mark.timeout(240)


def shell_blocks(text: str) -> list[str]:
    """The fenced blocks whose info string is exactly ``sh``, in order."""
    return re.findall(r"^```sh\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


def test_the_doc_has_the_steps_the_test_runs() -> None:
    blocks = shell_blocks(DOC.read_text(encoding="utf-8"))
    text = "\n".join(blocks)
    for step in ("aislecast hq init", "aislecast hq serve", "aislecast hq tokens issue",
                 "/api/stores", "/api/campaigns", "aislecast hq gateways add",
                 "aislecast gateway run", "aislecast phone enroll", "aislecast phone listen",
                 "aislecast phone sight"):
        assert step in text, step
    assert "mosquitto" not in text  # the broker block is the test's own (no-test)


def _stop(work: Path) -> None:
    """End the processes the doc's blocks started (their pid files), if still running."""
    for pid_file in work.glob("*.pid"):
        with contextlib.suppress(ValueError, OSError):
            pid = int(pid_file.read_text().strip())
            if b"aislecast" in Path(f"/proc/{pid}/cmdline").read_bytes():  # still ours
                os.kill(pid, signal.SIGTERM)


async def test_quickstart_commands_end_with_an_offer_on_the_phone(
        broker: MosquittoProcess, tmp_path: Path) -> None:
    work = tmp_path / "qs"
    work.mkdir()
    script = "set -eu\n" + "\n".join(shell_blocks(DOC.read_text(encoding="utf-8")))
    env = {**os.environ, "MQTT_PORT": str(broker.config.port), "HQ_PORT": str(free_port()),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(ROOT)}
    env.pop("AISLECAST_HQ_TOKEN", None)
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", script, cwd=work, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await proc.communicate()
    finally:
        await asyncio.to_thread(_stop, work)
    text = out.decode(errors="replace")
    logs = {n: (work / n).read_text(errors="replace")[-2000:] for n in ("hq.log", "gw.log")
            if (work / n).exists()}
    assert proc.returncode == 0, f"{text[-3000:]}\n{logs}"
    offers = [json.loads(line) for line in
              (work / "offers.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
    assert [(o["title"], o["campaign"]) for o in offers] == [("Coffee -20% today", "welcome")]
    assert '"id":"b-entrance"' in text.replace(" ", "")  # the API calls' answers were printed
