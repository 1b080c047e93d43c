"""The daemon's own HTTP surface: /metrics, /healthz, /readyz and /status."""

from __future__ import annotations

import contextlib
import errno
import json
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from daemon.errors import CloudpilotError
from daemon.observability.metrics import Metrics

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9464


class Readiness:
    """Whether the daemon is ready: rules loaded and every enabled source polled once."""

    def __init__(self, sources: Iterable[str] = ()) -> None:
        self._expected: set[str] = set(sources)
        self._polled: set[str] = set()
        self._rules_loaded = False

    def expect_sources(self, sources: Iterable[str]) -> None:
        """Add enabled sources that must poll once before the daemon is ready."""
        self._expected.update(sources)

    def rules_loaded(self) -> None:
        """Record that the rules are loaded."""
        self._rules_loaded = True

    def source_polled(self, source: str) -> None:
        """Record that a source completed a successful poll."""
        self._polled.add(source)

    def polled(self, sources: Iterable[str]) -> bool:
        """Return whether each named source has polled; sources not expected are ignored."""
        return all(name in self._polled for name in sources if name in self._expected)

    @property
    def ready(self) -> bool:
        """Return whether nothing is missing."""
        return self._rules_loaded and self._expected <= self._polled

    def reasons(self) -> list[str]:
        """Return what is still missing, one short sentence each, sources in name order."""
        missing = [] if self._rules_loaded else ["rules not loaded"]
        missing += [
            f"source {name} has not polled yet" for name in sorted(self._expected - self._polled)
        ]
        return missing


def build_http_app(
    *,
    metrics: Metrics,
    readiness: Readiness,
    health: Callable[[], bool],
    status: Callable[[], Mapping[str, Any]] | None = None,
) -> web.Application:
    """Return the aiohttp application serving the daemon's endpoints."""

    async def get_metrics(_request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(metrics.registry))
        # Set whole: aiohttp's content_type argument rejects a charset parameter.
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def get_healthz(_request: web.Request) -> web.Response:
        if health():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="unhealthy\n")

    async def get_readyz(_request: web.Request) -> web.Response:
        missing = readiness.reasons()
        return web.json_response(
            {"ready": not missing, "missing": missing}, status=503 if missing else 200
        )

    async def get_status(_request: web.Request) -> web.Response:
        if status is None:
            raise web.HTTPNotFound(text="no status is published\n")
        return web.json_response(dict(status()), dumps=_dumps)

    app = web.Application()
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", get_healthz)
    app.router.add_get("/readyz", get_readyz)
    app.router.add_get("/status", get_status)
    return app


def _dumps(value: Any) -> str:
    # Status carries datetimes, paths and enums; their str() is what an operator wants to read.
    return json.dumps(value, default=str, indent=2, sort_keys=True)


class ListenError(CloudpilotError, OSError):
    """The HTTP endpoint could not listen where it was told to."""


def _bind_reason(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            "the port is already in use (another cloudpilot, or another program); choose "
            "another with [http] listen or --listen"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return "this machine has no such address"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges)"
    text = exc.strerror or str(exc)
    return text.rsplit(": ", 1)[-1] if "attempting to bind" in text else text


async def start_http(
    app: web.Application, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
) -> tuple[web.AppRunner, int]:
    """Serve `app` on host:port and return the runner and the bound port (port 0 picks one)."""
    # No access log: probes every few seconds would drown the daemon's own lines.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        reason = _bind_reason(exc)
        raise ListenError(
            f"cannot listen on {where} for /metrics, /healthz, /readyz and /status: {reason}"
        ) from None
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1] if runner.addresses else port
    return runner, int(bound)


@contextlib.asynccontextmanager
async def serving(
    app: web.Application, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
) -> AsyncIterator[int]:
    """Serve `app` on host:port for as long as the block runs; yield the bound port."""
    runner, bound = await start_http(app, host, port)
    try:
        yield bound
    finally:
        await runner.cleanup()
