"""Broker credentials from HQ: the $7$ encoding, the files, and live reloads on a real broker."""

from __future__ import annotations

import asyncio
import base64
import shutil
import stat
import subprocess
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aislecast.kernel import topics
from aislecast.kernel.acl import GatewayAccount, acl_rules, hq_username
from aislecast.kernel.broker import AclRule, BrokerConfig, MosquittoProcess, free_port
from aislecast.kernel.mqtt import MqttLink, MqttSettings
from hq.broker_auth import (
    BrokerAuthFiles,
    CredentialError,
    hash_password,
    new_password,
    reload_broker,
    try_login,
    verify_password,
    wait_for_login,
)
from tests.harness import until

_KICK_S = 2.0  # the goal: a removed user's session is gone within 2 s


def _mosquitto_passwd_line(tmp: Path, user: str, password: str) -> str:
    binary = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    f = tmp / "pw"
    f.touch()
    subprocess.run([binary, "-b", str(f), user, password], check=True, capture_output=True)
    return f.read_text().strip()


def test_hashes_match_mosquitto_passwd_byte_for_byte(tmp_path: Path) -> None:
    line = _mosquitto_passwd_line(tmp_path, "alice", "s3cret pw")
    user, _, encoded = line.partition(":")
    _, seven, iterations, salt, _digest = encoded.split("$")
    assert (user, seven) == ("alice", "7")
    mine = hash_password("s3cret pw", iterations=int(iterations), salt=base64.b64decode(salt))
    assert mine == encoded
    assert verify_password("s3cret pw", encoded)
    assert not verify_password("s3cret pX", encoded)
    # our own salts are mosquitto_passwd's size: 12 bytes, 16 base64 characters
    ours = hash_password("x")
    assert len(ours.split("$")[3]) == 16 and ours.startswith("$7$101$")


def test_new_passwords_are_long_and_random() -> None:
    pws = {new_password() for _ in range(100)}
    assert len(pws) == 100
    assert all(len(p) >= 32 for p in pws)


def test_files_are_private_and_ordered(tmp_path: Path) -> None:
    files = BrokerAuthFiles(tmp_path / "auth")
    gw = GatewayAccount("s1", "g1")
    files.write({"bbb": hash_password("b"), "aaa": hash_password("a")}, acl_rules([gw], [hq_username()]))
    for p in (files.password_path, files.acl_path):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert [ln.split(":")[0] for ln in files.password_path.read_text().splitlines()] == ["aaa", "bbb"]
    acl = files.acl_path.read_text().splitlines()
    first_user = next(i for i, ln in enumerate(acl) if ln.startswith("user "))
    assert all(ln.startswith("pattern ") for ln in acl[:first_user])
    assert "pattern read px/v1/shoppers/%u/offers" in acl
    assert sorted(p.name for p in files.directory.iterdir()) == ["acl", "passwords"]


@pytest.mark.parametrize(("users", "rules", "field"), [
    ({"a/b": "$7$101$AAAA$BBBB"}, [], "username"),
    ({"a+": "$7$101$AAAA$BBBB"}, [], "username"),
    ({"ok": "plaintext"}, [], "hash"),
    ({}, [AclRule("read", "x", user="evil:line")], "username"),
])
def test_bad_entries_are_refused_before_anything_is_written(
        tmp_path: Path, users: dict[str, str], rules: list[AclRule], field: str) -> None:
    files = BrokerAuthFiles(tmp_path)
    with pytest.raises(CredentialError) as err:
        files.write(users, rules)
    assert err.value.field == field
    assert not files.password_path.exists() and not files.acl_path.exists()


@pytest.fixture
async def registry_broker(tmp_path: Path) -> AsyncIterator[tuple[MosquittoProcess, BrokerAuthFiles]]:
    files = BrokerAuthFiles(tmp_path / "auth")
    files.write({"inboxa": hash_password("pa"), "inboxb": hash_password("pb")}, acl_rules([], []))
    cfg = BrokerConfig(directory=tmp_path / "b", port=free_port(),
                       password_file=files.password_path, acl_file=files.acl_path)
    async with MosquittoProcess(cfg) as proc:
        yield proc, files


def _link(port: int, user: str, pw: str, **kw: object) -> MqttLink:
    return MqttLink(MqttSettings(port=port, username=user, password=pw), client_id=user,
                    clean_start=True, **kw)  # type: ignore[arg-type]


async def test_our_hashes_log_in_and_everything_else_is_refused(
        registry_broker: tuple[MosquittoProcess, BrokerAuthFiles]) -> None:
    proc, _ = registry_broker
    assert await try_login("127.0.0.1", proc.port, "inboxa", "pa")  # positive witness
    assert not await try_login("127.0.0.1", proc.port, "inboxa", "wrong")
    assert not await try_login("127.0.0.1", proc.port, "nobody", "pa")
    assert not await try_login("127.0.0.1", proc.port, "", "")  # anonymous: allow_anonymous false


async def test_sighup_adds_and_removes_users_live(
        registry_broker: tuple[MosquittoProcess, BrokerAuthFiles]) -> None:
    proc, files = registry_broker
    assert proc.pid is not None
    got: list[str] = []

    async def on(msg) -> None:  # type: ignore[no-untyped-def]
        got.append(msg.topic.value)

    async with _link(proc.port, "inboxa", "pa") as a, \
            _link(proc.port, "inboxb", "pb", subscriptions=[(topics.offers("inboxb"), 1)], handler=on) as b:
        await a.wait_connected(10)
        await b.wait_connected(10)
        # inboxa removed, inboxc added; inboxb untouched
        files.write({"inboxb": hash_password("pb"), "inboxc": hash_password("pc")}, acl_rules([], []))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        reload_broker(proc.pid)
        await until(lambda: a.stats.disconnects >= 1, timeout=_KICK_S)
        kicked_after = loop.time() - t0
        assert await wait_for_login("127.0.0.1", proc.port, "inboxc", "pc", timeout=_KICK_S) < _KICK_S
        # the removed user stays out: its link retries and is refused
        await until(lambda: "Not authorized" in a.stats.last_error, timeout=10)
        assert not a.connected.is_set()
        # the untouched user was never disconnected and still receives (needs a writer
        # allowed to its inbox: a fresh HQ user added the same way)
        files.write({"inboxb": hash_password("pb"), "hq.1": hash_password("hq")},
                    acl_rules([], [hq_username()]))
        reload_broker(proc.pid)
        await wait_for_login("127.0.0.1", proc.port, "hq.1", "hq", timeout=_KICK_S)
        async with _link(proc.port, "hq.1", "hq") as hq:
            await hq.publish(topics.offers("inboxb"), b"{}", qos=1)
            await until(lambda: got == [topics.offers("inboxb")], timeout=10)
        assert b.stats.disconnects == 0 and b.stats.connects == 1
    print(f"removed user kicked {kicked_after * 1000:.0f} ms after SIGHUP")


async def test_wait_for_login_waits_for_a_broker_that_is_still_binding(tmp_path: Path) -> None:
    """A broker whose process is up but whose listener is not bound yet refuses the TCP
    connection: that is "not yet" (CI once saw the demo's broker in that state), and
    the login that follows once it listens is what returns."""
    files = BrokerAuthFiles(tmp_path / "auth")
    files.write({"inboxa": hash_password("pa")}, acl_rules([], []))
    port = free_port()
    waiting = asyncio.create_task(wait_for_login("127.0.0.1", port, "inboxa", "pa", timeout=30))
    await asyncio.sleep(0.2)
    assert not waiting.done()  # refused connections so far, and still polling
    cfg = BrokerConfig(directory=tmp_path / "b", port=port,
                       password_file=files.password_path, acl_file=files.acl_path)
    async with MosquittoProcess(cfg):
        took = await waiting
    assert took >= 0.2


def test_render_lock_serialises_two_renderers(tmp_path: Path) -> None:
    """HQ and a shell command rendering at once: the second waits for the first's
    write, so it reads a registry that already holds the first one's change."""
    files = BrokerAuthFiles(tmp_path / "auth")
    order: list[str] = []
    inside = threading.Event()
    release = threading.Event()

    def first() -> None:
        with files.render_lock():
            order.append("first in")
            inside.set()
            release.wait(10)
            order.append("first out")

    def second() -> None:
        with files.render_lock():
            order.append("second in")

    a = threading.Thread(target=first)
    a.start()
    assert inside.wait(10)
    b = threading.Thread(target=second)
    b.start()
    b.join(0.3)
    assert b.is_alive() and order == ["first in"]  # blocked while the first holds it
    release.set()
    a.join(10)
    b.join(10)
    assert order == ["first in", "first out", "second in"]
    assert sorted(p.name for p in files.directory.iterdir()) == []  # the lock leaves no file
