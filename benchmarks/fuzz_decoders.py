"""Fuzz the beacon decoders: random, structured and mutated advertising data.

Every input goes through :func:`edge.decoders.decode_ad`, :func:`edge.adstructs.parse_ad`,
:func:`edge.decoders.decode_advertisement` (on the parsed dictionaries), the per-entry
decoders and a :class:`edge.decoders.FrameCache`; every ``cli_every``-th one also
through ``aislecast decode``'s renderers, as hex and as mangled text. Any exception is
a failure. The run is reproducible from its seed, which is always printed.

    python -m benchmarks.fuzz_decoders                     # 1,000,000 inputs, random seed
    python -m benchmarks.fuzz_decoders --count 50000 --seed 7
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from aislecast.apps.cmd_decode import render_json, render_text
from edge.adstructs import build_ad, parse_ad, to_advertisement
from edge.decoders import (
    FrameCache,
    decode_ad,
    decode_advertisement,
    decode_manufacturer,
    decode_service_data,
)
from edge.frames import (
    encode_altbeacon,
    encode_eddystone_eid,
    encode_eddystone_etlm,
    encode_eddystone_tlm,
    encode_eddystone_uid,
    encode_eddystone_url,
    encode_ibeacon,
)

__all__ = ["FuzzReport", "main", "run", "seed_corpus"]

_UUID = "e2c56db5-dffb-48d2-b060-d0f5a71096e0"
_MAX_FAILURES_KEPT = 5


def seed_corpus() -> list[bytes]:
    """One valid advert of every format plus a few non-beacon ones."""
    mfr = [
        encode_ibeacon(_UUID, 1, 2, -59),
        encode_altbeacon(0x0118, _UUID, 3, 4, -60, mfg_reserved=1),
    ]
    svc = [
        encode_eddystone_uid("00112233445566778899", "aabbccddeeff", -20),
        encode_eddystone_url("https://www.shop.example.com/", -18),
        encode_eddystone_tlm(3000, 21.5, 12345, 6789.5),
        encode_eddystone_tlm(0, None, 0, 0.0),
        encode_eddystone_etlm(bytes(range(12)), 0x1234, 0xABCD),
        encode_eddystone_eid(b"\x01\x02\x03\x04\x05\x06\x07\x08", -30),
    ]
    out = [build_ad(manufacturer_data={c: d}) for c, d in mfr]
    out += [build_ad(service_data={u: d}, service_uuids16=[0xFEAA]) for u, d in svc]
    out.append(build_ad(manufacturer_data={0x004C: b"\x10\x05\x0b\x1c\x2a\x3b\x4c"}))
    out.append(build_ad(manufacturer_data={0x0006: b"\x01\x09\x20\x02"}, local_name="tv"))
    return out


@dataclass(slots=True)
class FuzzReport:
    seed: int
    count: int = 0
    exceptions: int = 0
    elapsed_s: float = 0.0
    by_source: Counter[str] = field(default_factory=Counter)
    frames: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)


def _random(rng: random.Random, _corpus: list[bytes]) -> bytes:
    return rng.randbytes(rng.randint(0, 40))


def _structured(rng: random.Random, _corpus: list[bytes]) -> bytes:
    """Well-framed structures whose headers look like ours and whose bodies are random."""
    parts = []
    for _ in range(rng.randint(1, 3)):
        pick = rng.random()
        if pick < 0.4:
            head = rng.choice((b"\x4c\x00\x02\x15", b"\x18\x01\xbe\xac", b"\x4c\x00\xbe\xac"))
            body = bytes((0xFF,)) + head + rng.randbytes(rng.choice((17, 18, 19, 20, 21)))
        elif pick < 0.8:
            kind = rng.choice((0x00, 0x10, 0x20, 0x30, rng.randrange(256)))
            extra = bytes((kind,)) + (bytes((rng.choice((0, 1, 2)),)) if kind == 0x20 else b"")
            body = b"\x16\xaa\xfe" + extra + rng.randbytes(rng.randint(0, 20))
        else:
            body = bytes((rng.randrange(256),)) + rng.randbytes(rng.randint(0, 8))
        parts.append(bytes((len(body),)) + body)
    return b"".join(parts)


def _mutated(rng: random.Random, corpus: list[bytes]) -> bytes:
    data = bytearray(rng.choice(corpus))
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        pos = rng.randrange(len(data)) if data else 0
        if op == 0 and data:
            data[pos] ^= 1 << rng.randrange(8)
        elif op == 1 and data:
            data[pos] = rng.randrange(256)
        elif op == 2:
            del data[rng.randint(0, len(data)):]
        elif op == 3:
            data[pos:pos] = rng.randbytes(rng.randint(1, 4))
        elif op == 4 and data:
            del data[pos]
        elif op == 5:
            data += rng.choice(corpus)[: rng.randint(0, 12)]
        elif data:  # lie about a length byte: the first byte of a structure, or any
            data[0 if rng.random() < 0.5 else pos] = rng.choice((0, 1, 2, 0x1A, 0x1B, 0xFF))
    return bytes(data)


_SOURCES: tuple[tuple[str, Callable[[random.Random, list[bytes]], bytes]], ...] = (
    ("random", _random),
    ("structured", _structured),
    ("mutated", _mutated),
)


def _exercise(raw: bytes, cache: FrameCache, report: FuzzReport) -> None:
    frame = decode_ad(raw)
    if cache.decode_ad(raw) != frame:
        raise AssertionError(f"cache disagrees with decode_ad on {raw.hex()}")
    ad = parse_ad(raw)
    adv = to_advertisement(ad, "00:00:00:00:00:00", -70, 0.0)
    if cache.decode_advertisement(adv) != decode_advertisement(adv):
        raise AssertionError(f"cache disagrees with decode_advertisement on {raw.hex()}")
    for company, data in ad.manufacturer_data.items():
        decode_manufacturer(company, data)
    for service_uuid, data in ad.service_data.items():
        decode_service_data(service_uuid, data)
    if frame is not None:
        report.frames[type(frame).__name__] += 1


def _exercise_cli(raw: bytes, rng: random.Random) -> None:
    text = raw.hex()
    render_json(text)
    render_text(text.encode())
    mangled = list(text + rng.choice(("", "0", " ", ":", "zz", "\x00", "é", "\n")))
    if mangled:
        mangled[rng.randrange(len(mangled))] = chr(rng.randrange(0x20, 0x250))
    render_json("".join(mangled))
    render_json(raw)  # raw bytes where hex text was expected


def run(count: int, seed: int, *, cli_every: int = 50) -> FuzzReport:
    """Feed ``count`` inputs; never raises for decoder failures, it counts them."""
    rng = random.Random(seed)
    corpus = seed_corpus()
    cache = FrameCache(maxsize=1024)
    report = FuzzReport(seed=seed)
    t0 = time.perf_counter()
    for k in range(count):
        name, make = _SOURCES[k % len(_SOURCES)]
        raw = make(rng, corpus)
        report.by_source[name] += 1
        try:
            _exercise(raw, cache, report)
            if cli_every and k % cli_every == 0:
                _exercise_cli(raw, rng)
        except Exception:  # noqa: BLE001 - a fuzzer counts every failure
            report.exceptions += 1
            if len(report.failures) < _MAX_FAILURES_KEPT:
                report.failures.append(f"input {raw.hex()}:\n{traceback.format_exc()}")
        report.count += 1
    report.elapsed_s = time.perf_counter() - t0
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=1_000_000, help="inputs to feed")
    parser.add_argument("--seed", type=int, default=None, help="default: a random seed")
    parser.add_argument("--cli-every", type=int, default=50, help="CLI renderers every N inputs")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    print(f"fuzz_decoders: seed={seed} count={args.count}", flush=True)
    report = run(args.count, seed, cli_every=args.cli_every)
    rate = report.count / report.elapsed_s if report.elapsed_s else 0.0
    print(
        f"inputs={report.count:,} exceptions={report.exceptions} "
        f"elapsed={report.elapsed_s:.1f}s ({rate:,.0f} inputs/s)"
    )
    print("by source: " + ", ".join(f"{k}={v:,}" for k, v in sorted(report.by_source.items())))
    print("frames decoded: " + ", ".join(f"{k}={v:,}" for k, v in sorted(report.frames.items())))
    for failure in report.failures:
        print(failure, file=sys.stderr)
    return 1 if report.exceptions else 0


if __name__ == "__main__":
    sys.exit(main())
