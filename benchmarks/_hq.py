"""HQ for the process-level benchmarks (e2e, kill): its database seeded with HQ's own
code, and ``aislecast hq serve`` as a child process.

:func:`seed_hq` makes one store with the simulated store's six zones and beacons, the
given campaigns and ``shoppers`` enrolled shoppers, plus an admin token for the API;
:func:`hq_serve` runs HQ on that database and yields its HTTP port once ``/health``
answers; :func:`publish_bundle` asks it to sign and publish a store's bundle.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import urllib.request
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from aislecast.apps.scenarios import setup_store
from aislecast.kernel.broker import free_port
from aislecast.kernel.const import TOKEN_ROTATION_K
from aislecast.kernel.schema import Campaign
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from benchmarks._harness import stop_process
from edge.simstore import STORE_UUID, default_zones
from hq.accounts import Accounts
from hq.consent import PURPOSES
from hq.db import HqDb
from hq.service import HqService

__all__ = ["SeededHq", "hq_serve", "publish_bundle", "seed_hq"]


@dataclass(frozen=True, slots=True)
class SeededHq:
    shoppers: list[tuple[str, bytes]]  # (inbox, identity key)
    signer: Signer
    admin_token: str


def seed_hq(work: Path, store: str, campaigns: Sequence[Campaign], shoppers: int, *,
            admin: str, rotation_k: int = TOKEN_ROTATION_K) -> SeededHq:
    """HQ's database ``work/hq.sqlite`` and signing key ``work/hq.pem`` (blocking: run it
    in a thread)."""
    db = HqDb(f"sqlite:///{work}/hq.sqlite")
    try:
        signer = Signer(load_or_create_signing_key(work / "hq.pem"))
        service = HqService(db, signer, rotation_k=rotation_k)
        setup_store(service, store, default_zones(), STORE_UUID)
        for c in campaigns:
            service.upsert_campaign(c)
        enrolled = []
        for _ in range(shoppers):
            e = service.enroll(list(PURPOSES), [store])
            enrolled.append((e.inbox, bytes.fromhex(e.identity_key)))
        accounts = Accounts(db)
        accounts.add_user(admin, "admin")
        _, token = accounts.issue_token("personal", owner=admin)
        return SeededHq(enrolled, signer, token)
    finally:
        db.close()


@contextlib.asynccontextmanager
async def hq_serve(work: Path, broker_args: Sequence[str], *, extra: Sequence[str] = (),
                   up_within_s: float = 60.0) -> AsyncIterator[int]:
    """``aislecast hq serve`` on :func:`seed_hq`'s files with ``broker_args`` (e.g.
    ``["--broker", "127.0.0.1:1883"]`` or ``["--config", path]``); yields its HTTP port
    once /health answers. Its stderr goes to ``work/hq.err``, named if it exits early."""
    http = free_port()
    with (work / "hq.err").open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aislecast", "hq", "serve", "--db", f"sqlite:///{work}/hq.sqlite",
            *broker_args, "--http-port", str(http), "--key", str(work / "hq.pem"), *extra,
            "--log-level", "warning", stdout=asyncio.subprocess.DEVNULL, stderr=err)
    try:
        async with asyncio.timeout(up_within_s):
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
        await stop_process(proc, 30)


def publish_bundle(http: int, store: str, token: str) -> None:
    """Ask HQ to sign and publish ``store``'s bundle (retained on the broker); blocking."""
    urllib.request.urlopen(urllib.request.Request(
        f"http://127.0.0.1:{http}/api/stores/{store}/publish", method="POST",
        headers={"Authorization": f"Bearer {token}"}), timeout=30)
