"""``aislecast decode`` against docs/architecture.md#command-line-contract, from inside and from outside."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from aislecast.apps import cmd_decode
from aislecast.apps.cli import main

IBEACON = "0201061aff4c0002154142434445464748494041424344454600010002f8"
ALTBEACON = "02011a1bff1801beac" + "00" * 16 + "00010001c501"
UID = "0201060303aafe1716aafe00e312345678901234678901000000000001" + "0000"
URL = "0303aafe1316aafe10f8036769746875620063697472757a"
TLM = "0201060303aafe1116aafe20000b1813000000146700002ac4"
ETLM = "0201060303aafe1516aafe2001" + "41" * 12 + "deadbeff"
EID = "0201060303aafe0d16aafe30e34549445f74657374"
APPLE_NOISE = "02011a0aff4c0010050b1c2a3b4c"

# docs/architecture.md#command-line-contract: field names for each format
CONTRACT = [
    (IBEACON, "ibeacon", {"uuid": "41424344-4546-4748-4940-414243444546", "major": 1,
                          "minor": 2, "tx_power": -8}),
    (ALTBEACON, "altbeacon", {"manufacturer": 0x0118, "id1": "00000000-0000-0000-0000-000000000000",
                              "id2": 1, "id3": 1, "reference_rssi": -59}),
    (UID, "eddystone_uid", {"tx_power": -29, "namespace": "12345678901234678901",
                            "instance": "000000000001"}),
    (URL, "eddystone_url", {"tx_power": -8, "url": "https://github.com/citruz"}),
    (TLM, "eddystone_tlm", {"battery_mv": 2840, "temperature_c": 19.0, "adv_count": 5223,
                            "uptime_s": 1094.8}),
    (ETLM, "eddystone_tlm", {"encrypted": True, "etlm": "41" * 12, "salt": 0xDEAD,
                             "mic": 0xBEFF}),
    (EID, "eddystone_eid", {"tx_power": -29, "eid": "4549445f74657374"}),
]


def _json_lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines()]


@pytest.mark.parametrize(("hex_in", "fmt", "fields"), CONTRACT, ids=[c[1] for c in CONTRACT])
def test_contract_fields(
    hex_in: str, fmt: str, fields: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["decode", hex_in, "--json"]) == 0
    [obj] = _json_lines(capsys.readouterr().out)
    assert obj["format"] == fmt
    for key, value in fields.items():
        assert obj[key] == value, key


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ("zz", "not hex"),
        ("0201061", "odd number of digits"),
        ("0201061aff4c000215", "truncated AD structure"),
        ("", "empty input"),
        ("0201060303aafe0716aafe30e31234", "Eddystone-EID frame has 4 bytes"),
        ("0201060303aafe0816aafe10f80aabcd", "scheme code 0x0a"),
        ("0201060303aafe0516aafe2005", "TLM version 0x05"),
        ("0201061aff4c0002154142434445464748494041424344454600010002", "truncated"),
        ("0201061aff4c00021541424344454647484940414243444546000100", "truncated"),
        ("02011a19ff4c0002154142434445464748494041424344454600010002", "iBeacon payload"),
        ("\u00e9\u00e9", "not hex"),
    ],
)
def test_bad_input_gives_null_and_error(
    bad: str, fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["decode", bad, "--json"]) == 0
    [obj] = _json_lines(capsys.readouterr().out)
    assert obj["format"] is None
    assert fragment in str(obj["error"])


def test_not_a_beacon_is_null_with_a_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", APPLE_NOISE, "0x02:01:06", "--json"]) == 0
    first, second = _json_lines(capsys.readouterr().out)
    assert first == {"format": None, "reason": "no beacon frame (manufacturer 0x004c)"}
    assert second == {"format": None, "reason": "no beacon frame"}


def test_several_inputs_in_order_and_separators(capsys: pytest.CaptureFixture[str]) -> None:
    spaced = " ".join(IBEACON[i:i + 2] for i in range(0, len(IBEACON), 2))
    assert main(["decode", EID, "nothex", spaced, "0x" + URL.upper(), "--json"]) == 0
    formats = [o["format"] for o in _json_lines(capsys.readouterr().out)]
    assert formats == ["eddystone_eid", None, "ibeacon", "eddystone_url"]


def test_text_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", IBEACON, TLM, "zz", APPLE_NOISE]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "ibeacon uuid=41424344-4546-4748-4940-414243444546 major=1 minor=2 tx_power=-8"
    )
    assert lines[1].startswith("eddystone_tlm version=0 battery_mv=2840 temperature_c=19.0")
    assert lines[2].startswith("- error: not hex")
    assert lines[3] == "- reason: no beacon frame (manufacturer 0x004c)"


def _help_examples() -> list[tuple[list[str], list[str]]]:
    """The ``$ aislecast decode ...`` examples of the help text with their output."""
    text = re.sub(r"\\\n\s*", "", cmd_decode._HELP)  # join continuation lines
    examples: list[tuple[list[str], list[str]]] = []
    lines = [line.strip() for line in text.splitlines()]
    for i, line in enumerate(lines):
        if not line.startswith("$ aislecast decode") or any(c in line for c in "<|>"):
            continue
        expected = []
        for follow in lines[i + 1:]:
            if not follow or follow.startswith("$"):
                break
            expected.append(follow)
        examples.append((shlex.split(line)[3:], expected))
    return examples


def test_help_examples_are_true(capsys: pytest.CaptureFixture[str]) -> None:
    examples = _help_examples()
    assert len(examples) >= 3
    for argv, expected in examples:
        assert main(["decode", *argv]) == 0
        assert capsys.readouterr().out.splitlines() == expected, argv


def _run_cli(args: list[str], stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "aislecast", "decode", *args],
        input=stdin, capture_output=True, timeout=60, check=False,
    )


def test_stdin_streams_one_object_per_line_in_order() -> None:
    pattern = [IBEACON, "zz", EID, "", UID, APPLE_NOISE, TLM, "0201061aff4c000215"]
    lines = pattern * 2500  # 20,000 lines
    proc = _run_cli(["-", "--json"], ("\n".join(lines) + "\n").encode())
    assert proc.returncode == 0
    assert proc.stderr == b""
    objs = _json_lines(proc.stdout.decode())
    assert len(objs) == len(lines)
    expected = ["ibeacon", None, "eddystone_eid", None, "eddystone_uid", None,
                "eddystone_tlm", None]
    assert [o["format"] for o in objs[:16]] == expected * 2
    assert [o["format"] for o in objs[-8:]] == expected


def test_stdin_binary_garbage_and_crlf_never_traceback() -> None:
    garbage = b"\xff\xfe\x00\x01\n" + IBEACON.encode() + b"\r\n\x80\x81\n" + b"0" * 5000 + b"\n"
    proc = _run_cli(["-", "--json", "--line-buffered"], garbage)
    assert proc.returncode == 0
    assert b"Traceback" not in proc.stderr
    objs = _json_lines(proc.stdout.decode())
    assert [o["format"] for o in objs] == [None, "ibeacon", None, None]
    assert all("error" in o for o in objs if o["format"] is None)


def test_closed_pipe_is_quiet(tmp_path: Path) -> None:
    capture = tmp_path / "capture.hex"
    capture.write_text((IBEACON + "\n") * 200_000)
    command = f"{shlex.quote(sys.executable)} -m aislecast decode - --json < {capture} | head -n 1"
    proc = subprocess.run(  # noqa: S602 - the pipe to head is the point
        command, shell=True, capture_output=True, timeout=60, check=False
    )
    assert proc.stdout.decode().startswith('{"format":"ibeacon"')
    assert proc.stderr == b""
