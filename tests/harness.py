"""A small in-process stack for tests: HQ + one gateway + phones on the test's broker.

:func:`stack` runs on the test's anonymous ``broker`` fixture; :func:`authenticated_stack`
starts its own Mosquitto with the password and ACL files HQ renders from its credential
registry (no anonymous access): HQ logs in as ``hq.1``, gateways with the credential
:meth:`Stack.gateway_config` issues, phones with their enrolment's."""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from aislecast.apps.phone import Phone, PhoneBehaviour, with_login
from aislecast.apps.scenarios import setup_store
from aislecast.kernel.acl import acl_rules
from aislecast.kernel.broker import BrokerConfig, MosquittoProcess, free_port
from aislecast.kernel.mqtt import MqttSettings
from aislecast.kernel.schema import Campaign, Caps, Creative, Trigger
from aislecast.kernel.signing import public_key_pem
from edge.scanner import AdvertCallback, Scanner
from edge.sim_scanner import SimScanner
from edge.simstore import STORE_UUID, SimStore, default_zones
from gateway.app import Gateway
from gateway.config import load_config
from hq.accounts import ROLES, Accounts
from hq.audit import AuditLog
from hq.auth import AuthMiddleware
from hq.broker_auth import BrokerAuthFiles, wait_for_login
from hq.db import HqDb
from hq.gateway_certs import issue_gateway_cert
from hq.local_broker import LocalTlsBroker, tls_broker_config
from hq.refusals import AuthStats
from hq.server import HqServer
from hq.service import Enrollment

STORE = "store-t"


async def until(pred: Callable[[], object], timeout: float = 60.0, step: float = 0.02) -> None:
    """Poll ``pred`` until it is true; TimeoutError after ``timeout`` seconds (a liveness
    bound for a loaded machine: a latency a test holds something to is asserted apart)."""
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(step)


def token_for(db: HqDb, role: str, *, stores: list[str] | None = None) -> str:
    """A bearer token acting as ``role`` (a user role: a new user of that role and a
    personal token; a service kind such as ``wallet``: a service token)."""
    accounts = Accounts(db)
    if role in ROLES:
        name = f"{role.replace('_', '-')}-{len(accounts.users()) + 1}"
        accounts.add_user(name, role, stores=stores)
        return accounts.issue_token("personal", owner=name)[1]
    return accounts.issue_token(role, stores=stores)[1]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def secure(app: FastAPI, db: HqDb, role: str = "admin", *, stores: list[str] | None = None
           ) -> dict[str, str]:
    """Put HQ's auth middleware and audit log on a bare test ``app`` (one that mounts a
    single router); returns the headers of a ``role`` caller."""
    app.state.audit = audit = AuditLog(db)
    app.add_middleware(AuthMiddleware, accounts=Accounts(db), audit=audit, stats=AuthStats())
    return bearer(token_for(db, role, stores=stores))


@dataclass
class Stack:
    hq: HqServer
    mqtt: MqttSettings
    work: Path
    sim: SimStore
    tg: asyncio.TaskGroup
    admin_token: str = ""
    gateways: list[tuple[Gateway, asyncio.Task[None]]] = field(default_factory=list)
    broker: MosquittoProcess | None = None  # authenticated_stack's own broker
    tls_broker: LocalTlsBroker | None = None  # its TLS layout, with tls=True
    logins: dict[str, tuple[str, str]] = field(default_factory=dict)  # gateway -> registry login

    @property
    def authenticated(self) -> bool:
        return self.hq.broker_sync is not None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.hq.http_port}"

    @property
    def admin(self) -> dict[str, str]:
        """Headers for an admin call: ``httpx.AsyncClient(base_url=st.url, headers=st.admin)``."""
        return bearer(self.admin_token)

    def token(self, role: str, *, stores: list[str] | None = None) -> str:
        return token_for(self.hq.db, role, stores=stores)

    def gateway_config(self, name: str = "gw-1") -> dict[str, object]:
        """A gateway's config; on an authenticated stack with a credential issued for it
        (with TLS: a client certificate from HQ's CA for the mutual-TLS listener)."""
        broker: dict[str, object] = {"port": self.mqtt.port}
        if self.authenticated:
            user, password = self.hq.service.credentials.issue_gateway(STORE, name)
            self.logins[name] = (user, password)
            broker |= {"username": user, "password": password}
        if self.tls_broker is not None:
            files = issue_gateway_cert(self.tls_broker.ca, self.logins[name][0], self.work / "gw-tls")
            broker = {"port": self.tls_broker.gateway_port, "tls_ca": str(files.ca),
                      "tls_cert": str(files.cert), "tls_key": str(files.key)}
        return {
            "gateway": name, "store": STORE, "data_dir": str(self.work / name),
            "hq_public_key": public_key_pem(self.hq.service.signer.public_key),
            "broker": broker,
            "scanner": {"backend": "sim", "receivers": self.sim.receivers},
            "health_every_s": 1.0,
        }

    async def start_gateway(self, name: str = "gw-1",
                            scanner: Callable[[AdvertCallback], Scanner] | None = None,
                            wait_ready: bool = True, **overrides: object) -> Gateway:
        cfg = await asyncio.to_thread(load_config, self.gateway_config(name) | overrides)
        if self.hq.broker_sync is not None and name in self.logins:
            # its new login (the ACL block a certificate login uses too) is in the broker
            # before it starts: the registry's password for it logs in on the same render
            await self.hq.broker_sync.flush()
            await wait_for_login("127.0.0.1", self.mqtt.port, *self.logins[name],
                                 tls_context=self.tls_context())
        gw = Gateway(cfg, scanner or (lambda cb: SimScanner(self.sim, cb)))
        task = self.tg.create_task(gw.run(), name=f"test-{name}")
        self.gateways.append((gw, task))
        async with asyncio.timeout(10):
            await gw.started.wait()  # its parts exist (database opened, bundle replayed)
            if wait_ready:
                await gw.ready.wait()
        return gw

    async def stop_gateway(self, gw: Gateway) -> None:
        for g, task in self.gateways:
            if g is gw:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.gateways = [(g, t) for g, t in self.gateways if g is not gw]

    def tls_context(self) -> ssl.SSLContext | None:
        """A client context trusting the stack's CA (None on a plain stack)."""
        if self.tls_broker is None:
            return None
        return ssl.create_default_context(cafile=str(self.tls_broker.ca.cert_path))

    def phone_settings(self, e: Enrollment) -> MqttSettings:
        """The broker settings with ``e``'s login (none on the anonymous stack)."""
        if not self.authenticated:
            return self.mqtt
        return with_login(self.mqtt, e.broker_username, e.broker_password)

    def phone(self, e: Enrollment, **kw: object) -> Phone:
        return Phone(self.phone_settings(e), inbox=e.inbox, identity_key=bytes.fromhex(e.identity_key),
                     rotation_k=e.rotation_k, rng=random.Random(1),
                     behaviour=kw.pop("behaviour", PhoneBehaviour(open_p=1.0)),  # type: ignore[arg-type]
                     **kw)  # type: ignore[arg-type]


def enter_campaign(zone: str, *, validity_s: float = 600, cap: int = 1, cid: str | None = None,
                   holdout: float = 0.0) -> Campaign:
    return Campaign(id=cid or f"c-{zone}", name=f"{zone} offer", stores=[STORE],
                    trigger=Trigger(kind="enter", zones=[zone]), validity_s=validity_s,
                    creatives=[Creative(id="a", title=f"Deal in {zone}")],
                    caps=Caps(per_shopper=cap), holdout_pct=holdout)


@contextlib.asynccontextmanager
async def stack(port: int, work: Path, campaigns: list[Campaign],
                *, noise_db: float = 0.0, dropout: float = 0.0,
                broker: MosquittoProcess | None = None,
                tls: LocalTlsBroker | None = None, **hq_options: Any) -> AsyncIterator[Stack]:
    """HQ on the broker at ``port``; with ``broker`` (one of
    :func:`authenticated_broker`), HQ renders its files and reloads it; with ``tls``, HQ
    and phones use its TLS + password listener and gateways its mutual-TLS one;
    ``hq_options`` are more :class:`HqServer` settings (``keys_every_s``, ...)."""
    mqtt = MqttSettings(port=port) if tls is None else MqttSettings(
        port=tls.phone_port, tls_ca=str(tls.ca.cert_path))
    async with HqServer(db_url=f"sqlite:///{work}/hq.sqlite", key_path=work / "hq.pem", mqtt=mqtt,
                        http_port=0,
                        broker_auth_dir=None if broker is None else _auth_files(work).directory,
                        broker_pid=None if broker is None else (lambda: broker.pid),
                        **hq_options) as hq, asyncio.TaskGroup() as tg:
        zones = default_zones()
        setup_store(hq.service, STORE, zones, STORE_UUID)
        for c in campaigns:
            hq.service.upsert_campaign(c)
        sim = SimStore(zones, noise_db=noise_db, dropout=dropout, seed=3)
        st = Stack(hq, mqtt, work, sim, tg, admin_token=token_for(hq.db, "admin"), broker=broker,
                   tls_broker=tls)
        try:
            yield st
        finally:
            for _, task in st.gateways:
                task.cancel()


def _auth_files(work: Path) -> BrokerAuthFiles:
    return BrokerAuthFiles(broker_auth_dir(work))


def broker_auth_dir(work: Path) -> Path:
    """Where :func:`authenticated_broker` (``work``) reads its password and ACL files."""
    return work / "broker-auth"


@contextlib.asynccontextmanager
async def authenticated_broker(work: Path) -> AsyncIterator[MosquittoProcess]:
    """A private Mosquitto reading HQ's password and ACL files in ``work/broker-auth``
    (empty until HQ renders them: nobody can log in), no anonymous access."""
    files = _auth_files(work)
    files.write({}, acl_rules([], []))
    cfg = BrokerConfig(directory=work / "mosquitto", port=free_port(),
                       password_file=files.password_path, acl_file=files.acl_path)
    async with MosquittoProcess(cfg) as proc:
        yield proc


@contextlib.asynccontextmanager
async def tls_broker(work: Path) -> AsyncIterator[tuple[MosquittoProcess, LocalTlsBroker]]:
    """:func:`authenticated_broker` with the product's TLS layout
    (:func:`hq.local_broker.tls_broker_config`; HQ's CA in ``work/hq-data/ca``)."""
    files = _auth_files(work)
    files.write({}, acl_rules([], []))
    layout = await asyncio.to_thread(tls_broker_config, work / "mosquitto", files,
                                     work / "hq-data" / "ca")
    async with MosquittoProcess(layout.config) as proc:
        yield proc, layout


@contextlib.asynccontextmanager
async def authenticated_stack(work: Path, campaigns: list[Campaign], *, noise_db: float = 0.0,
                              dropout: float = 0.0, tls: bool = False, **hq_options: Any,
                              ) -> AsyncIterator[Stack]:
    """:func:`stack` on its own broker whose logins come from HQ's credential registry;
    with ``tls``, on :func:`tls_broker` (gateways over mutual TLS, HQ and phones over TLS)."""
    async with contextlib.AsyncExitStack() as es:
        if tls:
            broker, layout = await es.enter_async_context(tls_broker(work))
        else:
            broker, layout = await es.enter_async_context(authenticated_broker(work)), None
        st = await es.enter_async_context(stack(broker.port, work, campaigns, noise_db=noise_db,
                                                dropout=dropout, broker=broker, tls=layout,
                                                **hq_options))
        yield st
