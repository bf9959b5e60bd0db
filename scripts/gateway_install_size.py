#!/usr/bin/env python3
"""What ``pip install '.[gateway]'`` puts on a store gateway, measured in a fresh venv.

Copies this checkout (without .git, .venv and build output) to a temporary directory,
creates a venv there, measures its site-packages, installs ``.[gateway]``, measures
again, lists the distributions and checks that none of the web, numeric or imaging
stack came along. Then it runs the installed CLI: ``aislecast gateway --help`` and
``aislecast decode`` must work, ``aislecast hq serve`` must refuse and name the extra
to install. Needs a package index (or pip's cache); takes about 15-60 s.

    python3 scripts/gateway_install_size.py                  # summary on stderr
    python3 scripts/gateway_install_size.py --json > artifacts/install.json
    .venv/bin/python scripts/readme_numbers.py snapshot artifacts/install.json

Exit status 1 when a forbidden package is installed or a CLI check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path
from typing import Any

__all__ = ["FORBIDDEN", "main"]

ROOT = Path(__file__).resolve().parent.parent
# What a Pi must not install (pyproject's import-linter contract names the same stack).
FORBIDDEN = ("fastapi", "starlette", "uvicorn", "numpy", "pillow", "qrcode", "rich")
_IBEACON = "0201061aff4c000215f7826da64fa24e988024bc5b71e0893e00010002c5"
_MIB = 1024 * 1024


def _disk_usage(path: Path) -> int:
    """Bytes on disk under ``path``, as ``du`` counts them (allocated blocks)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            total += st.st_blocks * 512
    return total


def _run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)  # noqa: S603


def _checks(bin_dir: Path) -> dict[str, bool]:
    cli = str(bin_dir / "aislecast")
    helped = _run([cli, "gateway", "--help"])
    decoded = _run([cli, "decode", _IBEACON, "--json"])
    hq = _run([cli, "hq", "serve"])
    return {
        "gateway --help works": helped.returncode == 0 and "gateway run" in helped.stdout,
        "decode works": decoded.returncode == 0 and '"format":"ibeacon"' in decoded.stdout,
        "hq names its extra": hq.returncode != 0 and "aislecast[hq]" in hq.stderr,
    }


def measure(source: Path, work: Path) -> dict[str, Any]:
    tree = work / "src"
    shutil.copytree(source, tree, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "artifacts", "__pycache__", ".*_cache"))
    env_dir = work / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    site = Path(_run([str(bin_dir / "python"), "-c",
                      "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    before = _disk_usage(site)
    pip = _run([str(bin_dir / "python"), "-m", "pip", "install", "-q", f"{tree}[gateway]"])
    if pip.returncode != 0:
        raise RuntimeError(f"pip install failed:\n{pip.stderr[-2000:]}")
    after = _disk_usage(site)
    listed = json.loads(_run([str(bin_dir / "python"), "-m", "pip", "list", "--format=json"]).stdout)
    names = sorted(d["name"] for d in listed if d["name"].lower() not in {"pip", "setuptools"})
    return {"added": after - before, "total": after, "baseline": before, "packages": names,
            "forbidden": [n for n in names if n.lower() in FORBIDDEN], "checks": _checks(bin_dir),
            "python": _run([str(bin_dir / "python"), "--version"]).stdout.strip()}


def _as_results(m: dict[str, Any]) -> dict[str, Any]:
    common = {"benchmark": "install", "subject": "aislecast", "better": "lower"}
    return {"results": [
        common | {"metric": "site-packages added", "value": round(m["added"] / _MIB, 1), "unit": "MiB",
                  "extra": {"total_mib": round(m["total"] / _MIB, 1),
                            "fresh_venv_mib": round(m["baseline"] / _MIB, 1), "python": m["python"]}},
        common | {"metric": "distributions (besides pip, setuptools)", "value": len(m["packages"]),
                  "unit": "", "extra": {"names": " ".join(m["packages"])}},
        common | {"metric": "web/numeric/imaging packages", "value": len(m["forbidden"]), "unit": "",
                  "extra": {"names": " ".join(m["forbidden"]) or "none"}},
    ]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print `aislecast bench`-style JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aislecast-gw-install-") as tmp:
        try:
            m = measure(ROOT, Path(tmp))
        except RuntimeError as exc:
            print(f"gateway_install_size: {exc}", file=sys.stderr)
            return 2
    print(f"site-packages: {m['added'] / _MIB:.1f} MiB added to a fresh venv's "
          f"{m['baseline'] / _MIB:.1f} MiB (total {m['total'] / _MIB:.1f} MiB), {m['python']}\n"
          f"{len(m['packages'])} distributions: {' '.join(m['packages'])}\n"
          f"forbidden: {' '.join(m['forbidden']) or 'none'}", file=sys.stderr)
    for name, ok in m["checks"].items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}", file=sys.stderr)
    if args.json:
        print(json.dumps(_as_results(m), indent=2))
    return 0 if not m["forbidden"] and all(m["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
