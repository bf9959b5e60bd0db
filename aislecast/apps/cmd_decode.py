"""``aislecast decode``: BLE advertising data (hex) to beacon frames, one per input.

The output contract is docs/architecture.md#command-line-contract. Per-input problems
(not hex, truncated structures, malformed frames) are reported in that input's object
and never change the exit code; ``-`` streams standard input line by line with a
bounded memo of repeated lines, so a capture of millions of adverts goes through in
constant memory.
"""

from __future__ import annotations

import argparse
import binascii
import os
import sys
import textwrap
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, BinaryIO, Final

import msgspec

from edge.adstructs import parse_ad
from edge.decoders import decode_ad
from edge.frames import ALTBEACON_CODE, APPLE_COMPANY_ID, EDDYSTONE_UUID, URL_SCHEMES, Frame

__all__ = ["decode_hex", "register", "render_json", "render_text"]

# Repeated capture lines (fixed beacons) are answered from memory; 16,384 rendered
# lines of ~150 bytes is ~2.5 MiB, enough for every fixed frame of a large store.
_LINE_CACHE_SIZE: Final = 16_384
_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")
_ECHO_MAX: Final = 40  # characters of a bad input quoted back in its error

_HELP = textwrap.dedent(
    """\
    Decode BLE advertising data (the raw AD structures, as hex) into beacon frames:
    iBeacon, AltBeacon, Eddystone UID / URL / TLM (plain and encrypted) / EID.
    One result per input, in order; bad input gives format null and an "error",
    never a traceback, and the exit code stays 0. Spaces, colons and a 0x prefix
    in the hex are ignored.

    examples:
      An iBeacon, as JSON:

      $ aislecast decode 0201061aff4c0002154142434445464748494041424344454600010002f8 --json
      {"format":"ibeacon","uuid":"41424344-4546-4748-4940-414243444546","major":1,"minor":2,"tx_power":-8}

      An Eddystone-URL and an Eddystone-TLM, as one-line summaries:

      $ aislecast decode 0303aafe1316aafe10f8036769746875620063697472757a \\
            0201060303aafe1116aafe20000b1813000000146700002ac4
      eddystone_url tx_power=-8 url=https://github.com/citruz
      eddystone_tlm version=0 battery_mv=2840 temperature_c=19.0 adv_count=5223 uptime_s=1094.8

      A truncated advert:

      $ aislecast decode 0201061aff4c000215 --json
      {"format":null,"error":"truncated AD structure at offset 3: length 26, 5 bytes left"}

      A capture, one hex string per line, streamed to one JSON object per line:

      $ aislecast decode - --json < capture.hex > frames.jsonl
      $ tail -f scan.hex | aislecast decode - --json --line-buffered | jq .format
    """
)


def _not_hex(text: str) -> str:
    quoted = repr(text[:_ECHO_MAX]) + ("..." if len(text) > _ECHO_MAX else "")
    for pos, ch in enumerate(text):
        if ch not in _HEX_DIGITS:
            return f"not hex: character {ch!r} at position {pos} in {quoted}"
    return f"not hex: odd number of digits ({len(text)}) in {quoted}"


def _normalise(text: str) -> str:
    text = text.strip()
    if text[:2] in ("0x", "0X"):
        text = text[2:]
    return text.replace(" ", "").replace(":", "").replace("\t", "")


def _eddystone_problem(data: bytes) -> tuple[str, str]:
    n = len(data)
    if n == 0:
        return "error", "Eddystone service data is empty"
    kind = data[0]
    if kind == 0x00:
        return "error", f"Eddystone-UID frame has {n} bytes, expected 18 or 20"
    if kind == 0x10:
        if not 3 <= n <= 20:
            return "error", f"Eddystone-URL frame has {n} bytes, expected 3 to 20"
        if data[2] >= len(URL_SCHEMES):
            return "error", f"Eddystone-URL scheme code 0x{data[2]:02x} is not defined"
        return "error", "Eddystone-URL carries a reserved or non-printable byte"
    if kind == 0x20:
        if n < 2 or data[1] not in (0, 1):
            version = f"0x{data[1]:02x}" if n >= 2 else "missing"
            return "error", f"Eddystone-TLM version {version} is not 0 (plain) or 1 (encrypted)"
        want = 14 if data[1] == 0 else 18
        return "error", f"Eddystone-TLM version {data[1]} frame has {n} bytes, expected {want}"
    if kind == 0x30:
        return "error", f"Eddystone-EID frame has {n} bytes, expected 10"
    return "reason", f"Eddystone frame type 0x{kind:02x} is not a standard frame"


def _diagnose(raw: bytes) -> tuple[str, str]:
    """Why ``raw`` decoded to nothing: ("error", ...) for bad input, else ("reason", ...)."""
    if not raw:
        return "error", "empty input"
    ad = parse_ad(raw)
    if ad.error is not None:
        return "error", ad.error
    for company, data in ad.manufacturer_data.items():
        if company == APPLE_COMPANY_ID and data[:2] == b"\x02\x15":
            return "error", f"iBeacon payload has {len(data)} bytes, expected 23"
        if data[:2] == ALTBEACON_CODE:
            return "error", f"AltBeacon payload has {len(data)} bytes, expected 24"
    eddystone = ad.service_data.get(EDDYSTONE_UUID)
    if eddystone is not None:
        return _eddystone_problem(eddystone)
    seen = [f"manufacturer 0x{c:04x}" for c in ad.manufacturer_data]
    seen += [f"service data {u}" for u in ad.service_data]
    return "reason", "no beacon frame" + (f" ({', '.join(seen)})" if seen else "")


def decode_hex(text: str | bytes) -> tuple[Frame | None, dict[str, str | None]]:
    """Decode one hex input; the dict is the null result's body when the frame is None."""
    try:
        raw = binascii.unhexlify(text.strip())
    except (ValueError, TypeError):
        s = text.decode("ascii", "replace") if isinstance(text, bytes) else text
        s = _normalise(s)
        try:
            raw = bytes.fromhex(s)
        except ValueError:
            return None, {"format": None, "error": _not_hex(s)}
    frame = decode_ad(raw)
    if frame is not None:
        return frame, {}
    key, message = _diagnose(raw)
    return None, {"format": None, key: message}


_encode = msgspec.json.Encoder().encode


def render_json(text: str | bytes) -> bytes:
    """One input as one JSON object (no newline)."""
    frame, null = decode_hex(text)
    return _encode(frame if frame is not None else null)


def _plain(value: Any) -> str:
    return "null" if value is None else str(value)


def render_text(text: str | bytes) -> bytes:
    """One input as a readable one-line summary (no newline)."""
    frame, null = decode_hex(text)
    if frame is None:
        key = "error" if "error" in null else "reason"
        return f"- {key}: {null[key]}".encode()
    fields = " ".join(f"{k}={_plain(v)}" for k, v in msgspec.structs.asdict(frame).items())
    return f"{type(frame).__struct_config__.tag} {fields}".encode()


def _stream(lines: Iterable[bytes], out: BinaryIO, *, as_json: bool, flush: bool) -> None:
    """Render each line in order, answering repeated lines from a bounded memo."""
    render = render_json if as_json else render_text
    # An OrderedDict: evicting the oldest entry of a plain dict is not O(1) (see
    # edge.decoders.FrameCache).
    memo: OrderedDict[bytes, bytes] = OrderedDict()
    write = out.write
    for line in lines:
        rendered = memo.get(line)
        if rendered is None:
            rendered = render(line) + b"\n"
            if len(memo) >= _LINE_CACHE_SIZE:
                memo.popitem(last=False)
            memo[line] = rendered
        write(rendered)
        if flush:
            out.flush()


def _run(args: argparse.Namespace) -> int:
    out = sys.stdout.buffer
    as_json: bool = args.json
    flush: bool = args.line_buffered or sys.stdin.isatty()  # typing by hand: answer each line
    try:
        for item in args.hex:
            if item == "-":
                _stream(sys.stdin.buffer, out, as_json=as_json, flush=flush)
            else:
                out.write((render_json if as_json else render_text)(item) + b"\n")
        out.flush()
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep the interpreter's
        # final flush from complaining about the closed pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "decode",
        help="decode BLE advertising data (hex) into beacon frames",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "hex", nargs="+", metavar="HEX",
        help="advertising data as hex; '-' reads one hex string per line from stdin",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per input")
    p.add_argument(
        "--line-buffered", action="store_true",
        help="flush after every line (for live pipes such as tail -f)",
    )
    p.set_defaults(func=_run)
