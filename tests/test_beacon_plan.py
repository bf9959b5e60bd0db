"""Floor plan -> beacon placement plan -> check against what the gateways hear."""

from __future__ import annotations

import csv
import io
import json
import math
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from aislecast.apps.cli import main
from aislecast.kernel.errors import ConfigError
from firmware_config.check import Heard, check_plan, format_report, parse_heard
from firmware_config.floorplan import FloorPlan, load_floorplan, parse_floorplan
from firmware_config.plan import (
    ADV_INTERVALS_MS,
    TX_LEVELS_DBM,
    Plan,
    load_plan,
    make_plan,
    plan_to_csv,
    plan_to_json,
    predicted_rssi,
    store_uuid,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "store-floorplan.json"
NOW = 1_740_000_000.0

TOML = """
[store]
id = "s7"
number = 7
width_m = 20
depth_m = 10

[[zones]]
id = "entrance"
kind = "entrance"
x_m = 0
y_m = 0
width_m = 4
depth_m = 3

[[zones]]
id = "big-aisle"
kind = "aisle"
x_m = 5
y_m = 0
width_m = 15
depth_m = 10

[radio]
path_loss_exponent = 3.0
"""


def _plan_dict(**zone: Any) -> dict[str, Any]:
    base = {"id": "a1", "kind": "aisle", "x_m": 0, "y_m": 0, "width_m": 2, "depth_m": 10}
    return {
        "store": {"id": "s1", "number": 1, "width_m": 30, "depth_m": 20},
        "zones": [base | zone],
    }


@pytest.fixture(scope="module")
def floorplan() -> FloorPlan:
    return load_floorplan(EXAMPLE)


@pytest.fixture(scope="module")
def plan(floorplan: FloorPlan) -> Plan:
    return make_plan(floorplan)


def test_example_floorplan_is_a_realistic_store(floorplan: FloorPlan) -> None:
    kinds = [z.kind for z in floorplan.zones]
    assert kinds.count("entrance") == 1
    assert kinds.count("checkout") == 1
    assert 4 <= kinds.count("aisle") <= 6


def test_toml_floorplan(tmp_path: Path) -> None:
    (tmp_path / "store.toml").write_text(TOML, encoding="utf-8")
    fp = load_floorplan(tmp_path / "store.toml")
    assert fp.radio.path_loss_exponent == 3.0
    assert fp.radio.measured_power_dbm == -59  # default kept
    assert [z.id for z in fp.zones] == ["entrance", "big-aisle"]


@pytest.mark.parametrize(
    ("zone", "field", "hint"),
    [
        ({"width_m": -2}, "zones[0].width_m", "metres"),
        ({"width_m": "2m"}, "zones[0].width_m", "metres"),
        ({"kind": "isle"}, "zones[0].kind", "aisle"),
        ({"id": "a b"}, "zones[0].id", "letters"),
        ({"colour": "red"}, "zones[0].colour", "spelling"),
        ({"x_m": 29}, "zones[0].width_m", "store.width_m"),
        ({"y_m": 15}, "zones[0].depth_m", "store.depth_m"),
    ],
)
def test_floorplan_errors_name_field_and_fix(zone: dict[str, Any], field: str, hint: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_floorplan(json.dumps(_plan_dict(**zone)))
    assert info.value.field == field
    assert hint in (info.value.hint or "")


def test_floorplan_missing_and_broken() -> None:
    data = _plan_dict()
    del data["zones"][0]["depth_m"]
    with pytest.raises(ConfigError) as info:
        parse_floorplan(json.dumps(data))
    assert info.value.field == "zones[0].depth_m"
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_floorplan("{")
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_floorplan("[store", fmt="toml")
    data = _plan_dict()
    data["zones"].append(dict(data["zones"][0]))
    with pytest.raises(ConfigError, match="used twice"):
        parse_floorplan(json.dumps(data))
    data = _plan_dict()
    data["receivers"] = [{"id": "gw", "zone": "nowhere", "x_m": 1, "y_m": 1}]
    with pytest.raises(ConfigError) as info:
        parse_floorplan(json.dumps(data))
    assert info.value.field == "receivers[0].zone"


def test_every_beacon_sits_inside_its_zone(floorplan: FloorPlan, plan: Plan) -> None:
    zones = {z.id: z for z in floorplan.zones}
    for b in plan.beacons:
        z = zones[b.zone]
        assert z.x_m <= b.x_m <= z.x_m + z.width_m
        assert z.y_m <= b.y_m <= z.y_m + z.depth_m
    for pz in plan.zones:
        assert pz.beacons == sum(b.zone == pz.id for b in plan.beacons)
        # About one beacon per area_per_beacon_m2, never fewer than one.
        assert pz.beacons >= max(1, math.floor(pz.area_m2 / floorplan.radio.area_per_beacon_m2))


def test_radio_settings_follow_the_model(floorplan: FloorPlan, plan: Plan) -> None:
    radio = floorplan.radio
    for b in plan.beacons:
        assert b.tx_power_dbm in TX_LEVELS_DBM
        assert b.interval_ms in ADV_INTERVALS_MS
        assert b.measured_power_dbm == radio.measured_power_dbm + b.tx_power_dbm
        assert b.eddystone_tx_power_dbm == b.measured_power_dbm + 41
        # The chosen tx power reaches the edge, and the next level down would not.
        edge = predicted_rssi(radio, b.measured_power_dbm, b.coverage_radius_m)
        assert edge >= radio.edge_rssi_dbm - 0.1
        i = TX_LEVELS_DBM.index(b.tx_power_dbm)
        if i > 0:
            lower = radio.measured_power_dbm + TX_LEVELS_DBM[i - 1]
            assert predicted_rssi(radio, lower, b.coverage_radius_m) < radio.edge_rssi_dbm


def test_bigger_cells_get_more_power_and_lower_path_loss_less() -> None:
    small = make_plan(parse_floorplan(json.dumps(_plan_dict())))
    sparse = _plan_dict(width_m=12, depth_m=12)
    sparse["radio"] = {"area_per_beacon_m2": 144}
    big = make_plan(parse_floorplan(json.dumps(sparse)))
    assert big.beacons[0].tx_power_dbm > small.beacons[0].tx_power_dbm
    sparse["radio"]["path_loss_exponent"] = 2.0
    open_space = make_plan(parse_floorplan(json.dumps(sparse)))
    assert open_space.beacons[0].tx_power_dbm < big.beacons[0].tx_power_dbm


def test_max_radius_adds_beacons() -> None:
    free = make_plan(parse_floorplan(json.dumps(_plan_dict(width_m=10, depth_m=10))))
    tight = make_plan(parse_floorplan(json.dumps(_plan_dict(width_m=10, depth_m=10,
                                                            max_radius_m=2.0))))
    assert len(tight.beacons) > len(free.beacons)
    assert all(b.coverage_radius_m <= 2.0 for b in tight.beacons)


def test_identities_are_deterministic_and_consistent(plan: Plan) -> None:
    sid = store_uuid("s042")
    assert plan.ibeacon_uuid == str(sid) == str(make_plan(load_floorplan(EXAMPLE)).ibeacon_uuid)
    assert store_uuid("s043") != sid
    # Eddystone namespace is the elided UUID (first 4 and last 6 bytes).
    assert bytes.fromhex(plan.eddystone_namespace) == sid.bytes[:4] + sid.bytes[10:]
    minors = [b.minor for b in plan.beacons]
    assert len(set(minors)) == len(minors)
    assert len({b.id for b in plan.beacons}) == len(plan.beacons)
    first = plan.beacons[0]
    assert (first.major, first.minor) == (42, 101)
    assert first.eddystone_instance == "0000002a0065"
    for b in plan.beacons:
        assert uuid.UUID(b.ibeacon_uuid) == sid
        assert len(bytes.fromhex(b.eddystone_instance)) == 6


def test_json_and_csv_round_trip(tmp_path: Path, plan: Plan) -> None:
    (tmp_path / "p.json").write_bytes(plan_to_json(plan))
    assert load_plan(tmp_path / "p.json") == plan
    rows = list(csv.DictReader(io.StringIO(plan_to_csv(plan))))
    assert [r["id"] for r in rows] == [b.id for b in plan.beacons]
    assert rows[0]["ibeacon_uuid"] == plan.ibeacon_uuid
    assert float(rows[0]["x_m"]) == plan.beacons[0].x_m


def _heard_all(plan: Plan, **override: Any) -> list[Heard]:
    """Every beacon heard at its predicted RSSI by the receiver nearest to it."""
    out = []
    for b in plan.beacons:
        rx = min(plan.receivers, key=lambda r: math.hypot(b.x_m - r.x_m, b.y_m - r.y_m))
        d = math.hypot(b.x_m - rx.x_m, b.y_m - rx.y_m)
        rssi = round(predicted_rssi(plan.radio, b.measured_power_dbm, d))
        out.append(Heard(beacon=b.id, receiver=rx.id, rssi=rssi, last_seen=NOW - 5,
                         battery_mv=2950, **override))
    return out


def test_check_all_good(plan: Plan) -> None:
    report = check_plan(plan, _heard_all(plan), now=NOW)
    assert report.ok, format_report(report)
    assert report.counts["ok"] == len(plan.beacons)


def test_check_finds_each_problem(plan: Plan) -> None:
    heard = _heard_all(plan)
    by_id = {h.beacon: h for h in heard}
    heard.remove(by_id["aisle-2-b1"])  # never heard
    by_id["aisle-2-b2"].last_seen = NOW - 3600  # silent for an hour
    by_id["aisle-3-b2"].rssi -= 20  # weak
    by_id["entrance-b1"].battery_mv = 2300  # low battery
    # aisle-3-b1 is heard far louder by the entrance receiver than by its own zone's.
    heard.append(Heard(beacon="aisle-3-b1", receiver="gw-front", rssi=-50, last_seen=NOW))
    heard.append(Heard(uuid=plan.ibeacon_uuid.upper(), major=42, minor=999, rssi=-70,
                       last_seen=NOW))
    heard.append(Heard(uuid=str(uuid.uuid4()), major=1, minor=1, rssi=-70, last_seen=NOW))
    report = check_plan(plan, heard, now=NOW)
    issues = {s.id: s.issues for s in report.beacons if s.issues}
    assert issues == {
        "aisle-2-b1": ["missing"], "aisle-2-b2": ["missing"], "aisle-3-b2": ["weak"],
        "entrance-b1": ["low_battery"], "aisle-3-b1": ["wrong_zone"],
    }
    assert report.unknown == [f"{plan.ibeacon_uuid.upper()}/42/999"]  # neighbours ignored
    assert not report.ok
    table = format_report(report)
    assert table.splitlines()[0].startswith("BEACON")
    assert "replace the cell" in table
    assert "1 unknown" in table


def test_heard_by_ids_and_iso_times(plan: Plan) -> None:
    b = plan.beacons[0]
    heard = parse_heard(json.dumps([{
        "uuid": b.ibeacon_uuid, "major": b.major, "minor": b.minor, "rssi": -60,
        "last_seen": "2025-02-19T21:19:55+00:00", "extra": "ignored",
    }]).encode())
    assert heard[0].seen_ts == 1_740_000_000 - 5
    status = check_plan(plan, heard, now=NOW).beacons[0]
    assert status.issues == []
    assert status.expected_rssi == b.edge_rssi_dbm  # no receiver named: edge prediction


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ([{"beacon": "x", "rssi": "loud", "last_seen": 1}], "heard[0].rssi"),
        ([{"beacon": "x", "rssi": -60, "last_seen": "2025-01-01T00:00:00"}],
         "heard[0].last_seen"),
        ([{"rssi": -60, "last_seen": 1}], "heard[0]"),
        ({"beacon": "x"}, "heard"),
    ],
)
def test_heard_errors_name_the_entry(doc: object, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_heard(json.dumps(doc).encode())
    assert info.value.field == field


def test_cli_plan_and_check(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            plan: Plan) -> None:
    out = tmp_path / "out"
    assert main(["beacons", "plan", "--floorplan", str(EXAMPLE), "-o", str(out)]) == 0
    assert load_plan(out / "beacon-plan.json") == plan
    assert (out / "beacon-plan.csv").read_text().startswith("id,zone,")
    capsys.readouterr()
    assert main(["beacons", "plan", "--floorplan", str(EXAMPLE), "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("id,zone,")

    heard = tmp_path / "heard.json"
    heard.write_bytes(msgspec.json.encode(_heard_all(plan)))
    args = ["beacons", "check", "--plan", str(out / "beacon-plan.json"), "--heard", str(heard),
            "--now", str(NOW)]
    assert main(args) == 0
    assert f"{len(plan.beacons)} ok" in capsys.readouterr().out
    # Much later, everything is silent: non-zero exit, JSON says why.
    late = [*args[:-1], "2025-02-20T00:00:00+00:00", "--json"]
    assert main(late) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert report["counts"]["missing"] == len(plan.beacons)
    # Unreadable input: exit 2 with a message, no traceback.
    heard.write_text("[{]")
    assert main(args) == 2
    assert "heard" in capsys.readouterr().err
    assert main(["beacons", "plan", "--floorplan", str(tmp_path / "x.yaml")]) == 1
    assert ".json or .toml" in capsys.readouterr().err
