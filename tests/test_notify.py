"""sd_notify from the gateway and HQ, against a notify socket the test binds (no systemd).

What systemd would see: ``READY=1`` only once the gateway has a bundle in force (HQ:
once HTTP listens and the broker accepted it), ``WATCHDOG=1`` only from a responsive
event loop and (gateway) a scanner heard within its watchdog window, ``STOPPING=1`` on
SIGTERM. Both the socket kinds systemd uses are covered: a path and an abstract name.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest

from aislecast.kernel.broker import MosquittoProcess, free_port
from aislecast.kernel.notify import Notifier
from edge.scanner import AdvertCallback
from gateway.app import Gateway
from gateway.config import load_config
from tests.harness import STORE, stack, until

pytestmark = pytest.mark.timeout(90)

WATCHDOG_USEC = 200_000  # systemd's timeout 0.2 s: a ping every 0.1 s


class NotifySocket:
    """A bound ``AF_UNIX`` datagram socket, read by a thread (it keeps reading while
    the event loop under test is blocked); ``messages`` holds each datagram as a dict."""

    def __init__(self, address: str) -> None:
        self.address = address  # as NOTIFY_SOCKET spells it ('@' for abstract)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.05)
        self.messages: list[dict[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()

    def env(self, **more: str) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.address, **more}

    def index(self, key: str, value: str | None = None, start: int = 0) -> int | None:
        """Where the first datagram with ``key`` (= ``value``) is, from ``start``."""
        for i, m in enumerate(self.messages[start:], start):
            if key in m and (value is None or value in m[key]):
                return i
        return None

    def count(self, key: str, start: int = 0, stop: int | None = None) -> int:
        return sum(key in m for m in self.messages[start:stop])


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifySocket]:
    address = (str(tmp_path / "notify.sock") if request.param == "path"
               else f"@aislecast-test-{uuid.uuid4().hex}")
    s = NotifySocket(address)
    yield s
    s.close()


class Radio:
    """The scanner's counters as a real one reports them, with a switch to go silent (a
    dead adapter cannot be made here; the gateway only reads ``stats()``)."""

    name = "test-radio"

    def __init__(self, on_advert: AdvertCallback) -> None:
        self.silent = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        return None

    def stats(self) -> dict[str, float | int | str | None]:
        return {"adverts": 1, "restarts": 3 if self.silent else 0,
                "last_advert_age_s": 3600.0 if self.silent else 0.0}


# ---- the protocol ---------------------------------------------------------------------

async def test_outside_systemd_nothing_is_sent() -> None:
    async with Notifier({}) as n:
        assert not n.enabled and n.watchdog_s is None
        assert await n.send(READY=1) is False
        await n.watchdog(lambda: None, healthy_status=lambda: "x")  # returns: no watchdog
    assert n.stats.sent == 0


def test_watchdog_is_ours_only_when_systemd_says_so() -> None:
    sock = {"NOTIFY_SOCKET": "@x"}
    assert Notifier(sock | {"WATCHDOG_USEC": "4000000"}).watchdog_s == 4.0
    assert Notifier(sock | {"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}).watchdog_s == 4.0
    assert Notifier(sock | {"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}).watchdog_s is None
    assert Notifier(sock | {"WATCHDOG_USEC": "0"}).watchdog_s is None
    assert Notifier({"WATCHDOG_USEC": "4000000"}).watchdog_s is None  # no socket, no watchdog
    assert Notifier({"NOTIFY_SOCKET": "relative/path"}).enabled is False  # not sd_notify's


async def test_messages_arrive_as_systemd_reads_them(notify_socket: NotifySocket) -> None:
    async with Notifier(notify_socket.env()) as n:
        await n.ready("serving")
        await n.status("serving")  # unchanged: not sent again
        await n.status("busy")
        await n.stopping()
    await until(lambda: len(notify_socket.messages) == 3)
    assert notify_socket.messages == [{"READY": "1", "STATUS": "serving"}, {"STATUS": "busy"},
                                      {"STOPPING": "1", "STATUS": "stopping"}]
    assert n.stats.sent == 3


async def test_a_missing_socket_is_counted_not_raised(tmp_path: Path) -> None:
    async with Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}) as n:
        assert await n.send(READY=1) is False
    assert (n.stats.sent, n.stats.failed) == (0, 1)


async def test_a_socket_nobody_reads_never_holds_up_the_sender(tmp_path: Path) -> None:
    """A full queue (systemd gone, not reading) makes the sender give up, not wait: a
    STOPPING=1 must not delay a stop."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as deaf:
        deaf.bind(str(tmp_path / "deaf.sock"))
        async with Notifier({"NOTIFY_SOCKET": str(tmp_path / "deaf.sock")}) as n:
            for _ in range(10_000):  # the kernel queues a few hundred at most
                if not await n.send(WATCHDOG=1):
                    break
            assert n.stats.sent > 0 and n.stats.failed == 1


# ---- the gateway, in process ----------------------------------------------------------

async def test_gateway_ready_after_its_first_bundle_then_watchdog_follows_the_scanner(
    broker: MosquittoProcess, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    async with stack(broker.port, tmp_path, []) as st:
        radio: list[Radio] = []

        def make(cb: AdvertCallback) -> Radio:
            radio.append(Radio(cb))
            return radio[0]

        cfg = load_config(st.gateway_config() | {"scanner": {"backend": "sim", "silent_after_s": 5.0}})
        n = Notifier(notify_socket.env(WATCHDOG_USEC=str(WATCHDOG_USEC)))
        async with Gateway(cfg, make, notifier=n) as gw:
            await gw.link.wait_connected(10)
            # connected, pinging, and still no bundle: not ready
            await until(lambda: notify_socket.count("WATCHDOG") >= 3)
            assert notify_socket.index("READY") is None
            waiting = notify_socket.index("STATUS", "waiting for the first bundle")
            assert waiting is not None, notify_socket.messages
            await st.hq.service.publish_bundle(STORE)
            await until(lambda: notify_socket.index("READY") is not None)
            assert gw.parts.bundles.current is not None
            assert "running: bundle v" in notify_socket.messages[notify_socket.index("READY") or 0]["STATUS"]

            # the scanner goes silent past its window: pings stop, the status says why
            radio[0].silent = True
            await until(lambda: notify_socket.index("STATUS", "silent") is not None)
            silent_at = notify_socket.index("STATUS", "silent") or 0
            withheld = n.stats.watchdog_withheld
            await until(lambda: n.stats.watchdog_withheld >= withheld + 3)  # ticks judged, no ping
            assert "past its 5 s watchdog; 3 recoveries tried" in notify_socket.messages[silent_at]["STATUS"]
            radio[0].silent = False
            await until(lambda: notify_socket.index("STATUS", "running", silent_at) is not None)
            back = notify_socket.index("STATUS", "running", silent_at) or 0
            assert notify_socket.count("WATCHDOG", silent_at, back) == 0
            await until(lambda: notify_socket.count("WATCHDOG", back) >= 2)  # pings again
        stopping = notify_socket.index("STOPPING")
        assert stopping is not None and notify_socket.index("READY", start=stopping) is None


async def test_a_blocked_event_loop_sends_no_watchdog(
    broker: MosquittoProcess, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    async with stack(broker.port, tmp_path, []) as st:
        await st.hq.service.publish_bundle(STORE)
        cfg = load_config(st.gateway_config() | {"scanner": {"backend": "sim"}})
        n = Notifier(notify_socket.env(WATCHDOG_USEC=str(WATCHDOG_USEC)))
        async with Gateway(cfg, Radio, notifier=n):
            await until(lambda: n.stats.watchdog_pings >= 3)
            during: list[int] = []
            release = threading.Event()

            def watch() -> None:  # another thread: counts the pings while the loop is held
                before = n.stats.watchdog_pings
                time.sleep(10 * WATCHDOG_USEC / 1e6)  # ten ping intervals
                during.append(n.stats.watchdog_pings - before)
                release.set()

            threading.Thread(target=watch).start()
            release.wait(60)  # the loop is blocked here, as a hung handler would block it
            assert during == [0]
            held = n.stats.watchdog_pings
            await until(lambda: n.stats.watchdog_pings >= held + 2)  # the loop is back: pings too


async def test_a_gateway_with_a_persisted_bundle_is_ready_without_the_broker(
    broker: MosquittoProcess, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    async with stack(broker.port, tmp_path, []) as st:
        await st.hq.service.publish_bundle(STORE)
        cfg = load_config(st.gateway_config() | {"scanner": {"backend": "sim"}})
        async with Gateway(cfg, Radio) as gw:
            await gw.ready.wait()  # the bundle is in its database now
        offline = load_config(st.gateway_config() | {"scanner": {"backend": "sim"},
                                                      "broker": {"port": free_port()}})
    # HQ and its bundle are gone; the gateway's broker is a port nobody listens on
    n = Notifier(notify_socket.env(WATCHDOG_USEC=str(WATCHDOG_USEC)))
    async with Gateway(offline, Radio, notifier=n) as gw:
        await until(lambda: notify_socket.index("READY") is not None)
        ready = notify_socket.messages[notify_socket.index("READY") or 0]
        assert "broker not connected, events wait in the outbox" in ready["STATUS"]
        assert not gw.link.connected.is_set()
        await until(lambda: notify_socket.count("WATCHDOG") >= 2)  # alive, offline


# ---- the processes, as systemd runs them ----------------------------------------------

async def _spawn(tmp: Path, env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    err = (tmp / f"{args[0]}.err").open("wb")
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aislecast", *args, stdout=asyncio.subprocess.DEVNULL,
            stderr=err, env={**os.environ, **env}, cwd=tmp)
    finally:
        err.close()


async def _stop(proc: asyncio.subprocess.Process) -> int:
    proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(15):
        return await proc.wait()


async def test_gateway_run_under_notify_ready_then_stopping_on_sigterm(
    broker: MosquittoProcess, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    async with stack(broker.port, tmp_path, []) as st:
        await st.hq.service.publish_bundle(STORE)
        c = st.gateway_config("gw-n")
        (tmp_path / "hq.pub.pem").write_text(str(c["hq_public_key"]))
        config = tmp_path / "gateway.toml"
        config.write_text(
            f'gateway = "gw-n"\nstore = "{STORE}"\nhq_public_key = "{tmp_path / "hq.pub.pem"}"\n'
            f'data_dir = "{tmp_path / "gw-n"}"\n[broker]\nport = {broker.port}\n'
            '[scanner]\nbackend = "sim"\n')
        proc = await _spawn(tmp_path, notify_socket.env(WATCHDOG_USEC=str(WATCHDOG_USEC)),
                            "gateway", "run", "--config", str(config))
        try:
            await until(lambda: notify_socket.index("READY") is not None, timeout=30)
            await until(lambda: notify_socket.count("WATCHDOG") >= 2)
        finally:
            rc = await _stop(proc)
        err = (tmp_path / "gateway.err").read_text()
        assert rc == 0, err
        stopping = notify_socket.index("STOPPING")
        assert stopping is not None and stopping > (notify_socket.index("READY") or 0), err
        assert "Traceback" not in err


async def test_hq_serve_under_notify_ready_once_it_serves(
    broker: MosquittoProcess, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    port = free_port()
    proc = await _spawn(tmp_path, notify_socket.env(WATCHDOG_USEC=str(WATCHDOG_USEC)),
                        "hq", "serve", "--db", f"sqlite:///{tmp_path}/hq.sqlite",
                        "--key", str(tmp_path / "hq.pem"), "--http-port", str(port),
                        "--broker", f"127.0.0.1:{broker.port}")
    try:
        await until(lambda: notify_socket.index("READY") is not None, timeout=30)
        # READY means serving: the port answers at once
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        ready = notify_socket.messages[notify_socket.index("READY") or 0]
        assert f"serving http://127.0.0.1:{port}" in ready["STATUS"]
        await until(lambda: notify_socket.count("WATCHDOG") >= 2)
    finally:
        rc = await _stop(proc)
    err = (tmp_path / "hq.err").read_text()
    assert rc == 0, err
    assert notify_socket.index("STOPPING") is not None, err
