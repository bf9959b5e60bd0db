"""Structured logs: fields rendered as key=value and as JSON, one naming scheme, secrets
redacted, and the stdlib ``%s`` style still rendered the same way."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from aislecast.kernel.logs import REDACTED, get_logger, logger_name, setup_logging


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line]


def test_logger_names_follow_one_scheme() -> None:
    assert logger_name("hq.ingest") == "aislecast.hq.ingest"
    assert logger_name("gateway.app") == "aislecast.gateway.app"
    assert logger_name("edge.nfc._reader") == "aislecast.edge.nfc._reader"
    assert logger_name("aislecast.kernel.mqtt") == "aislecast.kernel.mqtt"
    assert logger_name("uvicorn.error") == "uvicorn.error"  # not ours: left alone
    assert get_logger("hq.server").name == "aislecast.hq.server"


def test_fields_render_as_key_value(restore_root: None, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info")
    get_logger("hq.ingest").info("batch stored", gateway="gw-1", events=12, note="two words")
    get_logger("hq.ingest").debug("not shown at info")
    [line] = _lines(capsys)
    assert line.endswith('aislecast.hq.ingest: batch stored gateway=gw-1 events=12 note="two words"')


def test_fields_render_as_json_lines(restore_root: None, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", json_lines=True)
    get_logger("hq.ingest").warning("bad payload dropped", kind="events", error="not JSON")
    [line] = _lines(capsys)
    rec = json.loads(line)
    assert rec["logger"] == "aislecast.hq.ingest" and rec["level"] == "warning"
    assert rec["msg"] == "bad payload dropped"
    assert (rec["kind"], rec["error"]) == ("events", "not JSON")


def test_stdlib_style_and_extra_fields_still_render(restore_root: None,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", json_lines=True)
    logging.getLogger("aislecast.gateway.app").info("bundle applied version=%d", 7,
                                                    extra={"store": "s1"})
    rec = json.loads(_lines(capsys)[0])
    assert (rec["msg"], rec["store"]) == ("bundle applied version=7", "s1")


@pytest.mark.parametrize("json_lines", [False, True])
def test_secrets_passed_as_fields_are_redacted(restore_root: None, json_lines: bool,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", json_lines=json_lines)
    log = get_logger("hq.server")
    fake = {"password": "hunter2", "token": "tok-abc", "secret": "s3cr3t", "admin_token": "adm-xyz"}
    log.info("connecting", user="hq-1", tokens_resolved=3, **fake)
    logging.getLogger("aislecast.hq.api").info("login", extra={"password": "hunter2", "user": "ann"})
    out = "\n".join(_lines(capsys))
    for secret in ("hunter2", "tok-abc", "s3cr3t", "adm-xyz"):
        assert secret not in out
    # positive witness: the records were written, with the harmless fields intact
    assert out.count(REDACTED) == 5
    assert "hq-1" in out and "ann" in out and "tokens_resolved" in out


def test_field_named_like_a_record_attribute_is_kept(restore_root: None,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info")
    get_logger("hq.api").info("store saved", name="Main street")
    assert _lines(capsys)[0].endswith('store saved name_="Main street"')


def test_exceptions_keep_their_traceback(restore_root: None, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info")
    try:
        raise ValueError("boom")
    except ValueError:
        get_logger("hq.tasks").exception("bundle republish failed", store="s1")
    out = "\n".join(_lines(capsys))
    assert "bundle republish failed store=s1" in out
    assert "ValueError: boom" in out
