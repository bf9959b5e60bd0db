"""The till simulator (aislecast/apps/till_sim.py) against a real HQ: a treated shopper's
code is redeemed once however many checkouts follow, and every shopper, the holdout one
included, buys through the purchase API, so HQ has purchases of both arms."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from aislecast.apps.till_client import TillClient
from aislecast.apps.till_sim import TillSim, TillSimOptions
from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.redeem import mint_code, offer_id_for
from aislecast.kernel.schema import SCHEMA_VERSION, Offer
from hq.accounts import Accounts
from hq.till import member_of
from tests.harness import STORE
from tests.test_till import _hq, _key


@dataclass
class _Shopper:
    inbox: str
    offers: dict[str, Offer] = field(default_factory=dict)


async def test_sim_redeems_once_and_both_arms_buy(broker: MosquittoProcess, tmp_path: Path) -> None:
    async with _hq(broker, tmp_path) as hq:
        treated, holdout = (hq.service.enroll(["offers"], [STORE]).inbox for _ in range(2))
        serial = b"\x42" * 5
        now = time.time()
        code = mint_code(_key(hq, STORE), store=STORE, campaign="c1", variant="a",
                         serial=serial, expires_at=now + 600)
        oid = offer_id_for(serial, "1" * 22)
        offer = Offer(v=SCHEMA_VERSION, id=oid, campaign="c1", variant="a", store=STORE,
                      inbox=treated, issued_at=now, expires_at=now + 600, title="A",
                      redeem_code=code)
        shoppers = [_Shopper(treated, {oid: offer}), _Shopper(holdout)]
        members = {s.inbox: member_of(hq.db, s.inbox) for s in shoppers}
        tid, secret = Accounts(hq.db).issue_token("till", stores=[STORE])
        till = TillClient(f"http://127.0.0.1:{hq.http_port}", secret)
        sim = TillSim(till, shoppers, campaigns=lambda: ["c1"], members=members,
                      rng=random.Random(3),
                      options=TillSimOptions(base_rate=0.5, uplift=0.5, redeem_p=1.0))
        for _ in range(20):
            for s in shoppers:
                await sim.checkout(s)
        assert sim.stats.redeemed == 1 and sim.stats.refused == {}
        assert hq.db.query("SELECT code, till FROM redemptions") == [(code.replace("-", ""),
                                                                      f"token:{tid}")]
        bought = dict(hq.db.query("SELECT inbox, count(*) FROM purchases WHERE category = 'c1'"
                                  " GROUP BY inbox"))
        # treated at base + uplift = 1.0: every visit; holdout at the base rate only
        assert bought[treated] == 20
        assert 0 < bought[holdout] < 20
        staples = dict(hq.db.query("SELECT inbox, count(*) FROM purchases WHERE category ="
                                   " 'staples' GROUP BY inbox"))
        assert staples == {treated: 20, holdout: 20}
        assert sim.stats.promoted["treated"] == 20 and sim.stats.promoted["control"] == bought[holdout]

