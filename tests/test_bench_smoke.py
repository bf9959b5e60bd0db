"""Every benchmark still runs: `aislecast bench --quick --json` end to end, numbers sane.

Smoke only: no speed is asserted (shared, noisy machines); the numbers come from
`make bench`.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from benchmarks._harness import REGISTRY, _load

EXPECTED = {
    "console",
    "creds",
    "decide",
    "decode",
    "decode_pipe",
    "enrol",
    "enrol_delta",
    "fanout",
    "fanout_bundles",
    "fleet",
    "gateway_rss",
    "hotpath",
    "hq_workers",
    "ingest",
    "kill",
    "nfc",
    "rollups",
    "scope",
    "soak",
    "stats",
    "tap",
    "till",
    "tls",
    "wallet",
}


@pytest.mark.slow
@pytest.mark.timeout(600)  # the run's own bound below: 35 s idle, 120 s+ at load 15
def test_every_benchmark_runs_quick_and_reports_numbers() -> None:
    _load()
    assert set(REGISTRY) >= EXPECTED
    out = subprocess.run([sys.executable, "-m", "aislecast", "bench", "--quick", "--json"],
                         capture_output=True, text=True, timeout=600, check=True)
    rows = json.loads(out.stdout)["results"]
    seen = {r["benchmark"] for r in rows}
    assert seen >= EXPECTED
    for r in rows:
        assert isinstance(r["value"], int | float)
        assert not math.isnan(r["value"]), r
    # peers sit beside ours in the same run, with a ratio
    peers = {(r["benchmark"], r["subject"]) for r in rows if "ratio" in r}
    assert ("decode", "beacontools") in peers
    assert ("decode", "theengs") in peers
