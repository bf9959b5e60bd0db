"""The real processes of the kill bench: HQ (``aislecast hq serve`` on SQLite) and the
gateway (``aislecast gateway run``, the simulated scanner), which the bench SIGKILLs.

:func:`kill_campaigns` are the store's campaigns (HQ's database is seeded with them by
:func:`benchmarks._hq.seed_hq`): one ``enter`` campaign per zone, capped at one offer per
shopper ever (``per_campaign = 1``).
:class:`GatewayProcess` starts, kills and restarts the gateway and, while it is down,
reads its SQLite file the way the next start will: ``PRAGMA integrity_check`` and the
outbox rows it holds (:class:`OutboxSnapshot`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from aislecast.kernel.schema import Campaign, Caps, Creative, Trigger
from benchmarks._harness import stop_process
from edge.simstore import default_zones

__all__ = ["GATEWAY", "STORE", "ZONES", "GatewayProcess", "OutboxSnapshot", "integrity",
           "kill_campaigns"]

STORE = "store-kill"
GATEWAY = "gw-kill"
ZONES = [z.id for z in default_zones()]


def kill_campaigns() -> list[Campaign]:
    """One ``enter`` campaign per zone, at most one offer per shopper ever."""
    return [Campaign(id=f"kill-{zone}", name=zone, stores=[STORE],
                     trigger=Trigger(kind="enter", zones=[zone]), caps=Caps(per_campaign=1),
                     creatives=[Creative(id="a", title=f"{zone} deal")], validity_s=600)
            for zone in ZONES]


def integrity(path: Path) -> str:
    """``PRAGMA integrity_check`` of the SQLite file at ``path``: ``ok`` or the problems."""
    conn = sqlite3.connect(path)
    try:
        return "; ".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check"))
    finally:
        conn.close()


@dataclass(slots=True)
class OutboxSnapshot:
    """What a gateway's outbox held while the process was down."""

    integrity: str = "ok"
    events: set[str] = field(default_factory=set)  # event ids
    offers: dict[str, tuple[str, str]] = field(default_factory=dict)  # offer id -> (inbox, campaign)


class _OfferKey(msgspec.Struct):
    inbox: str
    campaign: str


def _snapshot(path: Path) -> OutboxSnapshot:
    if not path.exists():
        return OutboxSnapshot()
    snap = OutboxSnapshot(integrity=integrity(path))
    conn = sqlite3.connect(path)
    try:
        for eid, kind, payload in conn.execute("SELECT id, kind, payload FROM outbox"):
            if kind == "event":
                snap.events.add(str(eid))
            else:
                o = msgspec.json.decode(payload, type=_OfferKey)
                snap.offers[str(eid)] = (o.inbox, o.campaign)
    finally:
        conn.close()
    return snap


class GatewayProcess:
    """``aislecast gateway run`` with a config written into ``work``, restartable."""

    def __init__(self, work: Path, port: int, public_pem: str) -> None:
        self.work = work
        (work / "hq.pub.pem").write_text(public_pem)
        self.config = work / "gateway.toml"
        self.config.write_text(
            f'gateway = "{GATEWAY}"\nstore = "{STORE}"\n'
            f'hq_public_key = "{work / "hq.pub.pem"}"\ndata_dir = "{work / "gw"}"\n'
            f'health_every_s = 0.5\n[broker]\nport = {port}\n[scanner]\nbackend = "sim"\n'
            # a shopper who walked on is out of the old zone soon; no dwell campaigns here
            "[presence]\nabsence_s = 2.0\ndwell_every_s = 3600.0\n")
        self.db_path = work / "gw" / f"gateway-{GATEWAY}.sqlite"
        self.err_path = work / "gateway.err"
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def start(self) -> None:
        with self.err_path.open("ab") as err:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "aislecast", "gateway", "run", "--config", str(self.config),
                "--log-level", "warning", stdout=asyncio.subprocess.DEVNULL, stderr=err,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
        self.starts += 1

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def failure(self) -> str:
        """Why the gateway is not running (its exit code and the end of its stderr)."""
        code = None if self.proc is None else self.proc.returncode
        tail = self.err_path.read_text(errors="replace")[-2000:] if self.err_path.exists() else ""
        return f"gateway exited with {code}:\n{tail}"

    async def kill(self) -> OutboxSnapshot:
        """SIGKILL, wait for the exit, then read the file as the next start will."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        return await asyncio.to_thread(_snapshot, self.db_path)

    async def stop(self) -> OutboxSnapshot:
        """SIGTERM (a clean shutdown), then the same reading as after a kill."""
        assert self.proc is not None
        await stop_process(self.proc, 30)
        return await asyncio.to_thread(_snapshot, self.db_path)
