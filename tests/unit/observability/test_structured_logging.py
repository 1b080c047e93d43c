"""configure_logging: JSON lines, redaction, tracebacks without locals, stdlib routing."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from daemon.observability.logging import REDACTED, configure_logging, get_logger


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


class TtyStream(io.StringIO):
    def isatty(self) -> bool:
        return True


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_log_call_is_one_json_line_with_time_level_event_and_fields() -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    log = get_logger(run_id="r-17")

    log.info("snapshot_created", server="ec200001", snapshot=104, took_s=12.5)

    [line] = lines(out)
    assert list(line)[:3] == ["timestamp", "level", "event"]
    assert line["event"] == "snapshot_created"
    assert line["level"] == "info"
    assert line["run_id"] == "r-17"
    assert (line["server"], line["snapshot"], line["took_s"]) == ("ec200001", 104, 12.5)
    assert line["timestamp"].endswith("Z")
    stamp = datetime.fromisoformat(line["timestamp"])
    assert stamp.tzinfo is not None
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60


def test_lines_below_the_level_are_dropped() -> None:
    out = io.StringIO()
    configure_logging(stream=out, level="warning")
    log = get_logger()

    log.debug("noise")
    log.info("chatter")
    log.warning("source_failing", source="actions")

    assert [line["event"] for line in lines(out)] == ["source_failing"]


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="verbose"):
        configure_logging(stream=io.StringIO(), level="verbose")


def test_credential_fields_are_redacted_at_any_depth_but_file_paths_are_not() -> None:
    out = io.StringIO()
    configure_logging(stream=out)

    get_logger(api_key="k-123").info(
        "request_sent",
        token="t-secret",
        Password="p-secret",
        routing_key="rk-secret",
        token_file="/run/credentials/cloudpilot.service/seeweb-token",
        headers={"X-APITOKEN": "h-secret", "Authorization": "Bearer abc", "Accept": "json"},
        attempts=[{"cookie": "c-secret", "status": 401}],
        nested={"deeper": {"client_secret": "s-secret", "name": "web-1"}},
        key="seeweb.action:709",
    )

    text = out.getvalue()
    for secret in ("k-123", "t-secret", "p-secret", "rk-secret", "h-secret", "abc", "c-secret"):
        assert secret not in text
    assert "s-secret" not in text
    [line] = lines(out)
    assert line["token"] == line["Password"] == line["routing_key"] == REDACTED
    assert line["api_key"] == REDACTED
    assert line["headers"] == {
        "X-APITOKEN": REDACTED,
        "Authorization": REDACTED,
        "Accept": "json",
    }
    assert line["attempts"] == [{"cookie": REDACTED, "status": 401}]
    assert line["nested"] == {"deeper": {"client_secret": REDACTED, "name": "web-1"}}
    assert line["token_file"] == "/run/credentials/cloudpilot.service/seeweb-token"
    assert line["key"] == "seeweb.action:709"


def test_an_authorization_header_quoted_in_free_text_is_redacted() -> None:
    out = io.StringIO()
    configure_logging(stream=out)

    get_logger().warning("login_failed", detail="sent Authorization: Bearer eyJhbGciOi.x.y")

    [line] = lines(out)
    assert line["detail"] == f"sent Authorization: Bearer {REDACTED}"


def login(user: str) -> None:
    password = "hunter2"
    if password:
        raise PermissionError(f"login refused for {user}")


def test_an_exception_is_structured_and_carries_no_locals() -> None:
    out = io.StringIO()
    configure_logging(stream=out)

    try:
        login("me")
    except PermissionError:
        get_logger().exception("login_failed", provider="k8sgpu")

    assert "hunter2" not in out.getvalue()
    [line] = lines(out)
    assert line["level"] == "error"
    [exception] = line["exception"]
    assert exception["exc_type"] == "PermissionError"
    assert exception["exc_value"] == "login refused for me"
    assert [frame["name"] for frame in exception["frames"]][-1] == "login"
    assert all("locals" not in frame for frame in exception["frames"])


def test_the_console_renderer_on_a_tty_shows_no_locals_either() -> None:
    out = TtyStream()
    configure_logging(stream=out)

    try:
        login("me")
    except PermissionError:
        get_logger().exception("login_failed", token="t-secret")

    text = out.getvalue()
    assert "login_failed" in text
    assert "PermissionError: login refused for me" in text
    assert "hunter2" not in text
    assert "t-secret" not in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


def test_the_console_renderer_takes_an_exc_info_tuple() -> None:
    out = TtyStream()
    configure_logging(stream=out)

    try:
        login("me")
    except PermissionError:
        get_logger().error("login_failed", exc_info=sys.exc_info())

    assert "PermissionError: login refused for me" in out.getvalue()


def test_json_can_be_forced_on_a_tty() -> None:
    out = TtyStream()
    configure_logging(stream=out, json=True)

    get_logger().info("started")

    assert lines(out)[0]["event"] == "started"


def test_stdlib_loggers_go_through_the_same_renderer_from_warning_up() -> None:
    out = io.StringIO()
    configure_logging(stream=out, level="debug")

    logging.getLogger("aiohttp.access").info("GET /metrics 200")
    logging.getLogger("apscheduler.scheduler").warning("job %s missed by %ss", "actions", 3)
    try:
        login("me")
    except PermissionError:
        logging.getLogger("aiohttp.server").exception("Error handling request")

    first, second = lines(out)
    assert first["event"] == "job actions missed by 3s"
    assert first["level"] == "warning"
    assert first["logger"] == "apscheduler.scheduler"
    assert "timestamp" in first
    assert second["level"] == "error"
    assert second["exception"][0]["exc_type"] == "PermissionError"
    assert "hunter2" not in out.getvalue()


def test_configuring_again_moves_every_logger_to_the_new_stream() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(stream=first)
    log = get_logger(component="scheduler")
    log.info("one")

    configure_logging(stream=second)
    log.info("two")
    logging.getLogger("apscheduler").warning("three")

    assert [line["event"] for line in lines(first)] == ["one"]
    assert [line["event"] for line in lines(second)] == ["two", "three"]
    ours = [h for h in logging.getLogger().handlers if h.get_name() == "cloudpilot-structlog"]
    assert len(ours) == 1
