"""QR codes and label sheets: decode what we generate, and check the files are valid."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image

from aislecast.apps.cli import main
from aislecast.kernel.errors import ConfigError
from firmware_config.qr import Label, qr_matrix, read_labels, write_qr, write_sheet

URL = "https://hq.example.com/s/Ab3dE9z?src=qr"
SVG_NS = "{http://www.w3.org/2000/svg}"


def _pixel_grid(path: Path, modules: int, border: int) -> list[list[bool]]:
    """Sample the centre of every module of a PNG written by write_qr."""
    img = Image.open(path).convert("L")
    box = img.width // (modules + 2 * border)
    assert box * (modules + 2 * border) == img.width
    return [
        [img.getpixel(((border + x) * box + box // 2, (border + y) * box + box // 2)) == 0
         for x in range(modules)]
        for y in range(modules)
    ]


def _svg_root(path: Path) -> ET.Element:
    return ET.parse(path).getroot()  # noqa: S314 - our own output, parsed to validate it


def _pdf_pages(data: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page\b", data))


@pytest.mark.parametrize("ec", ["L", "M", "Q", "H"])
def test_png_pixels_are_the_qr_matrix(tmp_path: Path, ec: str) -> None:
    out = tmp_path / "code.png"
    m = write_qr(URL, out, ec=ec, size_px=330, border=4)
    assert m == qr_matrix(URL, ec=ec)
    assert _pixel_grid(out, len(m), 4) == m
    # Quiet zone is white all round.
    img = Image.open(out).convert("L")
    assert all(img.getpixel((x, 0)) == 255 for x in range(img.width))


def test_png_decodes_to_the_url(tmp_path: Path) -> None:
    zxingcpp = pytest.importorskip("zxingcpp", reason="pip install zxing-cpp to decode")
    out = tmp_path / "code.png"
    write_qr(URL, out, caption="T-0007 · aisle-3 · Coffee")
    results = zxingcpp.read_barcodes(Image.open(out))
    assert [r.text for r in results] == [URL]


def test_svg_is_valid_xml_with_the_matrix(tmp_path: Path) -> None:
    out = tmp_path / "code.svg"
    m = write_qr(URL, out, caption="Coffee <&> \"beans\"", size_px=600)
    root = _svg_root(out)
    assert root.tag == f"{SVG_NS}svg"
    assert root.get("width") == "600px"
    (text,) = root.iter(f"{SVG_NS}text")
    assert text.text == 'Coffee <&> "beans"'
    # Rebuild the matrix from the path's horizontal runs.
    d = next(root.iter(f"{SVG_NS}path")).get("d") or ""
    grid = [[False] * len(m) for _ in m]
    for x, y, w in re.findall(r"M([\d.]+) ([\d.]+)h([\d.]+)", d):
        for dx in range(round(float(w))):
            grid[round(float(y)) - 4][round(float(x)) - 4 + dx] = True
    assert grid == m


def test_svg_decodes_when_rasterised(tmp_path: Path) -> None:
    zxingcpp = pytest.importorskip("zxingcpp", reason="pip install zxing-cpp to decode")
    out = tmp_path / "code.svg"
    write_qr(URL, out, ec="H")
    root = _svg_root(out)
    _, _, vw, vh = (float(v) for v in (root.get("viewBox") or "").split())
    scale = 10
    img = Image.new("L", (round(vw * scale), round(vh * scale)), 255)
    d = next(root.iter(f"{SVG_NS}path")).get("d") or ""
    for x, y, w in re.findall(r"M([\d.]+) ([\d.]+)h([\d.]+)", d):
        x0, y0 = float(x) * scale, float(y) * scale
        img.paste(0, (round(x0), round(y0), round(x0 + float(w) * scale), round(y0 + scale)))
    assert [r.text for r in zxingcpp.read_barcodes(img)] == [URL]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"ec": "X"}, "error_correction"),
        ({"size_px": 5}, "size"),
        ({"border": 99}, "border"),
    ],
)
def test_bad_options_name_the_field(tmp_path: Path, kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        write_qr(URL, tmp_path / "x.png", **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert info.value.hint


def test_too_long_and_wrong_extension(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="too long"):
        write_qr("https://x/" + "a" * 3000, tmp_path / "x.png", ec="H")
    with pytest.raises(ConfigError, match=r"\.png or \.svg"):
        write_qr(URL, tmp_path / "x.jpg")


def _tags_csv(path: Path, n: int) -> Path:
    lines = ["tag_id,zone,product,code"]
    lines += [f"T-{i:04d},aisle-{i % 5 + 1},Product & co <{i}>,Code{i:03d}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_read_labels_builds_short_links(tmp_path: Path) -> None:
    labels = read_labels(_tags_csv(tmp_path / "t.csv", 2), base_url="https://hq.example.com/")
    assert labels[0] == Label("T-0000", "https://hq.example.com/s/Code000?src=qr",
                              "aisle-1", "Product & co <0>")
    assert labels[1].caption[-1] == "hq.example.com/s/Code001"
    bare = read_labels(tmp_path / "t.csv", base_url="https://hq.example.com", tag_source=False)
    assert bare[0].url == "https://hq.example.com/s/Code000"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("zone,product\naisle,x\n", "tag_id and url or code"),
        ("tag_id,code\n", "no labels"),
        ("tag_id,code\nT-1,bad code!\n", "t.csv:2: code"),
        ("tag_id,code\n,Abcd123\n", "t.csv:2: tag_id"),
    ],
)
def test_read_labels_errors(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "t.csv").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=match):
        read_labels(tmp_path / "t.csv", base_url="https://hq.example.com")


def test_code_column_needs_base_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        read_labels(_tags_csv(tmp_path / "t.csv", 1))
    assert info.value.field == "base_url"


def test_pdf_sheet_has_pages_and_decodable_codes(tmp_path: Path) -> None:
    labels = read_labels(_tags_csv(tmp_path / "t.csv", 32), base_url="https://hq.example.com")
    (out,) = write_sheet(labels, tmp_path / "sheet.pdf")
    data = out.read_bytes()
    assert data.startswith(b"%PDF-")
    assert data.rstrip().endswith(b"%%EOF")
    assert _pdf_pages(data) == 3  # 15 labels a page
    zxingcpp = pytest.importorskip("zxingcpp")
    from firmware_config.qr import _sheet_image  # noqa: PLC0415 - the page Pillow saved

    found = sorted(r.text for r in zxingcpp.read_barcodes(_sheet_image(labels[:15])))
    assert found == sorted(label.url for label in labels[:15])


def test_svg_sheet_pages_are_valid_xml(tmp_path: Path) -> None:
    labels = read_labels(_tags_csv(tmp_path / "t.csv", 16), base_url="https://hq.example.com")
    paths = write_sheet(labels, tmp_path / "sheet.svg")
    assert [p.name for p in paths] == ["sheet.svg", "sheet-2.svg"]
    first = _svg_root(paths[0])
    assert first.get("width") == "210mm"
    assert first.get("height") == "297mm"
    assert len(list(first.iter(f"{SVG_NS}path"))) == 15
    texts = [t.text for t in first.iter(f"{SVG_NS}text")]
    assert "Product & co <0>" in texts
    assert "hq.example.com/s/Code000" in texts
    assert len(list(_svg_root(paths[1]).iter(f"{SVG_NS}path"))) == 1


def test_cli_qr_png_and_sheet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["qr", "--url", URL, "-o", str(tmp_path / "a.png"), "--ec", "Q",
                 "--caption", "Coffee"]) == 0
    assert Image.open(tmp_path / "a.png").format == "PNG"
    csv = _tags_csv(tmp_path / "t.csv", 3)
    assert main(["qr", "--sheet", str(csv), "--base-url", "https://hq.example.com",
                 "-o", str(tmp_path / "s.pdf")]) == 0
    assert "3 labels" in capsys.readouterr().out
    # Bad input: an error message and exit 1, never a traceback.
    assert main(["qr", "--sheet", str(tmp_path / "missing.csv"), "-o",
                 str(tmp_path / "s.pdf")]) == 1
    assert "cannot read" in capsys.readouterr().err
    assert main(["qr", "--url", URL, "-o", str(tmp_path / "no" / "dir" / "a.png")]) == 1
    assert "cannot write" in capsys.readouterr().err
