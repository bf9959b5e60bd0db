"""The real processes of the kill bench: HQ (``aislecast hq serve`` on SQLite) and the
gateway (``aislecast gateway run``, the simulated scanner), which the bench SIGKILLs.

:func:`prepare_hq` builds HQ's database with HQ's own code: the store's six zones and
beacons, one ``enter`` campaign per zone capped at one offer per shopper ever
(``per_campaign = 1``), and the enrolled shoppers whose phones the load plays.
:class:`GatewayProcess` starts, kills and restarts the gateway and, while it is down,
reads its SQLite file the way the next start will: ``PRAGMA integrity_check`` and the
outbox rows it holds (:class:`OutboxSnapshot`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from aislecast.apps.scenarios import setup_store
from aislecast.kernel.broker import free_port
from aislecast.kernel.const import TOKEN_ROTATION_K
from aislecast.kernel.schema import Campaign, Caps, Creative, Trigger
from aislecast.kernel.signing import Signer, load_or_create_signing_key, public_key_pem
from edge.simstore import STORE_UUID, default_zones
from hq.accounts import Accounts
from hq.db import HqDb
from hq.service import HqService

__all__ = ["GATEWAY", "STORE", "ZONES", "GatewayProcess", "HqSetup", "OutboxSnapshot",
           "hq_process", "integrity", "prepare_hq", "publish_bundle"]

STORE = "store-kill"
GATEWAY = "gw-kill"
ZONES = [z.id for z in default_zones()]
_HQ_UP_WITHIN_S = 60.0


@dataclass(frozen=True, slots=True)
class HqSetup:
    shoppers: list[tuple[str, bytes]]  # (inbox, identity key)
    public_pem: str
    admin_token: str


def prepare_hq(work: Path, shoppers: int) -> HqSetup:
    """HQ's database and signing key in ``work`` (blocking: run it in a thread)."""
    db = HqDb(f"sqlite:///{work}/hq.sqlite")
    try:
        signer = Signer(load_or_create_signing_key(work / "hq.pem"))
        service = HqService(db, signer, rotation_k=TOKEN_ROTATION_K)
        setup_store(service, STORE, default_zones(), STORE_UUID)
        for zone in ZONES:
            service.upsert_campaign(Campaign(
                id=f"kill-{zone}", name=zone, stores=[STORE],
                trigger=Trigger(kind="enter", zones=[zone]), caps=Caps(per_campaign=1),
                creatives=[Creative(id="a", title=f"{zone} deal")], validity_s=600))
        enrolled = []
        for _ in range(shoppers):
            e = service.enroll(["offers"])
            enrolled.append((e.inbox, bytes.fromhex(e.identity_key)))
        accounts = Accounts(db)
        accounts.add_user("kill-admin", "admin")
        _, token = accounts.issue_token("personal", owner="kill-admin")
        return HqSetup(enrolled, public_key_pem(signer.public_key), token)
    finally:
        db.close()


@contextlib.asynccontextmanager
async def hq_process(work: Path, port: int) -> AsyncIterator[int]:
    """``aislecast hq serve`` on ``work/hq.sqlite`` and the broker at ``port``; yields
    its HTTP port once /health answers."""
    http = free_port()
    with (work / "hq.err").open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aislecast", "hq", "serve", "--db", f"sqlite:///{work}/hq.sqlite",
            "--broker", f"127.0.0.1:{port}", "--http-port", str(http), "--key",
            str(work / "hq.pem"), "--log-level", "warning",
            stdout=asyncio.subprocess.DEVNULL, stderr=err)
    try:
        async with asyncio.timeout(_HQ_UP_WITHIN_S):
            while True:
                if proc.returncode is not None:
                    raise RuntimeError(f"hq serve exited with {proc.returncode}; see {work}/hq.err")
                try:
                    await asyncio.to_thread(urllib.request.urlopen,
                                            f"http://127.0.0.1:{http}/health", timeout=1)
                    break
                except OSError:
                    await asyncio.sleep(0.1)
        yield http
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


def publish_bundle(http: int, token: str) -> None:
    """Ask HQ to sign and publish the store's bundle (retained on the broker)."""
    urllib.request.urlopen(urllib.request.Request(
        f"http://127.0.0.1:{http}/api/stores/{STORE}/publish", method="POST",
        headers={"Authorization": f"Bearer {token}"}), timeout=30)


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
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                async with asyncio.timeout(30):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return await asyncio.to_thread(_snapshot, self.db_path)
