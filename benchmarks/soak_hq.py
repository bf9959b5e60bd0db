"""The HQ process of ``aislecast bench soak``, on the accelerated clock of
:mod:`benchmarks.simclock` (``python -m benchmarks.simclock PLAN.json benchmarks.soak_hq``).

The product's :class:`~hq.server.HqServer` (ingest acknowledging the gateway's event
batches, the bundle republisher every simulated 5 minutes, the state board) until
SIGTERM. Retraining is off (``learn_every_s=0``): its CPU burst is not what is soaked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

from aislecast.kernel.const import BUNDLE_REPUBLISH_S
from aislecast.kernel.mqtt import MqttSettings
from benchmarks.simclock import SimClock, installed, run_on_real_loop
from hq.server import HqServer

__all__ = ["main"]


async def _hq(plan: dict[str, Any], clock: SimClock) -> None:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    server = HqServer(db_url=plan["hq_db"], key_path=Path(plan["hq_key"]),
                      mqtt=MqttSettings(port=plan["broker_port"]), http_port=0,
                      client_id="hq-soak", republish_s=BUNDLE_REPUBLISH_S / clock.scale,
                      learn_every_s=0)
    async with server:
        print(json.dumps({"started": True, "sim": clock.elapsed()}), flush=True)
        await asyncio.Event().wait()




def main(argv: list[str]) -> int:
    plan = json.loads(Path(argv[0]).read_text())
    clock = installed()
    with contextlib.suppress(asyncio.CancelledError):
        run_on_real_loop(_hq(plan, clock))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
