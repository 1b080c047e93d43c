"""Logs, metrics, the HTTP surface and systemd notifications."""

from daemon.observability.http import Readiness, build_http_app, start_http
from daemon.observability.logging import configure_logging, get_logger
from daemon.observability.metrics import Metrics
from daemon.observability.sdnotify import SystemdNotifier

__all__ = [
    "Metrics",
    "Readiness",
    "SystemdNotifier",
    "build_http_app",
    "configure_logging",
    "get_logger",
    "start_http",
]
