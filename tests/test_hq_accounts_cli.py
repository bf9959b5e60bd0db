"""``aislecast hq init`` makes the first admin and the CA; ``hq users`` and ``hq tokens``
manage accounts on the configured database, and the tokens they print work on HQ."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from aislecast.apps.cli import main
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from hq.accounts import TOKEN_CACHE_S, Accounts
from hq.api import create_app
from hq.audit import AuditLog
from hq.db import HqDb
from hq.ingest import Ingest
from hq.service import HqService


async def _cli(argv: list[str]) -> int:
    """The CLI, off the event loop (it is a blocking program; the test is async for HQ's app)."""
    return await asyncio.to_thread(main, argv)


def _out(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().out


async def test_init_users_and_tokens_from_the_shell(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    secret = tmp_path / "admin.secret"
    secret.write_text("correct horse battery staple\n")
    assert await _cli(["hq", "init", "--admin", "ops", "--admin-password-file", str(secret)]) == 0
    out = _out(capsys)
    assert "added admin 'ops'" in out and "shown once" not in out  # the given password
    assert (tmp_path / "hq-data" / "ca" / "ca.crt").exists()
    assert "HQ's broker login hq.1" in out
    hq_login = (tmp_path / "hq-data" / "broker-hq.login").read_text()
    assert await _cli(["hq", "init"]) == 0  # again: everything kept
    assert "exists" in _out(capsys)
    assert (tmp_path / "hq-data" / "broker-hq.login").read_text() == hq_login
    cfg = ["--config", "hq.toml"]
    assert await _cli(["hq", "users", "add", "lee", "--role", "store_staff", "--store", "s1", *cfg]) == 0
    assert "password (shown once): " in _out(capsys)
    assert await _cli(["hq", "users", "add", "kim", "--role", "store_staff", *cfg]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--store: a store_staff needs at least one store" in err
    assert await _cli(["hq", "users", "list", "--json", *cfg]) == 0
    users = {u["name"]: u for u in json.loads(_out(capsys))}
    assert users["lee"]["stores"] == ["s1"] and users["ops"]["role"] == "admin"
    assert await _cli(["hq", "tokens", "issue", "--kind", "wallet", "--json", *cfg]) == 0
    issued = json.loads(_out(capsys))

    db = HqDb(f"sqlite:///{tmp_path}/hq-data/hq.sqlite")
    assert Accounts(db).check_password("ops", "correct horse battery staple") is not None
    app = create_app(HqService(db, Signer(load_or_create_signing_key(tmp_path / "k.pem"))), Ingest(db))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hq") as c:
        auth = {"Authorization": f"Bearer {issued['token']}"}
        assert (await c.post("/api/shoppers", json={}, headers=auth)).status_code == 201
        assert await _cli(["hq", "tokens", "revoke", issued["id"], "--db", db.url]) == 0
        # another connection revoked it: the running HQ honours it within TOKEN_CACHE_S
        # (tests/test_authz.py times that on a fake clock)
        async with asyncio.timeout(20):
            while (await c.get("/api/me", headers=auth)).status_code != 401:
                await asyncio.sleep(TOKEN_CACHE_S / 4)
        assert (await c.post("/api/shoppers", json={}, headers=auth)).status_code == 401
    assert await _cli(["hq", "users", "disable", "lee", *cfg]) == 0
    assert Accounts(db).check_password("lee", "whatever-it-was") is None
    actions = [e.action for e in AuditLog(db).entries()]
    assert actions[:2] == ["user.add", "user.add"] and "token.revoke" in actions
    assert actions[-1] == "user.disable"
    assert await _cli(["hq", "tokens", "revoke", issued["id"], *cfg]) == 2  # not live any more
