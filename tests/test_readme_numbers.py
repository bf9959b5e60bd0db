"""README.md's benchmark table is rendered from docs/bench/last-run.json and must not drift."""

from __future__ import annotations

import difflib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("readme_numbers", ROOT / "scripts" / "readme_numbers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(bench: str, subject: str, metric: str, value: float, unit: str, **kw: Any) -> dict[str, Any]:
    return {"benchmark": bench, "subject": subject, "metric": metric, "value": value, "unit": unit,
            "better": "higher", "extra": {}} | kw


MACHINE = {"os": "Linux 6.1", "arch": "x86_64", "cpus": 2, "cpu": "Test CPU", "python": "3.11.2"}


def test_readme_table_matches_the_snapshot() -> None:
    rn = _script()
    snapshot = json.loads(rn.SNAPSHOT.read_text())
    assert snapshot["results"], "docs/bench/last-run.json holds no results"
    current = rn.README.read_text()
    expected = rn.replace_block(current, rn.render(snapshot))
    if current != expected:
        diff = "".join(difflib.unified_diff(current.splitlines(keepends=True),
                                            expected.splitlines(keepends=True), "README.md",
                                            "from docs/bench/last-run.json", n=0))
        raise AssertionError(f"README.md's numbers differ from docs/bench/last-run.json; run\n\n"
                             f"    {rn.COMMAND}\n\nand commit the result. Difference:\n{diff[:4000]}")
    # every benchmark in the snapshot has its row, with its run's date
    for bench, run in snapshot["runs"].items():
        label = rn._LABELS.get(bench, bench)
        assert any(line.startswith(f"| {label} |") and run["date"] in line
                   for line in current.splitlines()), f"no README row for {bench}"


def test_render_puts_peers_beside_ours_as_ratios() -> None:
    rn = _script()
    snap = rn.merge({}, {"results": [
        _row("decode", "aislecast", "adverts_per_s", 1_420_000.4, "adverts/s"),
        _row("decode", "beacontools", "adverts_per_s", 16_200, "adverts/s", ratio=87.65),
        _row("fanout", "aislecast", "all have it", 509.2, "ms", better="lower"),
        _row("fanout", "mosquitto", "broker RSS", 16.0, "MiB", better="lower"),
    ]}, quick=True, date="2026-12-01", machine=MACHINE)
    block = rn.render(snap)
    lines = block.splitlines()
    assert lines[0] == rn.BEGIN and lines[-1] == rn.END
    assert "2 CPUs (Test CPU), Linux 6.1 x86_64, Python 3.11.2" in block
    decode = next(line for line in lines if line.startswith("| decode BLE adverts"))
    assert "adverts_per_s 1,420,000 adverts/s" in decode
    assert "beacontools 16,200 adverts/s (**87.7x**)" in decode
    assert "*quick*, 2026-12-01" in decode
    fanout = next(line for line in lines if line.startswith("| fan-out"))
    assert "all have it 509 ms" in fanout and "mosquitto broker RSS 16 MiB" in fanout


def test_a_partial_run_replaces_only_its_benchmarks() -> None:
    rn = _script()
    first = rn.merge({}, {"results": [_row("decode", "aislecast", "a", 1, "x"),
                                      _row("e2e", "aislecast", "b", 2, "ms")]},
                     quick=True, date="2026-12-01", machine=MACHINE)
    second = rn.merge(first, {"results": [_row("e2e", "aislecast", "b", 3, "ms")]},
                      quick=False, date="2026-12-02", machine=MACHINE)
    assert [(r["benchmark"], r["value"]) for r in second["results"]] == [("decode", 1), ("e2e", 3)]
    assert second["runs"]["decode"]["date"] == "2026-12-01" and second["runs"]["decode"]["quick"]
    assert second["runs"]["e2e"] == {"date": "2026-12-02", "quick": False, "machine": MACHINE}
    block = rn.render(second)
    assert "Rows marked *quick* (decode)" in block
    with pytest.raises(ValueError, match="no results"):
        rn.merge(first, {"results": []}, quick=False, date="2026-12-02", machine=MACHINE)


def test_check_fails_on_a_drifted_number(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok = subprocess.run([sys.executable, "scripts/readme_numbers.py", "--check"], cwd=ROOT,
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    rn = _script()
    snap = json.loads(rn.SNAPSHOT.read_text())
    snap["results"][0]["value"] = float(snap["results"][0]["value"]) * 3 + 1
    rn.SNAPSHOT = tmp_path / "last-run.json"
    rn.SNAPSHOT.write_text(json.dumps(snap))
    rn.README = tmp_path / "README.md"
    rn.README.write_text((ROOT / "README.md").read_text())
    assert rn.main(["--check"]) == 1
    assert f"run {rn.COMMAND}" in capsys.readouterr().err
    assert rn.main([]) == 0  # re-render
    assert rn.main(["--check"]) == 0


def test_snapshot_refuses_what_is_not_bench_output(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    rn = _script()
    rn.SNAPSHOT = tmp_path / "last-run.json"
    assert rn.main(["snapshot", str(tmp_path / "absent.json")]) == 2
    assert "run `make bench` first" in capsys.readouterr().err
    (tmp_path / "bench.json").write_text('{"results": [{"value": 1}]}')
    assert rn.main(["snapshot", str(tmp_path / "bench.json")]) == 2
    assert "is not `aislecast bench --json` output" in capsys.readouterr().err
    assert not rn.SNAPSHOT.exists()
    run = {"results": [_row("decide", "aislecast", "p50", 29, "us")]}
    (tmp_path / "bench.json").write_text(json.dumps(run))
    assert rn.main(["snapshot", str(tmp_path / "bench.json"), "--quick"]) == 0
    written = json.loads(rn.SNAPSHOT.read_text())
    assert written["runs"]["decide"]["quick"] is True and written["results"][0]["value"] == 29
