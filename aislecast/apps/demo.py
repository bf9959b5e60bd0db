"""``aislecast demo``: HQ, one simulated store gateway and simulated phones, end to end.

Everything real but the radio: a private Mosquitto started here, HQ with its HTTP API
and SQLite, the gateway daemon with its SQLite outbox, phones on persistent MQTT
sessions. The broker has no anonymous access and the product's TLS layout
(:func:`hq.local_broker.tls_broker_config`, a CA made for this run in the temp dir): it
reads the password, ACL and CRL files HQ renders; HQ (``hq.1``) and each phone (its
enrolment's login) connect over TLS with their passwords, the gateway over mutual TLS
with a certificate issued to ``gw.store-1.gw-1``, as in production. The one plain
listener, on 127.0.0.1, carries no traffic: it tells that the broker is up.
Shoppers walk the simulated store; their phones advertise rotating tokens that the
gateway hears through the same scanner interface a real adapter uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import statistics
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aislecast.apps.demo_accounts import DemoCredentials, provision
from aislecast.apps.phone import Phone, with_login
from aislecast.apps.scenarios import SCENARIOS, Scenario
from aislecast.apps.till_client import TillClient
from aislecast.apps.till_sim import TillSim
from aislecast.kernel.acl import acl_rules
from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.mqtt import MqttSettings
from aislecast.kernel.procinfo import rss_mib
from aislecast.kernel.signing import public_key_pem
from edge.sim_scanner import SimScanner
from edge.simstore import STORE_UUID, SimShopper, SimStore, default_zones
from gateway.app import Gateway
from gateway.config import GatewayConfig, load_config
from hq.accounts import Accounts
from hq.broker_auth import BrokerAuthFiles, wait_for_login
from hq.consent import PURPOSES
from hq.feed_rules import FeedSettings
from hq.gateway_certs import issue_gateway_cert
from hq.landing import LandingHosts
from hq.local_broker import LocalTlsBroker, tls_broker_config
from hq.server import HqServer
from hq.till import member_of

__all__ = ["DemoOptions", "DemoState", "run_demo"]

# where the demo's creatives land (its short links redirect only there)
DEMO_LANDING_HOSTS = ("ex.invalid",)
# how often the demo's HQ polls the feeds the flash scenario serves (hq.feeds)
DEMO_FEED_EVERY_S = 0.5

log = logging.getLogger("aislecast.apps.demo")

STORE = "store-1"


@dataclass(frozen=True, slots=True)
class DemoOptions:
    seconds: float | None = 20.0  # None: until interrupted
    shoppers: int = 6
    scenario: str = "location"
    seed: int = 7
    workdir: Path | None = None
    http_port: int = 0  # HQ's HTTP on 127.0.0.1; 0: a free port


@dataclass(slots=True)
class DemoState:
    """What the live view shows: shared by the demo's components."""

    started: float = field(default_factory=time.monotonic)
    zone_of: dict[str, str] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=dict)
    opened: dict[str, int] = field(default_factory=dict)
    log: deque[str] = field(default_factory=lambda: deque(maxlen=12))
    gateway: Gateway | None = None
    hq: HqServer | None = None
    credentials: DemoCredentials | None = None
    phones: list[Phone] = field(default_factory=list)
    till: TillSim | None = None

    @property
    def hq_url(self) -> str:
        return "" if self.hq is None else f"http://127.0.0.1:{self.hq.http_port}"

    def started_line(self) -> dict[str, Any]:
        """``aislecast demo --json``'s first line: where HQ is and how to get in."""
        c = self.credentials
        return {"event": "started", "hq_url": self.hq_url,
                "admin_token": c.admin_token if c else None,
                "wallet_token": c.wallet_token if c else None,
                "logins": {role: {"name": n, "password": pw}
                           for role, (n, pw) in (c.logins.items() if c else ())}}


def _walk(rng: random.Random, zones: list[str]) -> list[tuple[str, float]]:
    aisles = [z for z in zones if z not in {"entrance", "checkout"}]
    picks = rng.sample(aisles, k=rng.randint(1, 3))
    return ([("entrance", rng.uniform(2, 4))] + [(z, rng.uniform(5, 12)) for z in picks]
            + [("checkout", rng.uniform(3, 6))])


async def _population(store: SimStore, phones: list[Phone], rng: random.Random,
                      zones: list[str]) -> None:
    """Each phone's shopper walks a visit, pauses outside, and comes back."""

    async def one(i: int, phone: Phone) -> None:
        await asyncio.sleep(i * 0.6)
        while True:
            s = SimShopper(name=phone.inbox, token_for=phone.token, path=_walk(rng, zones),
                           start=time.monotonic(), speed_mps=2.0)
            store.add_shopper(s)
            await asyncio.sleep(s.end - time.monotonic() + rng.uniform(4, 10))

    async with asyncio.TaskGroup() as tg:
        for i, p in enumerate(phones):
            tg.create_task(one(i, p), name=f"sim-shopper-{i}")


def summary(state: DemoState, seconds: float, scenario: str) -> dict[str, Any]:
    gw, hq = state.gateway, state.hq
    assert gw is not None and hq is not None
    lat = sorted(x for p in state.phones for x in p.stats.latencies_s)
    return {
        "scenario": scenario,
        "seconds": round(seconds, 1),
        "shoppers": len(state.phones),
        "adverts_decoded": gw.parts.counters.adverts_decoded,
        "presence_events": gw.parts.triggers.stats.presence_events,
        "decisions": gw.parts.recorder.stats.decisions,
        "offers_published": gw.parts.publisher.stats.offers_published,
        "offers_received": sum(p.stats.offers_received for p in state.phones),
        "offers_opened": sum(p.stats.opened for p in state.phones),
        "offers_late_dropped": sum(p.stats.offers_late for p in state.phones),
        # codes HQ verified and consumed at the simulated till (hq.till), and its baskets
        "offers_redeemed_verified": hq.db.query("SELECT count(*) FROM redemptions")[0][0],
        "till_purchase_lines": state.till.stats.lines if state.till else 0,
        "events_ingested": hq.ingest.stats.events_ingested,
        "bad_payloads": sum(gw.parts.counters.bad_payloads.values())
        + sum(hq.ingest.stats.bad_payloads.values()),
        "offer_latency_ms_p50": round(statistics.median(lat) * 1000, 2) if lat else None,
        "offer_latency_ms_max": round(lat[-1] * 1000, 2) if lat else None,
        # the demo runs HQ, the gateway and every phone in this one process
        "process_rss_mib": None if (rss := rss_mib()) is None else round(rss, 1),
    }


async def _gateway_config(hq: HqServer, work: Path, tls: LocalTlsBroker,
                          sim: SimStore) -> GatewayConfig:
    """The gateway's config with a client certificate issued for it, once the broker has
    its ACL block (the phones, enrolled before, are in the same rendered files). The
    registry's password for it never leaves this function: logging in with it on the
    phones' listener shows that the render with its ACL block has been loaded."""
    user, password = hq.service.credentials.issue_gateway(STORE, "gw-1")
    if hq.broker_sync is not None:
        await hq.broker_sync.flush()
        ctx = await asyncio.to_thread(ssl.create_default_context, cafile=str(tls.ca.cert_path))
        await wait_for_login("127.0.0.1", tls.phone_port, user, password, tls_context=ctx)
    files = await asyncio.to_thread(issue_gateway_cert, tls.ca, user, work / "gateway-tls")
    return await asyncio.to_thread(load_config, {
        "gateway": "gw-1", "store": STORE, "data_dir": str(work / "gateway"),
        "hq_public_key": public_key_pem(hq.service.signer.public_key),
        "broker": {"port": tls.gateway_port, "tls_ca": str(files.ca), "tls_cert": str(files.cert),
                   "tls_key": str(files.key)},
        "scanner": {"backend": "sim", "receivers": sim.receivers},
        "health_every_s": 2.0,
    })


async def _during(scenario: Scenario, hq: HqServer, state: DemoState, seed: int) -> None:
    """The scenario's own doings, and the store's simulated till (its own till token;
    every shopper has the member id their wallet would show)."""
    _, token = Accounts(hq.db).issue_token("till", name="demo-till", stores=[STORE])
    members = {p.inbox: member_of(hq.db, p.inbox) for p in state.phones}
    state.till = TillSim(TillClient(state.hq_url, token), state.phones, members=members,
                         campaigns=lambda: [c.id for c in hq.service.campaigns(STORE)],
                         rng=random.Random(seed + 1))  # the walks' rng draws stay as they were
    async with asyncio.TaskGroup() as tg:
        tg.create_task(scenario.during(hq.service, STORE, state), name="scenario-during")
        tg.create_task(state.till.run(), name="till-sim")


async def run_demo(opts: DemoOptions, *, state: DemoState | None = None,
                   view: Any = None,
                   on_started: Callable[[DemoState], None] | None = None) -> dict[str, Any]:
    """Run the demo; returns the summary (docs/architecture.md#command-line-contract).
    ``on_started`` is called once HQ listens and its accounts exist."""
    scenario: Scenario = SCENARIOS[opts.scenario]
    state = state or DemoState()
    rng = random.Random(opts.seed)
    with contextlib.ExitStack() as stack:
        work = opts.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aislecast-")))
        files = BrokerAuthFiles(work / "broker-auth")
        await asyncio.to_thread(files.write, {}, acl_rules([], []))  # nobody, until HQ renders
        tls = await asyncio.to_thread(tls_broker_config, work / "mosquitto", files, work / "ca")
        broker = MosquittoProcess(tls.config)
        async with broker:
            mqtt = MqttSettings(port=tls.phone_port, tls_ca=str(tls.ca.cert_path))
            async with HqServer(db_url=f"sqlite:///{work}/hq.sqlite",
                                key_path=work / "hq-signing.pem", mqtt=mqtt,
                                http_port=opts.http_port,
                                rotation_k=scenario.rotation_k,
                                landing_hosts=LandingHosts(DEMO_LANDING_HOSTS),
                                broker_auth_dir=files.directory,
                                broker_pid=lambda: broker.pid,
                                feeds=FeedSettings(every_s=DEMO_FEED_EVERY_S),
                                wallet_broker_url=f"wss://localhost:{tls.browser_port}/mqtt") as hq, \
                    asyncio.TaskGroup() as tg:
                state.hq = hq
                state.credentials = provision(hq.db, STORE)
                if on_started is not None:
                    on_started(state)
                zones = default_zones()
                await scenario.setup(hq.service, STORE, zones, STORE_UUID)
                enrolled = [hq.service.enroll(list(PURPOSES), [STORE]) for _ in range(opts.shoppers)]
                await hq.service.publish_bundle(STORE)
                sim = SimStore(zones, seed=opts.seed)
                gw = Gateway(await _gateway_config(hq, work, tls, sim),
                             lambda cb: SimScanner(sim, cb))
                state.gateway = gw
                gw_task = tg.create_task(gw.run(), name="gateway")
                await gw.ready.wait()
                async with contextlib.AsyncExitStack() as phones:
                    for e in enrolled:
                        login = with_login(mqtt, e.broker_username, e.broker_password)
                        p = Phone(login, inbox=e.inbox, identity_key=bytes.fromhex(e.identity_key),
                                  rotation_k=e.rotation_k, rng=random.Random(rng.random()))
                        state.phones.append(await phones.enter_async_context(p))
                    await asyncio.gather(*(p.link.wait_connected(10) for p in state.phones))
                    t0 = time.monotonic()
                    pop = tg.create_task(_population(sim, state.phones, rng, [z.id for z in zones]),
                                         name="sim-population")
                    extra = tg.create_task(_during(scenario, hq, state, opts.seed), name="scenario")
                    view_task = tg.create_task(view(state), name="live-view") if view else None
                    try:
                        if opts.seconds is None:
                            await asyncio.Event().wait()
                        else:
                            await asyncio.sleep(opts.seconds)
                    finally:
                        pop.cancel()
                        extra.cancel()
                        if view_task is not None:
                            view_task.cancel()
                    # let in-flight offers, feedback and event batches drain
                    await asyncio.sleep(2.0)
                    elapsed = time.monotonic() - t0
                result = summary(state, elapsed, opts.scenario)
                gw_task.cancel()
    return result
