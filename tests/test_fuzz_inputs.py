"""The input fuzzer (benchmarks/fuzz_inputs.py) briefly, on every target, and the bugs it
found: deeply nested JSON raised RecursionError out of every handler (msgspec recurses
even to skip an unknown field), and a validly signed bundle or delta with a number past
SQLite's 64-bit INTEGER was applied, then failed to persist with OverflowError."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from aislecast.kernel import topics
from aislecast.kernel.schema import Feedback, PhoneSighting, decode
from benchmarks.fuzz_engine import quiet_logs, run_target
from benchmarks.fuzz_targets import STORE, TARGETS, Rig, build_target

FUZZ_SEED = 20261202
_DEEP = b'{"v":1,"x":' + b"[" * 50_000 + b"]" * 50_000 + b"}"


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with quiet_logs():
        r = Rig(tmp_path)
    yield r
    r.close()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_each_target_takes_a_few_hundred_inputs_without_a_failure(rig: Rig, name: str) -> None:
    target = build_target(name, rig)
    try:
        res = run_target(target, count=15, budget_s=600, seed=FUZZ_SEED, variants=20)
    finally:
        target.close()
    print(res.line())
    assert res.failures == 0, "\n".join(res.kept)
    assert res.inputs == 15 * 21  # every draw and its variants were fed
    assert sum(res.outcomes.values()) > 0  # the witness: the inputs reached the components


@pytest.mark.parametrize("cls", [PhoneSighting, Feedback])
def test_deep_nesting_is_a_decode_error_not_a_recursion_error(cls: type[msgspec.Struct]) -> None:
    with pytest.raises(msgspec.DecodeError, match="nested too deeply"):
        decode(_DEEP, cls)


def test_deeply_nested_payloads_are_counted_on_every_gateway_topic(rig: Rig) -> None:
    router, bad = rig.router, rig.parts.counters.bad_payloads
    before = dict(bad)
    router.route(topics.sightings(STORE, rig.inboxes[0]), _DEEP)
    router.route(topics.gateway_acks(STORE, rig.cfg.gateway), _DEEP)
    router.route(topics.bundle(STORE), _DEEP)
    with quiet_logs():
        router.route(topics.bundle(STORE), rig.sign_raw("bundle", _DEEP))  # signed, deep inside
    assert bad.get("sighting", 0) == before.get("sighting", 0) + 1
    assert bad.get("ack", 0) == before.get("ack", 0) + 1
    assert bad.get("bundle", 0) == before.get("bundle", 0) + 2


@pytest.mark.parametrize(("kind", "field", "value"), [
    ("delta", "seq", 2**64), ("delta", "seq", -1), ("bundle", "version", 2**63),
    ("bundle", "delta_seq", 2**63), ("bundle", "rotation_k", -1), ("bundle", "rotation_k", 10**6),
])
def test_signed_numbers_out_of_range_are_refused_before_anything_is_applied(
        rig: Rig, kind: str, field: str, value: int) -> None:
    bundles, now = rig.parts.bundles, time.time()
    if kind == "bundle":
        body = msgspec.to_builtins(rig.bundle) | {"version": bundles.version + 1}
    else:
        body = {"v": 1, "seq": bundles.delta_seq + 1, "store": STORE, "issued_at": now,
                "expires_at": now + 600, "paused": ["c-fuzz"]}
    body[field] = value
    state = (bundles.version, bundles.delta_seq, "c-fuzz" in rig.parts.paused)
    rejected = bundles.rejected.get("malformed", 0)
    topic = topics.bundle(STORE) if kind == "bundle" else topics.bundle_delta(STORE)
    with quiet_logs():
        rig.router.route(topic, rig.sign_raw(kind, msgspec.json.encode(body)))
    assert bundles.rejected.get("malformed", 0) == rejected + 1
    assert (bundles.version, bundles.delta_seq, "c-fuzz" in rig.parts.paused) == state
    assert rig.parts.db.execute("SELECT count(*) FROM deltas").fetchone() == (0,)
