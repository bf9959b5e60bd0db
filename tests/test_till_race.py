"""Consume once: two tills (on two HQ workers' database connections) redeeming one code
at the same moment get exactly one success and one ``used``, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aislecast.kernel.campaign import Campaign, Creative, Trigger
from aislecast.kernel.redeem import mint_code
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from hq.db import HqDb
from hq.redeem_keys import RedeemKeys
from hq.service import HqService
from hq.till import Redeemed, TillDesk, TillRefused
from tests.conftest_pg import BACKENDS, hq_url


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with hq_url(request.param, tmp_path) as url:
        yield url


def test_two_workers_racing_for_one_code_redeem_it_once(db_url: str, tmp_path: Path) -> None:
    keys = RedeemKeys.load(tmp_path / "hq.pem")
    first, second = HqDb(db_url), HqDb(db_url)
    try:
        HqService(first, Signer(load_or_create_signing_key(tmp_path / "hq.pem"))).upsert_campaign(
            Campaign(id="c1", name="c1", stores=["s1"], trigger=Trigger(kind="enter"),
                     creatives=[Creative(id="a", title="A")]))
        desks = [TillDesk(first, lambda: keys), TillDesk(second, lambda: keys)]
        codes = [mint_code(keys.of("s1"), store="s1", campaign="c1", variant="a",
                           serial=i.to_bytes(5, "big"), expires_at=time.time() + 600)
                 for i in range(20)]
        outcomes: list[list[object]] = [[], []]
        gate = threading.Barrier(2)

        def run(n: int) -> None:
            for code in codes:
                gate.wait()
                try:
                    outcomes[n].append(desks[n].redeem(code, store="s1", till=f"till-{n}",
                                                       txn=f"t-{n}")[0])
                except TillRefused as exc:
                    outcomes[n].append(exc.reason)

        threads = [threading.Thread(target=run, args=(n,)) for n in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for a, b in zip(*outcomes, strict=True):
            wins = [o for o in (a, b) if isinstance(o, Redeemed)]
            assert len(wins) == 1 and "used" in (a, b), (a, b)
        assert first.query("SELECT count(*) FROM redemptions") == [(20,)]
        assert sum(d.stats.redeemed for d in desks) == 20
        assert sum(d.stats.refused.get("used", 0) for d in desks) == 20
    finally:
        first.close()
        second.close()
