"""Bundle-signing key rotation with an overlap (hq.keyring, gateway.keys), on a real
broker, HQ and gateway, driven by ``aislecast hq keys next|rotate|retire``."""

from __future__ import annotations

import asyncio
import base64
import json
import stat
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aislecast.apps.cli import main
from aislecast.kernel import topics
from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.schema import SCHEMA_VERSION, KeyNotice, SignedEnvelope, encode
from aislecast.kernel.signing import Signer, load_or_create_signing_key, public_key_pem
from gateway.app import Gateway
from hq.keyring import Keyring, KeyringError, ring_path
from tests.harness import STORE, Stack, enter_campaign, stack, until


def _keys(key: Path, *argv: str) -> int:
    return main(["hq", "keys", *argv, "--key", str(key)])


def _private(key: Path, kid: str) -> Ed25519PrivateKey:
    """The private half of ``kid`` as the keyring holds it (HQ's own key, signing a
    bundle HQ has not announced yet)."""
    entry = next(k for k in Keyring.load(key).keys if k.kid == kid)
    assert entry.private_key is not None
    private = serialization.load_pem_private_key(entry.private_key.encode(), password=None)
    assert isinstance(private, Ed25519PrivateKey)
    return private


async def _inject(st: Stack, key: Ed25519PrivateKey) -> int:
    """A bundle HQ would build, signed by ``key`` and published; returns its version."""
    bundle = await asyncio.to_thread(st.hq.service.build_bundle, STORE)
    await st.hq.link.publish(topics.bundle(STORE), Signer(key).sign("bundle", bundle), qos=1)
    return bundle.version


def _refused(gw: Gateway) -> int:
    return gw.parts.bundles.rejected.get("unknown_key", 0)


async def test_overlap_rotation_pins_next_then_retires_old(broker: MosquittoProcess,
                                                           tmp_path: Path) -> None:
    async with stack(broker.port, tmp_path, [enter_campaign("produce")],
                     keys_every_s=3600) as st:  # the test applies each change itself
        key = st.hq.key_path
        old = st.hq.service.signer.kid
        old_private = await asyncio.to_thread(load_or_create_signing_key, key)
        await st.hq.service.publish_bundle(STORE)
        gw = await st.start_gateway()  # pins the current key only (its config)
        pins = gw.parts.bundles.keys.verifier
        assert pins.kids == {old}

        # 1. next key made; before HQ announces it, a bundle it signs is refused
        assert await asyncio.to_thread(_keys, key, "next") == 0
        ring = await asyncio.to_thread(Keyring.load, key)
        new = next(k.kid for k in ring.keys if k.state == "next")
        version = gw.parts.bundles.version
        await _inject(st, await asyncio.to_thread(_private, key, new))
        await until(lambda: _refused(gw) == 1)
        assert gw.parts.bundles.version == version and pins.kids == {old}

        # 2. HQ applies the change: a bundle signed by the old key announces the next one
        assert await st.hq.keys.check()
        await until(lambda: pins.kids == {old, new})
        assert gw.parts.bundles.keys.stats.learned == 1
        m = gw.metrics()  # what the operator waits for before rotating
        assert (m["keys_pinned"], m["keys_learned"], m["bundle_rejected_unknown_key"]) == (2, 1, 1)
        # ... and from then on the next key's bundles are accepted, before any rotation
        accepted = await _inject(st, await asyncio.to_thread(_private, key, new))
        await until(lambda: gw.parts.bundles.version == accepted)

        # 3. rotate: HQ signs with the new key; the old one stays accepted meanwhile
        assert await asyncio.to_thread(_keys, key, "rotate") == 0
        assert await st.hq.keys.check()
        assert st.hq.service.signer.kid == new
        await until(lambda: gw.parts.bundles.version > accepted)  # HQ's, signed by the new key
        assert pins.kids == {old, new}
        late = await _inject(st, old_private)  # a bundle still in flight from the old key
        await until(lambda: gw.parts.bundles.version == late)

        # a restart keeps the learned key: its config still pins the old key only
        await st.stop_gateway(gw)
        gw = await st.start_gateway(hq_public_key=public_key_pem(old_private.public_key()))
        pins = gw.parts.bundles.keys.verifier
        assert pins.kids == {old, new} and gw.parts.bundles.version >= late

        # 4. retire: gateways drop the old key and refuse what it signs, for good
        assert await asyncio.to_thread(_keys, key, "retire") == 0
        assert await st.hq.keys.check()
        await until(lambda: pins.kids == {new})
        version = gw.parts.bundles.version
        await _inject(st, old_private)
        await until(lambda: _refused(gw) == 1)
        assert gw.parts.bundles.version == version
        await st.hq.service.publish_bundle(STORE)  # the witness: the new key still works
        await until(lambda: gw.parts.bundles.version > version)

        # a bundle claiming a key id nobody pins is refused and counted
        body = base64.b64encode(b"{}").decode()
        bogus = encode(SignedEnvelope(v=SCHEMA_VERSION, kind="bundle", kid="00" * 8, body=body,
                                      sig=base64.b64encode(b"\0" * 64).decode()))
        await st.hq.link.publish(topics.bundle(STORE), bogus, qos=1)
        await until(lambda: _refused(gw) == 2)
        assert gw.parts.bundles.rejected.get("forged", 0) == 0  # refused before any check

        # the retirement survives a restart, even with the old key still in the config
        await st.stop_gateway(gw)
        gw = await st.start_gateway(hq_public_key=[public_key_pem(old_private.public_key()),
                                                   public_key_pem(st.hq.service.signer.public_key)])
        assert gw.parts.bundles.keys.verifier.kids == {new}


async def test_a_gateway_that_pins_the_next_key_by_config_accepts_it(
        broker: MosquittoProcess, tmp_path: Path) -> None:
    async with stack(broker.port, tmp_path, [], keys_every_s=3600) as st:
        await st.hq.service.publish_bundle(STORE)
        nxt = Ed25519PrivateKey.generate()
        gw = await st.start_gateway(hq_public_key=[
            public_key_pem(st.hq.service.signer.public_key), public_key_pem(nxt.public_key())])
        accepted = await _inject(st, nxt)
        await until(lambda: gw.parts.bundles.version == accepted)
        stranger = await _inject(st, Ed25519PrivateKey.generate())
        await until(lambda: _refused(gw) == 1)
        assert gw.parts.bundles.version == accepted < stranger


async def test_a_running_hq_picks_up_the_cli_change_by_itself(broker: MosquittoProcess,
                                                               tmp_path: Path) -> None:
    async with stack(broker.port, tmp_path, [], keys_every_s=0.05) as st:
        await st.hq.service.publish_bundle(STORE)
        gw = await st.start_gateway()
        assert len(gw.parts.bundles.keys.verifier.kids) == 1
        assert await asyncio.to_thread(_keys, st.hq.key_path, "next") == 0
        await until(lambda: len(gw.parts.bundles.keys.verifier.kids) == 2)
        assert st.hq.keys.stats.changes == 1


def test_keyring_steps_are_refused_out_of_order(tmp_path: Path) -> None:
    key = tmp_path / "hq-signing.pem"
    legacy = load_or_create_signing_key(key)  # an HQ from before rotation
    ring = Keyring.load(key)
    assert [(k.kid, k.state) for k in ring.keys] == [(Signer(legacy).kid, "current")]
    for path in (key, ring_path(key)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(KeyringError, match="no next key"):
        ring.rotate()
    with pytest.raises(KeyringError, match="current key"):
        ring.retire(ring.current().kid)
    nxt = ring.add_next()
    with pytest.raises(KeyringError, match="already the next key"):
        ring.add_next()
    new, old = ring.rotate()
    assert (new.kid, old.kid) == (nxt.kid, Signer(legacy).kid)
    assert Signer(load_or_create_signing_key(key)).kid == new.kid  # the key file follows
    ring.add_next()
    with pytest.raises(KeyringError, match="retire"):
        ring.rotate()  # two old keys at once: retire the previous one first
    retired = ring.retire()
    assert retired.kid == old.kid and retired.private_key is None
    raw = ring_path(key).read_text()
    assert old.private_key is not None and old.private_key not in raw  # really deleted
    notices = Keyring.load(key).notices()
    assert KeyNotice(kid=old.kid, state="retired") in notices
    assert all(n.public_key for n in notices if n.state != "retired")
    assert json.loads(raw)["keys"][0]["state"] == "retired"
    assert msgspec.json.decode(msgspec.json.encode(notices), type=list[KeyNotice]) == notices


def test_cli_lists_keys_and_names_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    key = tmp_path / "hq-signing.pem"
    assert _keys(key, "rotate") == 1
    assert "no next key" in capsys.readouterr().err
    assert _keys(key, "next") == 0
    assert "keys rotate" in capsys.readouterr().out
    assert _keys(key, "list", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["state"] for r in rows] == ["current", "next"]
    assert all("BEGIN PUBLIC KEY" in r["public_key"] for r in rows)
    assert "private" not in json.dumps(rows)
