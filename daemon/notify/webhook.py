"""The `webhook` notifier: POST each notification as JSON, signed with HMAC-SHA256 when asked."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from yarl import URL

from daemon.clock import Clock
from daemon.config import NotifierConfig
from daemon.notifications import Notification, SendResult
from daemon.notify.outbound import USER_AGENT, ConfiguredRoute, SafeHttp, json_body, post_once
from daemon.secret import Secret
from daemon.urls import check_url, describe

PAYLOAD_VERSION = 1
TIMESTAMP_HEADER = "X-Cloudpilot-Timestamp"


def webhook_payload(notification: Notification) -> dict[str, Any]:
    """Return the JSON body a webhook receives for a notification."""
    return {
        "version": PAYLOAD_VERSION,
        "status": notification.status.value,
        "alert": notification.as_dict(),
    }


def idempotency_key(notification: Notification) -> str:
    """Return a key that is the same each time this state change is sent, and only for it."""
    identity = "\n".join(
        (notification.dedup_key, notification.status.value, notification.started_at.isoformat())
    )
    return hashlib.sha256(identity.encode()).hexdigest()


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """Return `sha256=<hex>`, the HMAC-SHA256 of `<timestamp>.<body>` under the secret."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


class WebhookSender(ConfiguredRoute):
    """POST notifications to a URL: https unless loopback, no redirects, optionally signed."""

    KIND = "webhook"

    def __init__(
        self,
        route: str,
        config: NotifierConfig,
        *,
        url: Secret,
        secret: Secret | None,
        http: SafeHttp,
        clock: Clock,
    ) -> None:
        super().__init__(route, config)
        self._origin = describe(check_url(url.reveal()))
        self._url = url
        self._secret = secret
        self._signature_header = config.signature_header
        self._http = http
        self._clock = clock

    def target(self) -> str:
        """Return the receiver's origin, never its path."""
        return self._origin

    async def send(self, destination: str, notification: Notification) -> SendResult:
        """POST the notification once; 2xx is delivered, 400/404/422 rejected, others retried."""
        if destination != self.route:
            return self.unknown_destination(destination)
        body = json_body(webhook_payload(notification))
        return await post_once(
            self._http,
            URL(self._url.reveal()),
            body,
            self._headers(notification, body),
            timeout_s=self.timeout_s,
            clock=self._clock,
        )

    def _headers(self, notification: Notification, body: bytes) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Idempotency-Key": idempotency_key(notification),
        }
        if self._secret is not None:
            timestamp = str(int(self._clock.now().timestamp()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[self._signature_header] = signature(self._secret.reveal(), timestamp, body)
        return headers
