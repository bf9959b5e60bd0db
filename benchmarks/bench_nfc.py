"""NFC reader benchmarks over nfcpy's udp driver with emulated phones and tags.

* tap latency: from the card entering the field (emulator timestamp) to the Tap being
  delivered on the event loop, p50/p99, cards arriving at random moments;
* sustained taps/s over 2,000 back-to-back taps (quick: 50), with the failure count;
* tag write + read-back verify time (Type 2 and Type 4 tags).

The udp link is loopback, so these numbers are the reader's own cost (poll loop,
nfcpy, thread hop); a real PN533 adds its RF timing (~5-20 ms per tap).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time

from benchmarks._harness import BenchOptions, Measurement, benchmark, percentile
from edge.nfc import AISLECAST_AID, NfcReader, Tap
from edge.nfc.emulator import CardEmulator, IsoDepCard, Type2Card, free_udp_port, type2_image
from edge.nfc.records import TagInfo, encode_message
from firmware_config.tags import build_message, write_tag

__all__ = ["bench_nfc"]

_POLL_S = 0.02
_MUTE_S = 0.002
_FAILURES = ("read_failed", "no_ndef", "bad_ndef", "bad_record", "aid_not_found", "bad_token")


def _phone(emu_ref: list[CardEmulator]) -> IsoDepCard:
    """An HCE phone whose token is the presentation number, so taps match presentations."""
    return IsoDepCard(
        token=lambda: (len(emu_ref[0].presented_at) - 1).to_bytes(8, "big"), aid=AISLECAST_AID
    )


async def _taps(n: int, techs: tuple[str, ...], gap: tuple[float, float],
                card_kind: str) -> tuple[list[float], float, int, int]:
    """Run ``n`` presentations; return latencies (ms), wall time, taps, failures."""
    port = free_udp_port()
    arrived: dict[int, float] = {}
    order: list[float] = []

    def on_tap(tap: Tap) -> None:
        now = time.monotonic()
        order.append(now)
        if tap.token is not None:
            arrived[int(tap.token, 16)] = now

    emu_ref: list[CardEmulator] = []
    message = encode_message(uri="https://hq.example/s/Ab3x?src=nfc&t=T-1",
                             info=TagInfo(tag_id="T-1", zone="dairy"))
    card = _phone(emu_ref) if card_kind == "phone" else Type2Card(type2_image(message))
    lo, hi = gap
    reader = NfcReader(f"udp:127.0.0.1:{port}", on_tap, poll_interval=_POLL_S,
                       technologies=techs, mute_after_tap_s=_MUTE_S, repeat_holdoff_s=0.0)
    async with reader:
        emu = CardEmulator(port, card, presentations=n, gap_s=lambda: random.uniform(lo, hi))
        emu_ref.append(emu)
        started = time.monotonic()
        with emu:
            await asyncio.to_thread(emu.wait_sessions, n, 60.0 + n * 0.05)
        await asyncio.sleep(0.05)
        wall = (order[-1] if order else time.monotonic()) - started
    stats = reader.stats()
    failures = sum(int(v) for k, v in stats.items() if k in _FAILURES and isinstance(v, int))
    failures += n - len(order)
    latencies = [(t - emu.presented_at[i]) * 1000 for i, t in arrived.items()
                 if i < len(emu.presented_at)]
    return latencies, wall, len(order), failures


async def _write_times(n: int) -> list[float]:
    message = build_message(tag_id="T-0417", url="https://hq.example/s/Ab3x",
                            title="Fresh milk offers", zone="dairy", product="milk-1l")
    out = []
    for i in range(n):
        port = free_udp_port()
        card = (Type2Card(type2_image(b"", data_size=496)) if i % 2 == 0
                else IsoDepCard(ndef=b""))
        with CardEmulator(port, card, presentations=1):
            report = await asyncio.to_thread(write_tag, f"udp:127.0.0.1:{port}", message,
                                             timeout=10.0)
        out.append(report.elapsed_ms)
    return out


@benchmark("nfc")
async def bench_nfc(opts: BenchOptions) -> list[Measurement]:
    rows: list[Measurement] = []
    n_lat = 20 if opts.quick else 300
    for techs in (("106A",), ("106A", "212F")):
        lat, _, taps, fails = await _taps(n_lat, techs, (0.005, 0.04), "phone")
        extra: dict[str, float | int | str] = {
            "technologies": "+".join(techs), "taps": taps, "failures": fails,
            "poll_interval_ms": _POLL_S * 1000,
        }
        for q, name in ((0.5, "p50"), (0.99, "p99")):
            rows.append(Measurement("nfc", "aislecast", f"tap_latency_{name}_{'+'.join(techs)}",
                                    percentile(lat, q) if lat else float("nan"), "ms", "lower",
                                    dict(extra)))
    n_tp = 50 if opts.quick else 2000
    for kind in ("phone", "tag"):
        _, wall, taps, fails = await _taps(n_tp, ("106A",), (0.0, 0.0), kind)
        rows.append(Measurement("nfc", "aislecast", f"taps_per_s_{kind}",
                                taps / wall if wall > 0 else 0.0, "taps/s", "higher",
                                {"taps": taps, "failures": fails, "presented": n_tp}))
    writes = await _write_times(4 if opts.quick else 20)
    rows.append(Measurement("nfc", "aislecast", "tag_write_verify_p50",
                            statistics.median(writes), "ms", "lower",
                            {"writes": len(writes), "max_ms": round(max(writes), 2),
                             "tags": "Type2Tag(496 B)+Type4Tag", "message_bytes": 134}))
    return rows
