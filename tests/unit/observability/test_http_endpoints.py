"""The daemon's HTTP surface, served by a real aiohttp server on a loopback port."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from daemon.observability.http import Readiness, build_http_app, start_http
from daemon.observability.logging import configure_logging
from daemon.observability.metrics import Metrics


class Health:
    def __init__(self) -> None:
        self.ok = True

    def __call__(self) -> bool:
        return self.ok


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
def health() -> Health:
    return Health()


@pytest.fixture
def readiness() -> Readiness:
    return Readiness(["actions", "logs"])


def status() -> Mapping[str, Any]:
    return {
        "started": datetime(2026, 11, 10, 12, 0, tzinfo=UTC),
        "sources": {"actions": {"up": True}},
        "rules": 3,
    }


@pytest.fixture
async def client(
    metrics: Metrics, readiness: Readiness, health: Health
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = build_http_app(metrics=metrics, readiness=readiness, health=health, status=status)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


@pytest.fixture
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_metrics_serves_the_registry_in_the_text_format(
    client: TestClient[web.Request, web.Application], metrics: Metrics
) -> None:
    metrics.poll_errors.labels("actions").inc(3)

    response = await client.get("/metrics")

    assert response.status == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    text = await response.text()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("cloudpilot_poll_errors_total", (("source", "actions"),))] == 3.0
    assert any(name == "cloudpilot_build_info" for name, _ in samples)


async def test_healthz_follows_the_health_callback(
    client: TestClient[web.Request, web.Application], health: Health
) -> None:
    response = await client.get("/healthz")
    assert (response.status, await response.text()) == (200, "ok\n")

    health.ok = False
    response = await client.get("/healthz")
    assert response.status == 503

    health.ok = True
    assert (await client.get("/healthz")).status == 200


async def test_readyz_lists_what_is_missing_until_ready(
    client: TestClient[web.Request, web.Application], readiness: Readiness
) -> None:
    response = await client.get("/readyz")
    assert response.status == 503
    assert await response.json() == {
        "ready": False,
        "missing": [
            "rules not loaded",
            "source actions has not polled yet",
            "source logs has not polled yet",
        ],
    }

    readiness.rules_loaded()
    readiness.source_polled("actions")
    response = await client.get("/readyz")
    assert response.status == 503
    assert (await response.json())["missing"] == ["source logs has not polled yet"]

    readiness.source_polled("logs")
    response = await client.get("/readyz")
    assert response.status == 200
    assert await response.json() == {"ready": True, "missing": []}


async def test_status_returns_the_callback_as_json(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.get("/status")

    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == {
        "started": "2026-11-10 12:00:00+00:00",
        "sources": {"actions": {"up": True}},
        "rules": 3,
    }


async def test_status_is_404_without_a_callback(metrics: Metrics, readiness: Readiness) -> None:
    app = build_http_app(metrics=metrics, readiness=readiness, health=lambda: True)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        response = await client.get("/status")
        assert response.status == 404


async def test_only_get_is_served(client: TestClient[web.Request, web.Application]) -> None:
    response = await client.post("/metrics")
    assert response.status == 405


@pytest.mark.usefixtures("_restore_logging")
async def test_start_http_binds_loopback_by_default_on_a_free_port_and_logs_no_access(
    metrics: Metrics, readiness: Readiness
) -> None:
    out = io.StringIO()
    configure_logging(stream=out, level="debug")
    app = build_http_app(metrics=metrics, readiness=readiness, health=lambda: True)

    runner, port = await start_http(app, port=0)
    try:
        assert port != 0
        assert [address[:2] for address in runner.addresses] == [("127.0.0.1", port)]
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/healthz?token=abc") as response,
        ):
            assert response.status == 200
            assert await response.text() == "ok\n"
    finally:
        await runner.cleanup()

    assert "healthz" not in out.getvalue()
    assert "abc" not in out.getvalue()


async def test_start_http_on_a_busy_port_raises_and_leaves_nothing_running(
    metrics: Metrics, readiness: Readiness
) -> None:
    app = build_http_app(metrics=metrics, readiness=readiness, health=lambda: True)
    first, port = await start_http(app, "127.0.0.1", 0)
    try:
        other = build_http_app(metrics=metrics, readiness=readiness, health=lambda: True)
        with pytest.raises(OSError):
            await start_http(other, "127.0.0.1", port)
    finally:
        await first.cleanup()
