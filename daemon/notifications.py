"""What notifiers send and how a send went: one alert state change, rendered once."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from daemon.models import Decision, Event, Mode

DEDUP_KEY_LIMIT = 255
SUMMARY_LIMIT = 1024
DESCRIPTION_LIMIT = 16 * 1024


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


class AlertStatus(StrEnum):
    """Whether an alert is on or over."""

    FIRING = "firing"
    RESOLVED = "resolved"


class Severity(StrEnum):
    """How urgent an alert is."""

    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


def event_alert(
    key: str,
    rule: str,
    event: Event,
    *,
    severity: Severity,
    labels: Mapping[str, str],
    to: Sequence[str],
    mode: Mode = Mode.ENFORCE,
    describe: bool = True,
) -> Decision:
    """Return an alert decision whose texts are its event's `summary` (and `detail`) fields.

    For the policies (autoscale, budget, the guard) that write an alert's words themselves and
    carry them in the event, so the alert templates only quote them.
    """
    params: dict[str, Any] = {"severity": severity.value, "summary": "{{ event.data.summary }}"}
    if describe:
        params["description"] = "{{ event.data.detail }}"
    params["labels"] = dict(labels)
    params["to"] = list(to)
    return Decision(
        key=key, rule=rule, action="alert", params=params, mode=mode, event=event, time=event.time
    )


def dedup_key(identity: str) -> str:
    """Return a stable key of at most 255 characters for an alert identity.

    Short identities are kept as they are, so a receiver shows something readable; longer ones
    keep a readable head and end in the SHA-256 of the whole, so two never collide.
    """
    key = f"cloudpilot/{identity}"
    if len(key) <= DEDUP_KEY_LIMIT:
        return key
    digest = hashlib.sha256(identity.encode()).hexdigest()
    return f"{key[: DEDUP_KEY_LIMIT - len(digest) - 1]}~{digest}"


@dataclass(frozen=True, slots=True)
class Notification:
    """One alert state change, as every notifier sends it; stored in the outbox as it is.

    `alert_key` is the alert's identity (`<rule>/<group values>`), stable across restarts and
    instances. `dedup_key` is the same identity cut to 255 characters (PagerDuty's limit).
    `labels` always hold `alertname` (the rule), `severity` and `resource`. `started_at` is when
    this firing began (the same on its resolved notification); `ended_at` is set once resolved.
    `event` is the event that fired or resolved it, as rules see events (`Event.as_dict()`, with
    the time as ISO text). Nothing in a notification is secret: destinations add their
    credentials at send time.
    """

    alert_key: str
    dedup_key: str
    rule: str
    status: AlertStatus
    severity: Severity
    summary: str
    description: str
    resource: str
    labels: Mapping[str, str]
    started_at: datetime
    ended_at: datetime | None = None
    event: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Return the notification as JSON-able data (times as ISO text)."""
        return {
            "alert_key": self.alert_key,
            "dedup_key": self.dedup_key,
            "rule": self.rule,
            "status": self.status.value,
            "severity": self.severity.value,
            "summary": self.summary,
            "description": self.description,
            "resource": self.resource,
            "labels": dict(self.labels),
            "started_at": self.started_at.isoformat(),
            "ended_at": None if self.ended_at is None else self.ended_at.isoformat(),
            "event": dict(self.event),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Notification:
        """Return the notification `as_dict` gave."""
        ended = data.get("ended_at")
        return cls(
            alert_key=str(data["alert_key"]),
            dedup_key=str(data["dedup_key"]),
            rule=str(data["rule"]),
            status=AlertStatus(data["status"]),
            severity=Severity(data["severity"]),
            summary=str(data["summary"]),
            description=str(data.get("description", "")),
            resource=str(data.get("resource", "")),
            labels={str(k): str(v) for k, v in dict(data.get("labels", {})).items()},
            started_at=_utc(str(data["started_at"])),
            ended_at=None if ended is None else _utc(str(ended)),
            event=dict(data.get("event", {})),
        )


@dataclass(frozen=True, slots=True)
class Delivery:
    """One notification owed to one destination: an outbox row, removed once accepted.

    `destination` is a route name from the config (`oncall`), or `<route>#<n>` for the n-th URL
    of a route that has several (an Alertmanager HA pair).
    """

    id: int
    destination: str
    notification: Notification
    created_at: datetime
    next_at: datetime
    attempts: int = 0
    last_error: str = ""


class Verdict(StrEnum):
    """What a destination's answer means for the delivery."""

    DELIVERED = "delivered"  # accepted: remove it from the outbox
    REJECTED = "rejected"  # refused for good (400, 404, 422): remove it, count an error
    RETRY = "retry"  # 429, 5xx, timeouts, network errors: keep it and try later


@dataclass(frozen=True, slots=True)
class SendResult:
    """How one send went: the verdict, a secret-free detail, and the receiver's Retry-After."""

    verdict: Verdict
    detail: str = ""
    retry_after_s: float | None = None


# Answers that say the request itself is wrong: sending it again cannot help. 401 and 403 are not
# among them: a revoked key or webhook is fixed in the config, and the alerts should still be
# waiting when it is (until `give_up_after`).
_PERMANENT = frozenset({400, 404, 405, 410, 413, 415, 422})


def verdict_for_status(status: int) -> Verdict:
    """Return the verdict for an HTTP status: 2xx delivered, 429 and 5xx retried.

    400, 404 and 422 (and 405, 410, 413, 415: the request itself is wrong) are rejected; any
    other 4xx, 401 and 403 included, and every 3xx (redirects are never followed) are retried,
    since they more likely describe credentials or a proxy to fix than a malformed alert.
    """
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status in _PERMANENT:
        return Verdict.REJECTED
    return Verdict.RETRY


class Sender(Protocol):
    """One configured route (`[notifiers.NAME]`): how to send a notification to it.

    `destinations` are the outbox names this route delivers to: `(route,)`, or one per URL for a
    route with several. A sender never raises for a failed send: it says so in its result, with
    a detail that holds no secret (no token, no webhook path, no password).
    """

    @property
    def route(self) -> str:
        """Return the route's name."""
        ...

    @property
    def kind(self) -> str:
        """Return the notifier type: alertmanager, pagerduty, slack, webhook or email."""
        ...

    @property
    def destinations(self) -> tuple[str, ...]:
        """Return the outbox destinations this route owns."""
        ...

    @property
    def rate_per_s(self) -> float:
        """Return how many sends per second one destination may make."""
        ...

    @property
    def timeout_s(self) -> float:
        """Return how long one send may take."""
        ...

    async def send(self, destination: str, notification: Notification) -> SendResult:
        """Send one notification to one destination and say how it went."""
        ...
