"""The `alertmanager` notifier: POST alerts to Alertmanager's API v2, to every URL of an HA pair."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from yarl import URL

from daemon.clock import Clock
from daemon.config import NotifierConfig
from daemon.notifications import AlertStatus, Notification, SendResult, Verdict
from daemon.notify.outbound import (
    USER_AGENT,
    ConfiguredRoute,
    SafeHttp,
    json_body,
    post_once,
    rfc3339,
)
from daemon.urls import check_url, describe

ALERTS_PATH = "/api/v2/alerts"
# A firing alert ends by itself after this many missed refreshes, should Cloudpilot stop.
ENDS_AFTER_REFRESHES = 4


def alerts_url(base: str) -> URL:
    """Return the alerts endpoint under an Alertmanager URL (which may sit behind a prefix)."""
    url = check_url(base, allow_http=True)
    path = url.path.rstrip("/")
    if not path.endswith(ALERTS_PATH):
        path += ALERTS_PATH
    return url.with_path(path).with_query(None).with_fragment(None)


class AlertmanagerSender(ConfiguredRoute):
    """Send alerts to Alertmanager; a firing alert's end is kept ahead by the refresh."""

    KIND = "alertmanager"

    def __init__(self, route: str, config: NotifierConfig, *, http: SafeHttp, clock: Clock) -> None:
        super().__init__(route, config)
        self._http = http
        self._clock = clock
        urls = [alerts_url(base) for base in config.target_urls()]
        names = [route] if len(urls) == 1 else [f"{route}#{n}" for n in range(len(urls))]
        self._urls = dict(zip(names, urls, strict=True))

    @property
    def destinations(self) -> tuple[str, ...]:
        """Return the route for one URL, or `<route>#<n>` for each of several."""
        return tuple(self._urls)

    def target(self) -> str:
        """Return the Alertmanager origins."""
        return ", ".join(describe(url) for url in self._urls.values())

    async def send(self, destination: str, notification: Notification) -> SendResult:
        """Post one alert's new state to one Alertmanager."""
        return await self.post_alerts(destination, [notification])

    async def post_alerts(
        self, destination: str, notifications: Sequence[Notification]
    ) -> SendResult:
        """Post the current state of many alerts to one Alertmanager in one request."""
        url = self._urls.get(destination)
        if url is None:
            return self.unknown_destination(destination)
        if not notifications:
            return SendResult(Verdict.DELIVERED, f"{describe(url)}: nothing to send")
        body = json_body([self.alert(notification) for notification in notifications])
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        return await post_once(
            self._http,
            url,
            body,
            headers,
            timeout_s=self.timeout_s,
            clock=self._clock,
            allow_http=True,
        )

    def alert(self, notification: Notification) -> dict[str, Any]:
        """Return one notification as an Alertmanager postable alert."""
        annotations = {"summary": notification.summary}
        if notification.description:
            annotations["description"] = notification.description
        return {
            "labels": dict(notification.labels),
            "annotations": annotations,
            "startsAt": rfc3339(notification.started_at),
            "endsAt": rfc3339(self._ends_at(notification)),
        }

    def _ends_at(self, notification: Notification) -> datetime:
        # Never before startsAt (Alertmanager answers 400), even when the provider's clock, which
        # set startsAt, runs ahead of ours.
        now = self._clock.now()
        if notification.status is AlertStatus.RESOLVED:
            # Never later than now: a provider clock ahead of ours must not keep it active.
            return max(notification.started_at, min(notification.ended_at or now, now))
        lease = timedelta(seconds=ENDS_AFTER_REFRESHES * self._config.resend_every)
        return max(now, notification.started_at) + lease
