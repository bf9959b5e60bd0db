"""Bounds the soak (issue 14) found or relies on: the gateway's per-shopper lead boosts are
forgotten a day after the shopper's last dwell, and the soak's gateway process computes no
AES for its simulated phones (their tokens come precomputed in the plan), so its RSS is the
gateway's and not ``cryptography``'s."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from aislecast.kernel.const import TOKEN_ROTATION_K
from aislecast.kernel.tokens import eid_for, new_identity_key
from benchmarks.bench_soak import visit_tokens
from benchmarks.soak_gateway import PlannedTokens
from gateway.ranking import BOOST_KEEP_S, Ranker


def test_lead_boosts_of_shoppers_who_left_are_forgotten_after_the_keep_window(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_780_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    r = Ranker()
    for i in range(1000):
        r.observe_dwell(f"inbox-{i}", 240.0)
    assert r.boosted() == 1000  # witness: every shopper's dwell was taken
    lead = r.profile("inbox-7")
    assert lead is not None and lead.lead > 0.5
    now[0] += BOOST_KEEP_S - 1  # within the window, a returning shopper keeps theirs
    r.observe_dwell("inbox-7", 30.0)
    assert r.boosted() == 1000
    now[0] += 601.0  # the others' last dwell is older than the window, and a prune is due
    r.observe_dwell("newcomer", 60.0)
    assert r.boosted() == 2  # back to the shoppers of the last day
    assert r.profile("inbox-8") is None and r.profile("inbox-7") is not None


def test_planned_tokens_are_the_phones_eid_tokens_through_the_visit() -> None:
    key, arrive = new_identity_key(), 1_780_000_123.0
    path = [("entrance", 90.0), ("dairy", 400.0), ("checkout", 120.0)]
    tokens = PlannedTokens("inbox-1", visit_tokens(key, arrive, path))
    t = arrive - 600
    while t < arrive + 610 + 1200:
        assert tokens(t) == eid_for(key, t, TOKEN_ROTATION_K)
        t += 37.0
    with pytest.raises(LookupError, match="no token for shopper inbox-1"):
        tokens(arrive + 86_400)


def _loaded_by_soak_gateway(refuse: bool) -> list[str]:
    code = ("import sys, benchmarks.simclock\n"
            "from aislecast.apps.cli import refuse_unused\n"
            + ("refuse_unused('gateway')\n" if refuse else "")
            + "import benchmarks.soak_gateway\n"
            "print(*sorted({m.split('.')[0] for m, v in sys.modules.items() if v is not None}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_soak_gateway_process_imports_the_gateway_but_not_cryptography_or_rich() -> None:
    """As simclock starts it (refusing what `aislecast gateway run` refuses): the gateway
    and its verifier are loaded, the phones' AES and structlog's rich are not."""
    mods = _loaded_by_soak_gateway(refuse=True)
    assert {"gateway", "nacl", "structlog"} <= set(mods)
    assert not {"cryptography", "rich", "greenlet"} & set(mods)
    if "rich" in _loaded_by_soak_gateway(refuse=False):  # witness: installed here, so refused
        assert "rich" not in mods
