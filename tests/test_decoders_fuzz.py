"""Property tests: no input makes a decoder raise; every format round-trips.

The hypothesis seed is printed by hypothesis on failure; the fuzz runner's seed is
printed here (``pytest -s``) and fixed so a failure replays exactly.
"""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from aislecast.apps.cmd_decode import decode_hex, render_json, render_text
from benchmarks.fuzz_decoders import run, seed_corpus
from edge.adstructs import build_ad, parse_ad, to_advertisement
from edge.advert import Advertisement
from edge.decoders import (
    FrameCache,
    decode_ad,
    decode_advertisement,
    decode_eddystone,
    decode_manufacturer,
    decode_service_data,
)
from edge.frames import (
    EDDYSTONE_UUID,
    URL_EXPANSIONS,
    URL_SCHEMES,
    AltBeacon,
    EddystoneEID,
    EddystoneETLM,
    EddystoneTLM,
    EddystoneUID,
    EddystoneURL,
    Frame,
    IBeacon,
    encode_altbeacon,
    encode_eddystone_eid,
    encode_eddystone_etlm,
    encode_eddystone_tlm,
    encode_eddystone_uid,
    encode_eddystone_url,
    encode_ibeacon,
)

FUZZ_SEED = 20240601

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
i8 = st.integers(-128, 127)
uuids = st.uuids().map(str)
# mostly near-valid lengths, sometimes anything
payloads = st.one_of(st.binary(max_size=40), st.binary(min_size=17, max_size=25))


def _overruns(raw: bytes) -> bool:
    """True when some AD structure's length byte points past the end of ``raw``."""
    i = 0
    while i < len(raw) and raw[i]:
        i += 1 + raw[i]
    return i > len(raw)


@given(st.binary(max_size=300))
def test_any_bytes_never_raise(raw: bytes) -> None:
    frame = decode_ad(raw)
    assert FrameCache(maxsize=2).decode_ad(raw) == frame
    ad = parse_ad(raw)
    # a length chain that runs past the end is always reported, and where: one line
    if _overruns(raw):
        assert ad.error is not None and "offset" in ad.error
    assert ad.error is None or (ad.error and "\n" not in ad.error)
    adv = to_advertisement(ad, "AA", -1, 0.0)
    assert FrameCache(maxsize=2).decode_advertisement(adv) == decode_advertisement(adv)
    decode_eddystone(raw)
    decode_service_data(EDDYSTONE_UUID, raw)
    decode_manufacturer(0x004C, raw)
    decode_manufacturer(0x0118, raw)


@given(u16, payloads, payloads)
def test_any_dictionaries_never_raise(company: int, mfr: bytes, svc: bytes) -> None:
    adv = Advertisement(
        "AA", -1, 0.0, manufacturer_data={company: mfr, 0x004C: mfr},
        service_data={EDDYSTONE_UUID: svc},
    )
    assert FrameCache(maxsize=1).decode_advertisement(adv) == decode_advertisement(adv)
    # frame-shaped prefixes, random rest
    decode_manufacturer(0x004C, b"\x02\x15" + mfr)
    decode_manufacturer(company, b"\xbe\xac" + mfr)
    for kind in (b"\x00", b"\x10", b"\x20\x00", b"\x20\x01", b"\x30"):
        decode_eddystone(kind + svc)


@given(st.one_of(st.text(max_size=80), st.binary(max_size=80)))
def test_cli_renderers_never_raise(text: str | bytes) -> None:
    frame, null = decode_hex(text)
    assert (frame is None) != (null == {})
    assert render_json(text).startswith(b"{")
    render_text(text)


# Strategies for every frame, built from field values the wire can carry.
ibeacons = st.builds(IBeacon, uuids, u16, u16, i8)
altbeacons = st.builds(AltBeacon, u16, uuids, u16, u16, i8, u8)
uids = st.builds(
    EddystoneUID, i8, st.binary(min_size=10, max_size=10).map(bytes.hex),
    st.binary(min_size=6, max_size=6).map(bytes.hex),
)
_url_chars = st.sampled_from([chr(c) for c in range(0x21, 0x7F)] + list(URL_EXPANSIONS))
urls = st.builds(
    lambda tx, scheme, parts: EddystoneURL(tx, scheme + "".join(parts)),
    i8, st.sampled_from(URL_SCHEMES), st.lists(_url_chars, max_size=17),
)
tlms = st.builds(
    EddystoneTLM, st.just(0), u16,
    st.one_of(st.none(), st.integers(-0x7FFF, 0x7FFF).map(lambda t: t / 256)),
    u32, u32.map(lambda ticks: ticks / 10),
)
etlms = st.builds(
    EddystoneETLM, st.just(1), st.just(True),
    st.binary(min_size=12, max_size=12).map(bytes.hex), u16, u16,
)
eids = st.builds(EddystoneEID, i8, st.binary(min_size=8, max_size=8).map(bytes.hex))
frames = st.one_of(ibeacons, altbeacons, uids, urls, tlms, etlms, eids)


def _encode(frame: Frame) -> tuple[int | str, bytes]:
    if isinstance(frame, IBeacon):
        return encode_ibeacon(frame.uuid, frame.major, frame.minor, frame.tx_power)
    if isinstance(frame, AltBeacon):
        return encode_altbeacon(
            frame.manufacturer, frame.id1, frame.id2, frame.id3, frame.reference_rssi,
            mfg_reserved=frame.mfg_reserved,
        )
    if isinstance(frame, EddystoneUID):
        return encode_eddystone_uid(frame.namespace, frame.instance, frame.tx_power)
    if isinstance(frame, EddystoneURL):
        return encode_eddystone_url(frame.url, frame.tx_power)
    if isinstance(frame, EddystoneTLM):
        return encode_eddystone_tlm(
            frame.battery_mv, frame.temperature_c, frame.adv_count, frame.uptime_s
        )
    if isinstance(frame, EddystoneETLM):
        return encode_eddystone_etlm(frame.etlm, frame.salt, frame.mic)
    return encode_eddystone_eid(bytes.fromhex(frame.eid), frame.tx_power)


@given(frames)
def test_round_trip_every_format(frame: Frame) -> None:
    key, data = _encode(frame)
    if isinstance(key, int):
        raw = build_ad(manufacturer_data={key: data})
        adv = Advertisement("AA", -1, 0.0, manufacturer_data={key: data})
    else:
        raw = build_ad(service_data={key: data}, service_uuids16=[0xFEAA])
        adv = Advertisement("AA", -1, 0.0, service_data={key: data})
    assert decode_ad(raw) == frame
    assert decode_advertisement(adv) == frame
    parsed = parse_ad(raw)
    assert parsed.error is None
    assert decode_advertisement(to_advertisement(parsed, "AA", -1, 0.0)) == frame
    assert decode_hex(raw.hex()) == (frame, {})


@given(ibeacons)
def test_ibeacon_uuid_is_lower_case_dashed(frame: IBeacon) -> None:
    company, data = encode_ibeacon(frame.uuid.upper(), frame.major, frame.minor, frame.tx_power)
    decoded = decode_ad(build_ad(manufacturer_data={company: data}))
    assert decoded is not None
    assert isinstance(decoded, IBeacon)
    assert decoded.uuid == str(uuid.UUID(decoded.uuid))


def test_fuzz_runner_small() -> None:
    report = run(20_000, FUZZ_SEED, cli_every=20)
    print(f"fuzz seed={report.seed} count={report.count} exceptions={report.exceptions}")
    assert report.count == 20_000
    assert report.exceptions == 0, "\n".join(report.failures)
    assert sum(report.frames.values()) > 0
    assert len(seed_corpus()) >= 8
