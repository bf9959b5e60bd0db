"""``aislecast till redeem|purchase`` against a real HQ: answers, exit codes, and one-line
errors (no token, a refused code, a malformed basket line, HQ unreachable)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from aislecast.apps.cli import main
from aislecast.apps.cmd_till import EXIT_REFUSED
from aislecast.apps.till_client import TILL_TOKEN_ENV
from aislecast.kernel.broker import MosquittoProcess, free_port
from aislecast.kernel.redeem import mint_code
from tests.harness import STORE, token_for
from tests.test_till import _hq, _key


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


async def test_till_cli_redeem_and_purchase(broker: MosquittoProcess, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    async with _hq(broker, tmp_path) as hq:
        base = ["--hq", f"http://127.0.0.1:{hq.http_port}"]
        code = mint_code(_key(hq, STORE), store=STORE, campaign="c1", variant="a",
                         serial=b"\x11" * 5, expires_at=time.time() + 600)

        monkeypatch.delenv(TILL_TOKEN_ENV, raising=False)
        assert await asyncio.to_thread(main, ["till", "redeem", code, "--txn", "t1", *base]) == 1
        assert TILL_TOKEN_ENV in _one_line(capsys.readouterr().err)

        monkeypatch.setenv(TILL_TOKEN_ENV, token_for(hq.db, "till", stores=[STORE]))
        assert await asyncio.to_thread(main, ["till", "redeem", code, "--txn", "t1", *base]) == 0
        assert capsys.readouterr().out.startswith("redeemed campaign=c1 variant=a")
        assert await asyncio.to_thread(main, ["till", "redeem", code, "--txn", "t1", "--json",
                                              *base]) == 0
        assert json.loads(capsys.readouterr().out)["replay"] is True
        assert await asyncio.to_thread(main, ["till", "redeem", code, "--txn", "t2",
                                              *base]) == EXIT_REFUSED
        assert _one_line(capsys.readouterr().err).startswith(
            "aislecast till: refused (used): code: already redeemed at")
        assert await asyncio.to_thread(main, ["till", "redeem", "AAAA-BBBB", "--txn", "t3",
                                              *base]) == EXIT_REFUSED
        assert "refused (forged)" in _one_line(capsys.readouterr().err)

        assert await asyncio.to_thread(main, [
            "till", "purchase", "--txn", "b1", "--member", "MNOBODY", "--line",
            "milk-1l:dairy:2:258", "--line", ":bakery:1:199", *base]) == 0
        assert capsys.readouterr().out.strip() == "stored 2 of 2 lines (member unknown) txn=b1"
        assert await asyncio.to_thread(main, ["till", "purchase", "--txn", "b2", "--line",
                                              "milk:dairy:two:258", *base]) == 1
        assert "--line" in _one_line(capsys.readouterr().err)
        assert hq.db.query("SELECT count(*) FROM purchases WHERE inbox IS NULL") == [(2,)]

    dead = ["--hq", f"http://127.0.0.1:{free_port()}"]
    assert await asyncio.to_thread(main, ["till", "redeem", code, "--txn", "t1", *dead]) == 1
    assert "cannot reach HQ" in _one_line(capsys.readouterr().err)
