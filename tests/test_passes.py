"""Wallet passes (hq.passes, hq.passes_api): a signed .pkpass with the stores' iBeacons
and the member QR, checked with OpenSSL against a test CA standing in for Apple's WWDR;
the Google Wallet loyalty object; refusals when not configured and for others' inboxes."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import io
import json
import zipfile
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from aislecast.apps.scenarios import DEMO_POSITION
from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.errors import ConfigError
from aislecast.kernel.schema import Beacon, Store, Zone
from aislecast.kernel.signing import Signer, load_or_create_signing_key
from hq.api import create_app
from hq.config import load_hq_config
from hq.db import HqDb
from hq.ingest import Ingest
from hq.passes import (
    MAX_LOCATIONS,
    PKPASS_TYPE,
    PassSettings,
    PassSubject,
    apple_pass_json,
    google_loyalty_object,
    serial_of,
)
from hq.passes_api import PassDesk
from hq.service import HqService
from tests.harness import STORE, bearer, stack, token_for

UUID = "e2c56db5-dffb-48d2-b060-d0f5a71096e0"
S1_AT = {"latitude": 52.5219, "longitude": -13.4132}


def _cert(subject: str, key: rsa.RSAPrivateKey, issuer: tuple[str, rsa.RSAPrivateKey] | None,
          ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    by_name = name if issuer is None else x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, issuer[0])])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(by_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(key if issuer is None else issuer[1], hashes.SHA256()))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A test 'WWDR' CA and a pass type certificate it issued, as PEM files."""
    d = tmp_path_factory.mktemp("pki")
    ca_key = rsa.generate_private_key(65537, 2048)
    key = rsa.generate_private_key(65537, 2048)
    files = {"wwdr": _cert("Test WWDR", ca_key, None, True).public_bytes(serialization.Encoding.PEM),
             "cert": _cert("Pass Type ID: pass.com.example.test", key, ("Test WWDR", ca_key),
                           False).public_bytes(serialization.Encoding.PEM),
             "key": key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())}
    out = {}
    for name, data in files.items():
        (d / f"{name}.pem").write_bytes(data)
        out[name] = d / f"{name}.pem"
    return out


@pytest.fixture
def desk(pki: dict[str, Path]) -> PassDesk:
    """Loaded off the event loop, as HqServer does before it serves."""
    return PassDesk(_settings(pki))


def _settings(pki: dict[str, Path]) -> PassSettings:
    return PassSettings(apple_cert=str(pki["cert"]), apple_key=str(pki["key"]),
                        apple_wwdr=str(pki["wwdr"]), pass_type_id="pass.com.example.test",  # noqa: S106
                        team_id="ABCDE12345", organization="Corner Shop",
                        google_issuer_id="3388000000012345678")


def _client(tmp_path: Path, passes: PassDesk | None) -> tuple[httpx.AsyncClient, HqDb]:
    db = HqDb(f"sqlite:///{tmp_path / 'hq.sqlite'}")
    svc = HqService(db, Signer(load_or_create_signing_key(tmp_path / "k.pem")))
    for s, n in (("s1", 3), ("s2", 2)):  # s1 has a position, s2 none
        at = (S1_AT["latitude"], S1_AT["longitude"]) if s == "s1" else (None, None)
        svc.upsert_store(Store(s, f"Store {s}", latitude=at[0], longitude=at[1]))
        svc.upsert_zone(s, Zone("dairy", "Dairy"))
        for i in range(n):
            svc.upsert_beacon(s, Beacon(f"b{i}", "dairy", uuid=UUID, major=ord(s[1]), minor=i))
    svc.upsert_beacon("s1", Beacon("eddy", "dairy", namespace="00" * 10, instance="00" * 6))
    app = create_app(svc, Ingest(db), passes=passes)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hq"), db


async def _run(argv: list[str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    return await proc.wait(), err.decode()


async def _enrol(c: httpx.AsyncClient, db: HqDb, homes: list[str]) -> tuple[str, dict[str, str]]:
    r = await c.post("/api/shoppers", json={"home_stores": homes},
                     headers=bearer(token_for(db, "wallet")))
    assert r.status_code == 201, r.text
    return r.json()["inbox"], bearer(r.json()["api_token"])


async def test_pkpass_is_signed_and_lists_the_home_stores_beacons(
        tmp_path: Path, pki: dict[str, Path], desk: PassDesk) -> None:
    c, db = _client(tmp_path, desk)
    async with c:
        inbox, me = await _enrol(c, db, ["s1"])
        member = (await c.post(f"/api/shoppers/{inbox}/member",
                               headers=bearer(token_for(db, "wallet")))).json()["member"]
        r = await c.get(f"/api/shoppers/{inbox}/pass.pkpass", headers=me)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == PKPASS_TYPE
    z = zipfile.ZipFile(io.BytesIO(r.content))
    names = set(z.namelist())
    assert {"pass.json", "manifest.json", "signature", "icon.png", "logo.png"} <= names
    manifest = json.loads(z.read("manifest.json"))
    assert set(manifest) == names - {"manifest.json", "signature"}
    for name, digest in manifest.items():
        assert hashlib.sha1(z.read(name)).hexdigest() == digest, name  # noqa: S324
    # the signature verifies over manifest.json, chained to the (test) WWDR certificate
    for name in ("manifest.json", "signature"):
        (tmp_path / name).write_bytes(z.read(name))
    verify = ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in",
              str(tmp_path / "signature"), "-content", str(tmp_path / "manifest.json"),
              "-CAfile", str(pki["wwdr"]), "-purpose", "any", "-out", "/dev/null"]
    code, err = await _run(verify)
    assert code == 0 and "Verification successful" in err, err
    (tmp_path / "manifest.json").write_bytes(z.read("manifest.json").replace(b"}", b" }"))
    code, err = await _run(verify)
    assert code != 0 and "Verification failure" in err, "a changed manifest must not verify"
    carried = pkcs7.load_der_pkcs7_certificates(z.read("signature"))
    assert {x.subject.rfc4514_string() for x in carried} == {
        "CN=Test WWDR", "CN=Pass Type ID: pass.com.example.test"}
    body = json.loads(z.read("pass.json"))
    assert body["formatVersion"] == 1 and body["passTypeIdentifier"] == "pass.com.example.test"
    assert body["teamIdentifier"] == "ABCDE12345" and body["organizationName"] == "Corner Shop"
    assert body["barcodes"] == [{"format": "PKBarcodeFormatQR", "message": member,
                                 "messageEncoding": "iso-8859-1", "altText": member}]
    assert body["serialNumber"] == serial_of(member) and inbox not in json.dumps(body)
    # only s1 (the home store), only iBeacons (not the Eddystone one)
    assert [(b["proximityUUID"], b["major"], b["minor"]) for b in body["beacons"]] == [
        (UUID.upper(), ord("1"), i) for i in range(3)]
    assert body["beacons"][0]["relevantText"] == "Your offers at Store s1"
    # s1's position, as Apple's locations (no altitude)
    assert body["locations"] == [S1_AT | {"relevantText": "Store s1: your offers are here"}]
    assert "relevantDate" not in body and "storeCard" in body


async def test_google_object_and_refusals(tmp_path: Path, desk: PassDesk) -> None:
    c, db = _client(tmp_path, desk)
    async with c:
        inbox, me = await _enrol(c, db, [])  # no home store: every store's beacons
        other, _ = await _enrol(c, db, [])
        g = await c.get(f"/api/shoppers/{inbox}/pass/google", headers=me)
        apple = await c.get(f"/api/shoppers/{inbox}/pass.pkpass",
                            headers=bearer(token_for(db, "admin")))
        theirs = await c.get(f"/api/shoppers/{other}/pass.pkpass", headers=me)
        theirs_g = await c.get(f"/api/shoppers/{other}/pass/google", headers=me)
        nobody = await c.get("/api/shoppers/0123456789abcdef/pass/google", headers=me)
        staff = await c.get(f"/api/shoppers/{inbox}/pass/google",
                            headers=bearer(token_for(db, "analyst")))
    assert g.status_code == 200, g.text
    obj = g.json()
    member = obj["accountId"]
    assert obj == {"id": f"3388000000012345678.{serial_of(member)}",
                   "classId": "3388000000012345678.loyalty", "state": "ACTIVE",
                   "accountId": member, "accountName": "Corner Shop member",
                   "barcode": {"type": "QR_CODE", "value": member, "alternateText": member},
                   "merchantLocations": [S1_AT]}  # every store's position: s2 has none
    assert apple.status_code == 200  # an admin may fetch it too
    body = json.loads(zipfile.ZipFile(io.BytesIO(apple.content)).read("pass.json"))
    assert body["barcodes"][0]["message"] == member  # the same member id on both passes
    assert len(body["beacons"]) == 5  # s1's three and s2's two
    assert [(p["latitude"], p["longitude"]) for p in body["locations"]] == [
        (S1_AT["latitude"], S1_AT["longitude"])]
    assert theirs.status_code == theirs_g.status_code == nobody.status_code == 404
    assert theirs.json() == nobody.json() | {"detail": theirs.json()["detail"]}
    assert staff.status_code == 403


async def test_a_home_store_without_a_position_gives_no_locations(
        tmp_path: Path, desk: PassDesk) -> None:
    c, db = _client(tmp_path, desk)
    async with c:
        inbox, me = await _enrol(c, db, ["s2"])
        apple = await c.get(f"/api/shoppers/{inbox}/pass.pkpass", headers=me)
        google = await c.get(f"/api/shoppers/{inbox}/pass/google", headers=me)
    assert apple.status_code == google.status_code == 200, (apple.text, google.text)
    body = json.loads(zipfile.ZipFile(io.BytesIO(apple.content)).read("pass.json"))
    assert [b["major"] for b in body["beacons"]] == [ord("2")] * 2  # the witness: s2's pass
    assert "locations" not in body and "merchantLocations" not in google.json()


def test_at_most_ten_locations(pki: dict[str, Path]) -> None:
    stores = [(Store(f"s{i}", f"Store {i}", latitude=i, longitude=-i), []) for i in range(12)]
    subject = PassSubject("m-1", [(Store("x", "No position"), []), *stores])
    apple = apple_pass_json(_settings(pki), subject)["locations"]
    google = google_loyalty_object(_settings(pki), subject)["merchantLocations"]
    assert len(apple) == len(google) == MAX_LOCATIONS == 10
    assert [p["latitude"] for p in apple] == [p["latitude"] for p in google] == list(range(10))
    assert apple[3]["relevantText"] == "Store 3: your offers are here"


async def test_not_configured_is_a_clear_409(tmp_path: Path) -> None:
    c, db = _client(tmp_path, None)
    async with c:
        inbox, me = await _enrol(c, db, [])
        apple = await c.get(f"/api/shoppers/{inbox}/pass.pkpass", headers=me)
        google = await c.get(f"/api/shoppers/{inbox}/pass/google", headers=me)
        consent = await c.get(f"/api/shoppers/{inbox}/consent", headers=me)  # the witness
    assert consent.status_code == 200
    assert apple.status_code == google.status_code == 409
    assert apple.json()["reason"] == google.json()["reason"] == "passes_not_configured"
    assert "passes.apple_cert" in apple.json()["detail"]
    assert "passes.google_issuer_id" in google.json()["detail"]


def test_config_checks_passes_at_start(tmp_path: Path, pki: dict[str, Path]) -> None:
    good = load_hq_config(None, {"passes.apple_cert": str(pki["cert"]),
                                 "passes.apple_key": str(pki["key"]),
                                 "passes.apple_wwdr": str(pki["wwdr"]),
                                 "passes.pass_type_id": "pass.com.example.test",
                                 "passes.team_id": "ABCDE12345"})
    assert good.passes.apple_missing() == []
    with pytest.raises(ConfigError, match=r"passes.apple_key.*missing"):
        load_hq_config(None, {"passes.apple_cert": str(pki["cert"])})
    with pytest.raises(ConfigError, match=r"passes.apple_key.*not the key of"):
        load_hq_config(None, {"passes.apple_cert": str(pki["wwdr"]),
                              "passes.apple_key": str(pki["key"]),
                              "passes.apple_wwdr": str(pki["wwdr"]),
                              "passes.pass_type_id": "pass.com.example.test",
                              "passes.team_id": "ABCDE12345"})
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"passes.apple_wwdr.*PEM certificate"):
        load_hq_config(None, {"passes.apple_cert": str(pki["cert"]),
                              "passes.apple_key": str(pki["key"]),
                              "passes.apple_wwdr": str(tmp_path / "junk.pem"),
                              "passes.pass_type_id": "pass.com.example.test",
                              "passes.team_id": "ABCDE12345"})


async def test_hq_server_serves_the_pass_from_its_settings(
        broker: MosquittoProcess, tmp_path: Path, pki: dict[str, Path]) -> None:
    """HqServer loads [passes] at start; its store's beacons come out in the pass."""
    async with stack(broker.port, tmp_path, [], passes=_settings(pki)) as st, \
            httpx.AsyncClient(base_url=st.url) as http:
        r = await http.post("/api/shoppers", json={"home_stores": [STORE]},
                            headers=bearer(token_for(st.hq.db, "wallet")))
        assert r.status_code == 201, r.text
        e = r.json()
        got = await http.get(f"/api/shoppers/{e['inbox']}/pass.pkpass",
                             headers=bearer(e["api_token"]))
        want = [(b.uuid.upper(), b.major, b.minor) for b in st.hq.service.beacons(STORE)
                if b.uuid is not None][:10]
    assert got.status_code == 200, got.text
    body = json.loads(zipfile.ZipFile(io.BytesIO(got.content)).read("pass.json"))
    assert want and [(b["proximityUUID"], b["major"], b["minor"]) for b in body["beacons"]] == want
    # the demo store (aislecast.apps.scenarios.setup_store) has a position
    assert body["locations"] == [{"latitude": DEMO_POSITION[0], "longitude": DEMO_POSITION[1],
                                  "relevantText": "Aislecast Demo Market: your offers are here"}]
