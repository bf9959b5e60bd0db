"""Staff minting: ``aislecast qr --hq`` and ``aislecast tags write --hq`` ask a real HQ
(HqServer on a free port, private broker) for the tag's short link, so the QR label and
the NFC tag carry the same code with src=qr / src=nfc; a label sheet mints per row."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image

from aislecast.apps.cli import main
from aislecast.kernel.broker import MosquittoProcess
from aislecast.kernel.errors import ConfigError
from aislecast.kernel.mqtt import MqttSettings
from aislecast.kernel.schema import Store, Zone
from edge.nfc.emulator import CardEmulator, Type2Card, free_udp_port, type2_image
from firmware_config.qr import HQ_TOKEN_ENV, mint_link
from hq.registry import tags
from hq.server import HqServer
from tests.harness import token_for
from tests.nfc.nfc_helpers import CARD_WAIT_S

LANDING = "https://shop.example/coffee"


@contextlib.asynccontextmanager
async def _hq(broker: MosquittoProcess, work: Path) -> AsyncIterator[tuple[HqServer, str]]:
    """HQ, with AISLECAST_HQ_TOKEN set to a store_staff token for s1 (as staff would)."""
    async with HqServer(db_url=f"sqlite:///{work}/hq.sqlite", key_path=work / "hq.pem",
                        mqtt=MqttSettings(port=broker.port), http_port=0, learn_every_s=0) as hq:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(HQ_TOKEN_ENV, token_for(hq.db, "store_staff", stores=["s1"]))
            yield hq, f"http://127.0.0.1:{hq.http_port}"


def _code(url: str) -> tuple[str, dict[str, list[str]]]:
    parts = urlsplit(url)
    return parts.path.rsplit("/", 1)[-1], parse_qs(parts.query)


async def test_qr_and_nfc_carry_the_same_minted_link(
        broker: MosquittoProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    zxingcpp = pytest.importorskip("zxingcpp", reason="pip install zxing-cpp to decode")
    async with _hq(broker, tmp_path) as (hq, base):
        png = tmp_path / "label.png"
        assert await asyncio.to_thread(main, [
            "qr", "--hq", base, "--tag-id", "T-7", "--store", "s1", "--url", LANDING,
            "-o", str(png)]) == 0
        assert "minted" in capsys.readouterr().out
        [decoded] = [r.text for r in zxingcpp.read_barcodes(Image.open(png))]
        code, query = _code(decoded)
        assert decoded.startswith(f"{base}/s/{code}?")
        assert query == {"src": ["qr"], "t": ["T-7"]}

        await asyncio.to_thread(hq.service.upsert_store, Store(id="s1", name="S1"))
        await asyncio.to_thread(hq.service.upsert_zone, "s1", Zone(id="coffee", name="Coffee"))
        port = free_udp_port()
        dev = f"udp:127.0.0.1:{port}"
        with CardEmulator(port, Type2Card(type2_image(b"", data_size=496)), presentations=2,
                          timeout=CARD_WAIT_S):
            assert await asyncio.to_thread(main, [
                "tags", "write", "--device", dev, "--tag-id", "T-7", "--store", "s1",
                "--zone", "coffee", "--hq", base, "--url", LANDING, "--timeout", "5"]) == 0
            err = capsys.readouterr().err
            assert f"reused {base}/s/{code} for tag T-7" in err
            assert "registered tag T-7 at HQ for store s1" in err
            assert await asyncio.to_thread(main, [
                "tags", "read", "--device", dev, "--json", "--timeout", "5"]) == 0
        uri = json.loads(capsys.readouterr().out)["records"][0]["uri"]
        assert _code(uri) == (code, {"src": ["nfc"], "t": ["T-7"]})
        rows = hq.db.query("SELECT code, url, store, tag FROM shortlinks")
        assert rows == [(code, LANDING, "s1", "T-7")]  # one link for both
        [tag] = await asyncio.to_thread(tags, hq.service, "s1")  # HQ's tag registry has it
        assert (tag.id, tag.zone, tag.code, tag.url) == ("T-7", "coffee", code, uri)
        assert tag.written_by.startswith("token:") and tag.written_at > 0


async def test_sheet_mints_per_row_and_reuses(broker: MosquittoProcess, tmp_path: Path) -> None:
    sheet = tmp_path / "tags.csv"
    sheet.write_text("tag_id,zone,product,url\n"
                     "T-1,aisle-3,Coffee,https://shop.example/coffee\n"
                     "T-2,dairy,Milk,https://shop.example/milk\n", encoding="utf-8")
    async with _hq(broker, tmp_path) as (hq, base):
        for _ in range(2):  # the second run reuses every code
            assert await asyncio.to_thread(main, [
                "qr", "--hq", base, "--store", "s1", "--sheet", str(sheet),
                "-o", str(tmp_path / "sheet.svg")]) == 0
        rows = hq.db.query("SELECT tag, url, store FROM shortlinks ORDER BY tag")
        assert rows == [("T-1", "https://shop.example/coffee", "s1"),
                        ("T-2", "https://shop.example/milk", "s1")]
        codes = [c for (c,) in hq.db.query("SELECT code FROM shortlinks ORDER BY tag")]
        svg = (tmp_path / "sheet.svg").read_text(encoding="utf-8")
        assert all(f"/s/{c}" in svg for c in codes)  # captions print the short links
        again = await asyncio.to_thread(mint_link, base, "https://shop.example/milk",
                                        tag="T-2", store="s1")
        assert not again.created and again.code == codes[1]


async def test_mint_errors_are_actionable(broker: MosquittoProcess, tmp_path: Path) -> None:
    async with _hq(broker, tmp_path) as (_, base):
        with pytest.raises(ConfigError, match="HQ refused the short link \\(422\\)"):
            await asyncio.to_thread(mint_link, base, LANDING, tag="bad tag with spaces")
    with pytest.raises(ConfigError, match="not an http"):
        mint_link("hq.example", LANDING, token="x")  # noqa: S106 - not a real token
    with pytest.raises(ConfigError, match="AISLECAST_HQ_TOKEN: is not set"):
        mint_link("https://hq.example", LANDING, token="")
    assert await asyncio.to_thread(
        main, ["qr", "--tag-id", "T-1", "--url", LANDING, "-o", str(tmp_path / "x.png")]) == 1


async def test_a_tag_hq_cannot_register_is_one_clear_line(
        broker: MosquittoProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with _hq(broker, tmp_path) as (hq, base):
        await asyncio.to_thread(hq.service.upsert_store, Store(id="s1", name="S1"))
        port = free_udp_port()
        with CardEmulator(port, Type2Card(type2_image(b"", data_size=496)), presentations=1,
                          timeout=CARD_WAIT_S):
            code = await asyncio.to_thread(main, [
                "tags", "write", "--device", f"udp:127.0.0.1:{port}", "--tag-id", "T-8",
                "--store", "s1", "--zone", "frozen", "--hq", base, "--url", LANDING,
                "--timeout", "5"])
        err = capsys.readouterr().err
        assert code != 0
        [line] = [ln for ln in err.splitlines() if ln.startswith("aislecast: error:")]
        assert "the tag was written, but HQ did not register it (422)" in line
        assert "no zone 'frozen'" in line and "Traceback" not in err
        assert await asyncio.to_thread(tags, hq.service, "s1") == []
