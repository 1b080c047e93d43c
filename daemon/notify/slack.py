"""The `slack` notifier: post a message with blocks to a Slack incoming webhook."""

from __future__ import annotations

import re
from typing import Any

from yarl import URL

from daemon.clock import Clock
from daemon.config import NotifierConfig
from daemon.notifications import AlertStatus, Notification, SendResult, Severity
from daemon.notify.outbound import (
    USER_AGENT,
    ConfiguredRoute,
    HttpAnswer,
    SafeHttp,
    json_body,
    post_once,
)
from daemon.secret import Secret
from daemon.urls import check_url, describe

# Slack's limits on block texts, in characters.
HEADER_LIMIT = 150
SECTION_LIMIT = 3000
FIELD_LIMIT = 2000
# Slack names what went wrong in a short lowercase word (`channel_is_archived`).
_SLACK_ERROR = re.compile(r"[a-z_]{1,64}")
_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,3}$")
_ICONS = {
    Severity.CRITICAL: ":red_circle:",
    Severity.WARNING: ":large_orange_circle:",
    Severity.INFO: ":large_blue_circle:",
}


def escape(text: str) -> str:
    """Return text safe in Slack mrkdwn: no `<!channel>` mention or link can slip through."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cut(text: str, limit: int) -> str:
    """Return escaped text cut to `limit` characters, never in the middle of an entity."""
    if len(text) <= limit:
        return text
    return _PARTIAL_ENTITY.sub("", text[: limit - 1]) + "…"


def _one_line(text: str, limit: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _status_line(notification: Notification) -> str:
    severity = notification.severity.value.upper()
    if notification.status is AlertStatus.RESOLVED:
        return f"RESOLVED · {severity}"
    return f"FIRING · {severity}"


def _mrkdwn(text: str, limit: int) -> dict[str, str]:
    return {"type": "mrkdwn", "text": cut(text, limit)}


def _facts(notification: Notification) -> dict[str, Any]:
    resource = escape(notification.resource) if notification.resource else "—"
    fields = [
        f"*Resource*\n{resource}",
        f"*Rule*\n{escape(notification.rule)}",
        f"*Started*\n{notification.started_at.isoformat()}",
    ]
    if notification.ended_at is not None:
        fields.append(f"*Ended*\n{notification.ended_at.isoformat()}")
    return {"type": "section", "fields": [_mrkdwn(field, FIELD_LIMIT) for field in fields]}


def _what_happened(summary: str, description: str) -> dict[str, Any]:
    text = f"*{escape(summary)}*"
    if description:
        text += f"\n{escape(description)}"
    return {"type": "section", "text": _mrkdwn(text, SECTION_LIMIT)}


def _alert_key(notification: Notification) -> dict[str, Any]:
    if notification.status is AlertStatus.RESOLVED:
        icon = ":white_check_mark:"
    else:
        icon = _ICONS[notification.severity]
    text = f"{icon} alert `{escape(notification.alert_key)}`"
    return {"type": "context", "elements": [_mrkdwn(text, FIELD_LIMIT)]}


def slack_message(notification: Notification) -> dict[str, Any]:
    """Return the webhook payload: a fallback `text` and blocks for status, resource and rule."""
    status = _status_line(notification)
    summary = notification.summary or notification.alert_key
    resource = notification.resource or "—"
    header = {"type": "plain_text", "text": _one_line(f"{status}: {summary}", HEADER_LIMIT)}
    return {
        "text": cut(escape(f"[{status}] {resource}: {summary}"), SECTION_LIMIT),
        "blocks": [
            {"type": "header", "text": header},
            _facts(notification),
            _what_happened(summary, notification.description),
            _alert_key(notification),
        ],
    }


class SlackSender(ConfiguredRoute):
    """Post each notification to one incoming webhook, whose URL is the credential."""

    KIND = "slack"

    def __init__(
        self,
        route: str,
        config: NotifierConfig,
        *,
        url: Secret,
        http: SafeHttp,
        clock: Clock,
    ) -> None:
        super().__init__(route, config)
        self._origin = describe(check_url(url.reveal()))
        self._url = url
        self._http = http
        self._clock = clock

    def target(self) -> str:
        """Return the webhook's origin, never its path."""
        return self._origin

    async def send(self, destination: str, notification: Notification) -> SendResult:
        """Post the message; 200 is delivered, 400/404/410 rejected, 403, 429 and 5xx retried."""
        if destination != self.route:
            return self.unknown_destination(destination)
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        return await post_once(
            self._http,
            URL(self._url.reveal()),
            json_body(slack_message(notification)),
            headers,
            timeout_s=self.timeout_s,
            clock=self._clock,
            explain=self._slack_error,
        )

    def _slack_error(self, answer: HttpAnswer) -> str:
        """Return Slack's error word from a failed answer, when it is only that."""
        if 200 <= answer.status < 300:
            return ""
        text = answer.body.decode("utf-8", "replace").strip()
        if not _SLACK_ERROR.fullmatch(text) or text in self._url.reveal():
            return ""
        return text
