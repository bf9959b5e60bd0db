"""scripts/fuzz_http.py's schemathesis run and its reading of the run's events, against
a small real server with one route that fails with a 500 and one that works."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import uvicorn
from fastapi import FastAPI

from aislecast.kernel.broker import free_port

ROOT = Path(__file__).resolve().parent.parent


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_http", ROOT / "scripts" / "fuzz_http.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up while being built
    spec.loader.exec_module(module)
    return module


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/ok/{n}")
    async def ok(n: int) -> dict[str, int]:
        return {"n": n}

    @app.get("/boom/{n}")
    async def boom(n: int) -> dict[str, float]:
        return {"n": 1 / (n - n)}  # always a ZeroDivisionError: a 500

    return app


@pytest.mark.slow
async def test_a_5xx_is_a_failure_printed_on_one_line_and_a_good_route_is_not(
        tmp_path: Path) -> None:
    fuzz = _script()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(_app(), host="127.0.0.1", port=port, log_level="critical"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.05)
        args = fuzz.parser().parse_args(["--max-examples", "5", "--max-time", "8", "--workers", "1"])
        url = f"http://127.0.0.1:{port}/openapi.json"
        rc, text, _ = await fuzz.schemathesis(url, fuzz.Seeded("t", "c", "i"), tmp_path, args)
    finally:
        server.should_exit = True
        await serving
    events = tmp_path / "events.ndjson"
    assert rc == 1, text
    found = fuzz.failures(events)
    assert {(f.check, f.operation, f.status) for f in found if f.check == "not_a_server_error"} == {
        ("not_a_server_error", "GET /boom/{n}", 500)}, [f.line() for f in found]
    line = next(f.line() for f in found if f.check == "not_a_server_error")
    assert "\n" not in line and f"GET http://127.0.0.1:{port}/boom/" in line
    assert not [f for f in found if f.operation == "GET /ok/{n}"]
    assert '"label":"GET /ok/{n}"' in events.read_text().replace(": ", ":")  # /ok was run
    sent, failed = fuzz.case_counts(events)
    assert 0 < failed < sent  # the "fuzz: N passed, N failed" line counts both routes' cases
