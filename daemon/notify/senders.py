"""Build one sender per `[notifiers.NAME]`, with its secrets read from the loaded config."""

from __future__ import annotations

import ssl

import aiohttp
from aiohttp.abc import AbstractResolver

from daemon.clock import Clock
from daemon.config import Config, NotifierConfig
from daemon.errors import ConfigError
from daemon.notifications import Sender
from daemon.notify.alertmanager import AlertmanagerSender
from daemon.notify.email import EmailSender
from daemon.notify.outbound import SafeHttp
from daemon.notify.pagerduty import PagerDutySender
from daemon.notify.slack import SlackSender
from daemon.notify.webhook import WebhookSender
from daemon.secret import Secret
from daemon.urls import UnsafeUrlError, check_url


def build_senders(
    config: Config,
    *,
    session: aiohttp.ClientSession,
    clock: Clock,
    resolver: AbstractResolver | None = None,
) -> dict[str, Sender]:
    """Return a sender per configured route; raise ConfigError for a URL file that is unsafe."""
    http = SafeHttp(session, resolver)
    return {
        name: _build(config, name, notifier, http, clock)
        for name, notifier in config.model.notifiers.items()
    }


def _build(
    config: Config, name: str, notifier: NotifierConfig, http: SafeHttp, clock: Clock
) -> Sender:
    if notifier.type == "alertmanager":
        return AlertmanagerSender(name, notifier, http=http, clock=clock)
    if notifier.type == "pagerduty":
        key = config.secret(f"notifiers.{name}.routing_key_file")
        return PagerDutySender(name, notifier, routing_key=key, http=http, clock=clock)
    if notifier.type == "slack":
        url = _url(config, name, notifier)
        return SlackSender(name, notifier, url=url, http=http, clock=clock)
    if notifier.type == "webhook":
        url = _url(config, name, notifier)
        secret = _optional_secret(config, name, "secret_file", notifier.secret_file)
        return WebhookSender(name, notifier, url=url, secret=secret, http=http, clock=clock)
    password = _optional_secret(config, name, "password_file", notifier.password_file)
    ca = _optional_secret(config, name, "ca_file", notifier.ca_file)
    try:
        return EmailSender(name, notifier, password=password, ca=ca, clock=clock)
    except ssl.SSLError as exc:
        reason = exc.reason or "not a PEM certificate"
        raise ConfigError(f"{config.path}: notifiers.{name}.ca_file: {reason}") from None


def _optional_secret(config: Config, name: str, key: str, path: str | None) -> Secret | None:
    return None if path is None else config.secret(f"notifiers.{name}.{key}")


def _url(config: Config, name: str, notifier: NotifierConfig) -> Secret:
    """Return the route's URL as a secret: the literal `url`, or the one read from `url_file`."""
    if notifier.url is not None:
        return Secret(notifier.url)
    url = config.secret(f"notifiers.{name}.url_file")
    try:
        check_url(url.reveal())
    except UnsafeUrlError as exc:
        reason = str(exc).replace(url.reveal(), "<the URL>")
        raise ConfigError(f"{config.path}: notifiers.{name}.url_file: {reason}") from None
    return url
