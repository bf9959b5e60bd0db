"""The fuzz targets: real components, fed in-process (no broker, no network).

:class:`Rig` builds what the targets share in a scratch directory: an HQ service on
SQLite with a signing key and one store (zones, beacons, a campaign, two enrolled
shoppers), and a gateway's :class:`~gateway.parts.GatewayParts` on its own SQLite file
with that key pinned, loaded with HQ's real bundle.

- ``ndef``: tag bytes through :func:`edge.nfc.records.decode_message`, ``summarize``,
  ``tag_id_from_uri`` and ``decode_tag_record`` (what a tap and ``tags read`` run).
- ``gateway-mqtt``: every kind the gateway subscribes to, through
  :meth:`gateway.inbound.InboundRouter.route`.
- ``gateway-bundles``: bundles and deltas validly signed by HQ's key around hostile
  bodies, forged ones and mangled envelopes, through the same router; after the run
  the gateway must reopen from its database (the persisted bundle and deltas load).
- ``hq-mqtt``: events, feedback and gateway state through HQ's real
  :class:`hq.router.Router` with :class:`hq.ingest.Ingest` and the console's board;
  a handler failure the router catches is a failure here too.
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import msgspec
import ndef
from hypothesis import strategies as st

from aislecast.apps.scenarios import setup_store
from aislecast.kernel import topics
from aislecast.kernel.campaign import Campaign, Creative, Trigger
from aislecast.kernel.presence_schema import ShopperSighting, SightingSummary
from aislecast.kernel.schema import (
    SCHEMA_VERSION,
    BatchAck,
    Bundle,
    BundleDelta,
    Event,
    EventBatch,
    Feedback,
    GatewayState,
    InteractionReport,
    PhoneSighting,
    SignedEnvelope,
    decode,
    encode,
)
from aislecast.kernel.signing import Signer, load_or_create_signing_key, public_key_pem
from aislecast.kernel.verify import Verifier
from benchmarks.fuzz_engine import Target
from benchmarks.fuzz_schemas import (
    json_for,
    mutate_bytes,
    mutate_tree,
    mutated,
    payloads,
    vary_payload,
    vary_tree,
)
from edge.nfc.records import (
    MAX_NDEF_BYTES,
    TAG_RECORD_TYPE,
    TagInfo,
    decode_message,
    decode_tag_record,
    encode_message,
    summarize,
    tag_id_from_uri,
)
from edge.simstore import STORE_UUID, default_zones
from gateway.config import load_config
from gateway.inbound import InboundRouter
from gateway.parts import GatewayParts
from hq.board import STATE_FILTER, GatewayBoard
from hq.consent import PURPOSES
from hq.db import HqDb
from hq.ingest import Ingest
from hq.router import Handler, Reply, Route, Router
from hq.service import HqService

__all__ = ["TARGETS", "Rig", "build_target"]

STORE, GATEWAY, PEER = "store-f", "gw-f", "gw-peer"


class Rig:
    """HQ and one gateway of store :data:`STORE`, in ``root`` (see the module's doc)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.key = load_or_create_signing_key(root / "hq.pem")
        self.signer = Signer(self.key)
        self.verifier = Verifier(self.signer.public_raw)  # the test's own, to re-open envelopes
        self.hq_db = HqDb(f"sqlite:///{root}/hq.sqlite")
        self.svc = svc = HqService(self.hq_db, self.signer)
        setup_store(svc, STORE, default_zones(), STORE_UUID)
        zones = [z.id for z in svc.zones(STORE)]
        svc.upsert_campaign(Campaign(id="c-fuzz", name="fuzz", stores=[STORE],
                                     trigger=Trigger(kind="zone_enter", zones=zones[:1]),
                                     creatives=[Creative(id="a", title="hello")]))
        self.inboxes = [svc.enroll(list(PURPOSES), [STORE]).inbox for _ in range(2)]
        self.cfg = load_config({"gateway": GATEWAY, "store": STORE, "data_dir": str(root / "gw"),
                                "hq_public_key": public_key_pem(self.signer.public_key),
                                "scanner": {"backend": "sim"}})
        self.parts = self.open_gateway()
        self.bundle = svc.build_bundle(STORE)
        self.router = InboundRouter(self.parts)
        self.router.route(topics.bundle(STORE), self.signer.sign("bundle", self.bundle))
        if self.parts.bundles.current is None:
            raise RuntimeError(f"the rig's own bundle was refused: {self.parts.bundles.rejected}")
        self.tokens = [t for table in self.bundle.token_tables for t in table.tokens][:8]
        self.vocab = [STORE, GATEWAY, PEER, "c-fuzz", "a", "offers", "tap", "scan", *zones,
                      *self.inboxes, *self.tokens, *(b.id for b in self.bundle.beacons)]

    def open_gateway(self) -> GatewayParts:
        return GatewayParts.open(self.cfg, notify=lambda kind, data: None, on_bundle=lambda: None)

    def sign_raw(self, kind: str, raw: bytes, *, forge: bool = False) -> bytes:
        """An envelope around ``raw`` with HQ's key (over other bytes when ``forge``)."""
        sig = self.key.sign(raw + b"x" if forge else raw)
        return encode(SignedEnvelope(v=SCHEMA_VERSION, kind=kind, kid=self.signer.kid,  # type: ignore[arg-type]
                                     body=base64.b64encode(raw).decode(),
                                     sig=base64.b64encode(sig).decode()))

    def close(self) -> None:
        self.parts.close()
        self.hq_db.close()


# ---- ndef -------------------------------------------------------------------------------
class _TagBody(msgspec.Struct):
    """The shape of our tag record's JSON payload, for the strategy."""

    v: int
    id: str
    z: str | None = None
    p: str | None = None


def _ndef_target(rig: Rig) -> Target:
    info = TagInfo(tag_id="shelf-7", zone="produce", product="apples")
    samples = [encode_message(uri="https://shop.example/t?t=shelf-7", info=info),
               encode_message(uri="https://shop.example/x", title="Apples", info=info),
               b"".join(ndef.message_encoder([ndef.TextRecord("hello", "en")])),
               encode_message(uri="https://shop.example/t?t=a&t=b")]
    ours = payloads(_TagBody, rig.vocab).map(
        lambda p: b"".join(ndef.message_encoder([ndef.Record(TAG_RECORD_TYPE, "", p)])))
    inputs = st.one_of(st.binary(max_size=300), mutated(samples), ours,
                       st.binary(min_size=1, max_size=64).map(lambda b: b * (MAX_NDEF_BYTES // len(b))))
    seen: dict[str, int] = {}

    def feed(octets: bytes) -> None:
        decode_tag_record(octets)
        records = decode_message(octets)
        if records is None:
            seen["refused"] = seen.get("refused", 0) + 1
            return
        summary = summarize(records)
        msgspec.json.encode(summary)  # it goes to logs and JSON output as it is
        for rec in summary:
            kind = str(rec["type"])
            seen[kind] = seen.get(kind, 0) + 1
            if "uri" in rec:
                tag_id_from_uri(str(rec["uri"]))

    return Target("ndef", inputs, feed, outcomes=lambda: dict(seen), vary=mutate_bytes)


# ---- gateway: every inbound kind ---------------------------------------------------------
def _gateway_samples(rig: Rig) -> dict[topics.Kind, tuple[type[msgspec.Struct], list[bytes]]]:
    now, inbox, token = time.time(), rig.inboxes[0], rig.tokens[0]
    beacon = rig.bundle.beacons[0]
    K = topics.Kind
    return {
        K.SIGHTINGS: (PhoneSighting, [encode(PhoneSighting(v=1, token=token, beacon=beacon.id,
                                                           rssi=-60, ts=now))]),
        K.INTERACTIONS: (InteractionReport, [encode(InteractionReport(
            v=1, id="r1", kind="tap", token=token, tag="shelf-7", ts=now, zone=beacon.zone))]),
        K.GATEWAY_ACKS: (BatchAck, [encode(BatchAck(v=1, batch="b1", stored=3))]),
        K.GATEWAY_PRESENCE: (SightingSummary, [encode(SightingSummary(
            v=1, store=STORE, gateway=PEER, ts=now,
            sightings=[ShopperSighting(inbox, beacon.zone, 2.5, False, 1.0)]))]),
        K.GATEWAY_EVENTS: (EventBatch, [encode(EventBatch(v=1, store=STORE, gateway=PEER, events=[
            Event(id="e1", kind="offer_published", ts=now, store=STORE, gateway=PEER,
                  campaign="c-fuzz", inbox=inbox, offer="o1")]))]),
        K.BUNDLE: (SignedEnvelope, [rig.signer.sign("bundle", rig.bundle)]),
        K.BUNDLE_DELTA: (SignedEnvelope, [rig.signer.sign("delta", BundleDelta(
            v=1, seq=1, store=STORE, issued_at=now, expires_at=now + 600, paused=["c-fuzz"]))]),
    }


def _level(vocab: list[str]) -> st.SearchStrategy[str]:
    """A topic level: mostly a real id, so most inputs reach a handler."""
    known = st.sampled_from(vocab)
    return st.one_of(known, known, known, st.text(max_size=12))


def _topics_for(kind: topics.Kind, rig: Rig) -> st.SearchStrategy[str]:
    """Mostly the topic the sample's sender uses, else other levels, stores or any text."""
    level = _level(rig.vocab)
    peer = kind in (topics.Kind.GATEWAY_PRESENCE, topics.Kind.GATEWAY_EVENTS)
    right = st.just(topics.build(kind, store=STORE, gateway=PEER if peer else GATEWAY,
                                 inbox=rig.inboxes[0]))
    own = st.builds(lambda g, i: topics.build(kind, store=STORE, gateway=g, inbox=i), level, level)
    other = st.builds(lambda s, g, i: topics.build(kind, store=s, gateway=g, inbox=i),
                      level, level, level)
    return st.one_of(right, right, right, own, other, st.text(max_size=60))


def _vary_message(case: tuple[str, bytes], rng: random.Random) -> tuple[str, bytes]:
    return case[0], vary_payload(case[1], rng)


def _gateway_mqtt_target(rig: Rig) -> Target:
    router, parts = rig.router, rig.parts
    cases = []
    for kind, (schema, samples) in _gateway_samples(rig).items():
        body = st.one_of(payloads(schema, rig.vocab), mutated(samples), st.binary(max_size=200))
        cases.append(st.tuples(_topics_for(kind, rig), body))

    def feed(case: tuple[str, bytes]) -> None:
        router.route(*case)

    def outcomes() -> dict[str, int]:
        return {**parts.counters.bad_payloads, "sightings_in": parts.counters.sightings_in,
                "tap_reports": int(parts.taps.stats.get("reports", 0))}

    return Target("gateway-mqtt", st.one_of(*cases), feed, outcomes=outcomes, vary=_vary_message)


# ---- gateway: signed bundles and deltas ---------------------------------------------------
def _check_applied(rig: Rig, kind: str, envelope: bytes) -> None:
    """What the gateway applied is a valid, signed, live body of its store (raises if not)."""
    if kind == "bundle":
        b = decode(rig.verifier.open(envelope, "bundle"), Bundle)
        store, expires = b.store.id, b.expires_at
    else:
        d = decode(rig.verifier.open(envelope, "delta"), BundleDelta)
        store, expires = d.store, d.expires_at
    if store != STORE or expires <= time.time():
        raise AssertionError(f"applied a {kind} of store {store!r} expiring at {expires}")


def _bundles_target(rig: Rig) -> Target:
    parts, router = rig.parts, rig.router
    now = time.time()
    real = {"bundle": msgspec.to_builtins(rig.bundle),
            "delta": msgspec.to_builtins(BundleDelta(
                v=1, seq=1, store=STORE, issued_at=now, expires_at=now + 600,
                paused=["c-fuzz"], campaigns=list(rig.bundle.campaigns)))}
    schema = {"bundle": msgspec.inspect.type_info(Bundle), "delta": msgspec.inspect.type_info(BundleDelta)}

    def trees(kind: str) -> st.SearchStrategy[Any]:
        value = st.one_of(json_for(schema[kind], rig.vocab, 1), st.integers(), st.text(max_size=20))
        edit = st.builds(lambda r, v: mutate_tree(real[kind], r, v),
                         st.randoms(use_true_random=True), value)
        return st.one_of(edit, edit, json_for(schema[kind], rig.vocab))

    case = st.one_of(*(st.tuples(st.just(k), trees(k), st.sampled_from(("fit", "fit", "asis", "forge")))
                       for k in ("bundle", "delta")))
    envelopes = st.one_of(mutated([rig.signer.sign("bundle", rig.bundle)]).map(lambda b: ("bundle", b)),
                          st.binary(max_size=200).map(lambda b: ("delta", b)))
    stats = {"applied": 0, "refused": 0}

    def fit(kind: str, tree: Any) -> None:
        """Make the stale/expired/wrong-store checks pass, so the hostile part is reached."""
        if not isinstance(tree, dict):
            return
        tree["expires_at"] = time.time() + 600
        if kind == "bundle":
            tree["version"] = parts.bundles.version + 1
            if isinstance(tree.get("store"), dict):
                tree["store"] = {**tree["store"], "id": STORE}
        else:
            tree["seq"], tree["store"] = parts.bundles.delta_seq + 1, STORE

    def feed(c: tuple[str, Any] | tuple[str, Any, str]) -> None:
        kind = c[0]
        if len(c) == 2:
            envelope = c[1]
        else:
            tree, mode = c[1], c[2]
            if mode == "fit":
                tree = dict(tree) if isinstance(tree, dict) else tree
                fit(kind, tree)
            envelope = rig.sign_raw(kind, msgspec.json.encode(tree), forge=mode == "forge")
        before = (parts.bundles.version, parts.bundles.delta_seq)
        router.route(topics.bundle(STORE) if kind == "bundle" else topics.bundle_delta(STORE),
                     envelope)
        changed = (parts.bundles.version, parts.bundles.delta_seq) != before
        stats["applied" if changed else "refused"] += 1
        if changed:
            _check_applied(rig, kind, envelope)

    def check() -> list[str]:
        again = rig.open_gateway()  # what a restart does with the persisted bundle and deltas
        try:
            if again.bundles.current is None:
                return ["the gateway lost its bundle: none loads from its database after the run"]
            return []
        finally:
            again.close()

    def outcomes() -> dict[str, int]:
        return {**stats, **{f"rejected_{k}": v for k, v in parts.bundles.rejected.items()}}

    def vary(c: tuple[str, Any] | tuple[str, Any, str], rng: random.Random) -> Any:
        if len(c) == 2:
            return c[0], mutate_bytes(c[1], rng)
        return c[0], vary_tree(c[1], rng), c[2]

    return Target("gateway-bundles", st.one_of(case, case, case, envelopes), feed, check=check,
                  outcomes=outcomes, vary=vary)


# ---- HQ: events, feedback, gateway state --------------------------------------------------
def _hq_target(rig: Rig) -> Target:
    replies: list[Reply] = []
    unsendable = [0]
    ingest, board = Ingest(rig.hq_db, reply=replies.append), GatewayBoard()
    caught: list[str] = []

    def watched(handler: Handler) -> Handler:
        """``handler`` keeping the traceback of what the router will catch and count."""
        async def call(msg: aiomqtt.Message) -> Reply | None:
            try:
                return await handler(msg)
            except Exception:
                caught.append(traceback.format_exc())
                raise
        return call

    router = Router([Route("events", topics.HQ_EVENTS_SHARED, watched(ingest.on_events)),
                     Route("feedback", topics.HQ_FEEDBACK_SHARED, watched(ingest.on_feedback)),
                     Route("state", STATE_FILTER, watched(board.on_state_message))],
                    reply=replies.append)
    loop = asyncio.new_event_loop()
    now, inbox = time.time(), rig.inboxes[0]
    level = _level(rig.vocab)
    shapes: list[tuple[Callable[[str, str], str], type[msgspec.Struct], bytes]] = [
        (topics.gateway_events, EventBatch, encode(EventBatch(v=1, store=STORE, gateway=GATEWAY,
            batch="b1", events=[Event(id="e1", kind="offer_published", ts=now, store=STORE,
                                      gateway=GATEWAY, campaign="c-fuzz", inbox=inbox, offer="o1")]))),
        (lambda s, g: topics.feedback(g), Feedback, encode(Feedback(
            v=1, id="f1", offer="o1", campaign="c-fuzz", store=STORE, inbox=inbox,
            kind="redeemed", ts=now))),
        (topics.gateway_state, GatewayState, encode(GatewayState(
            v=1, gateway=GATEWAY, store=STORE, status="online", version="1",
            metrics={"shoppers_present": 3.0}))),
    ]
    def topic_of(topic: Callable[[str, str], str], sender: str) -> st.SearchStrategy[str]:
        right = st.just(topic(STORE, sender))
        return st.one_of(right, right, right, st.builds(topic, level, level))

    cases = [st.tuples(topic_of(topic, inbox if schema is Feedback else GATEWAY),
                       st.one_of(payloads(schema, rig.vocab), mutated([sample]), st.binary(max_size=100)))
             for topic, schema, sample in shapes]

    def feed(case: tuple[str, bytes]) -> None:
        try:  # a topic the broker never delivers (empty, wildcards): not an input
            msg = aiomqtt.Message(case[0], case[1], qos=1, retain=False, mid=1, properties=None)
        except ValueError:
            unsendable[0] += 1
            return
        loop.run_until_complete(router.dispatch(msg))
        replies.clear()
        if caught:
            raise AssertionError(f"HQ's router caught a handler failure:\n{caught.pop()}")

    def outcomes() -> dict[str, int]:
        s = ingest.stats
        return {"batches": s.batches, "events": s.events_ingested, "feedback": s.feedback,
                "states": board.stats.states, "unsendable_topics": unsendable[0],
                **{f"bad_{k}": v for k, v in s.bad_payloads.items()},
                **{f"refused_{k}": v for k, v in s.feedback_refused.items()}}

    return Target("hq-mqtt", st.one_of(*cases), feed, outcomes=outcomes,
                  close=loop.close, vary=_vary_message)


TARGETS = {"ndef": _ndef_target, "gateway-mqtt": _gateway_mqtt_target,
           "gateway-bundles": _bundles_target, "hq-mqtt": _hq_target}


def build_target(name: str, rig: Rig) -> Target:
    return TARGETS[name](rig)
