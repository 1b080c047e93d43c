"""The `pagerduty` notifier: trigger and resolve PagerDuty alerts with the Events API v2."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from daemon.clock import Clock
from daemon.config import NotifierConfig
from daemon.notifications import SUMMARY_LIMIT, AlertStatus, Notification, SendResult
from daemon.notify.outbound import (
    USER_AGENT,
    ConfiguredRoute,
    SafeHttp,
    json_body,
    post_once,
    rfc3339,
)
from daemon.secret import Secret
from daemon.urls import check_url, describe

# PagerDuty refuses events over 512 KB; stay under it however "KB" is counted.
BODY_LIMIT_BYTES = 512 * 1000
CUT_DESCRIPTION_CHARS = 1024
CLIENT = "Cloudpilot"
DEFAULT_SOURCE = "cloudpilot"


class PagerDutySender(ConfiguredRoute):
    """Trigger an alert on firing and resolve it on resolved, keyed by the dedup key."""

    KIND = "pagerduty"

    def __init__(
        self,
        route: str,
        config: NotifierConfig,
        *,
        routing_key: Secret,
        http: SafeHttp,
        clock: Clock,
    ) -> None:
        super().__init__(route, config)
        self._url = check_url(config.target_urls()[0])
        self._routing_key = routing_key
        self._http = http
        self._clock = clock

    def target(self) -> str:
        """Return the Events API origin."""
        return describe(self._url)

    async def send(self, destination: str, notification: Notification) -> SendResult:
        """Send a trigger or resolve event; 202 is delivered, 400 rejected, 429 retried."""
        if destination != self.route:
            return self.unknown_destination(destination)
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        return await post_once(
            self._http,
            self._url,
            self._body(notification),
            headers,
            timeout_s=self.timeout_s,
            clock=self._clock,
        )

    def _body(self, notification: Notification) -> bytes:
        if notification.status is AlertStatus.RESOLVED:
            return json_body(
                {
                    "routing_key": self._routing_key.reveal(),
                    "event_action": "resolve",
                    "dedup_key": notification.dedup_key,
                }
            )
        body = b""
        for details in _details_smallest_last(notification):
            body = json_body(self._trigger(notification, details))
            if len(body) <= BODY_LIMIT_BYTES:
                break
        return body

    def _trigger(self, notification: Notification, details: Mapping[str, Any]) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "summary": (notification.summary or notification.alert_key)[:SUMMARY_LIMIT],
            "source": notification.resource or DEFAULT_SOURCE,
            "severity": notification.severity.value,
            "timestamp": rfc3339(notification.started_at),
            "class": notification.rule,
            "custom_details": dict(details),
        }
        component = notification.event.get("type")
        if component:
            payload["component"] = str(component)
        return {
            "routing_key": self._routing_key.reveal(),
            "event_action": "trigger",
            "dedup_key": notification.dedup_key,
            "payload": payload,
            "client": CLIENT,
        }


def _details_smallest_last(notification: Notification) -> Iterator[dict[str, Any]]:
    """Yield custom details, each smaller: all, event data cut, event cut, description cut."""
    event = dict(notification.event)
    labels = dict(notification.labels)
    description = notification.description
    yield {"description": description, "labels": labels, "event": event}
    if "data" in event:
        data_note = _cut_note("the event's data", len(json_body(event["data"])))
        yield {"description": description, "labels": labels, "event": {**event, "data": data_note}}
    event_note = _cut_note("the event", len(json_body(event)))
    yield {"description": description, "labels": labels, "event": event_note}
    if len(description) > CUT_DESCRIPTION_CHARS:
        description = f"{description[:CUT_DESCRIPTION_CHARS]} … (cut)"
        yield {"description": description, "labels": labels, "event": event_note}
    yield {"cut": _cut_note("the details", len(json_body(labels)) + len(description))}


def _cut_note(what: str, size: int) -> str:
    return f"(cut: {what} took {size} bytes, over PagerDuty's 512 KB limit)"
