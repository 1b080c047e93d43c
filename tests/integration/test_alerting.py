"""Alerting end to end: the daemon in process, the simulator, and fake receivers on loopback.

A failed action in the simulated cloud becomes an alert, the alert queues notifications in the
outbox, and the dispatcher delivers them to a fake PagerDuty, Slack, webhook and SMTP server.
Time is a FakeClock kept in step with the simulator; deliveries are driven with
`dispatcher.pump(destination)` and clock advances, never by waiting for real time. The only real
waits are a notifier `timeout` of a fraction of a second against a receiver that hangs.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import logging
import random
import shutil
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from alert_receivers import (
    HANG,
    Answer,
    FakePagerDuty,
    FakeSlack,
    FakeSmtp,
    HttpReceiver,
    verify_signature,
)
from configs import write_config
from conftest import START, SimFactory, SimHandle
from processes import free_port
from prometheus_client import CollectorRegistry, generate_latest
from tls_cert import self_signed_cert

from daemon.app import Daemon
from daemon.clock import FakeClock
from daemon.errors import ConfigError
from daemon.observability.logging import configure_logging
from daemon.registry import load_config

REPO = Path(__file__).resolve().parents[2]

CANARY = "CaNaRy4d1e"
# Slack's error words are lowercase; a lowercase canary in the path must not pass for one.
LOWER_CANARY = "canary4d1e_hook"
ROUTING_KEY = f"rk-{CANARY}-0123456789abcdef"
SLACK_PATH = f"/services/T0CANARY/B0/{CANARY}/{LOWER_CANARY}"
HMAC_SECRET = f"whsec-{CANARY}-42"
SMTP_USERNAME = "alerts"
SMTP_PASSWORD = f"pw-{CANARY}-smtp"

PD_PATH = "/v2/enqueue"
HOOK_PATH = "/hook"
FROM = "Cloudpilot <alerts@example.com>"
MAIL_TO = "ops@example.com"

FAILED_KEY = "cloudpilot/failed-actions/ec300001|power_off"


def alert_rules(to: list[str], *, name: str = "failed-actions") -> str:
    """Return a rule that alerts on a failed action and resolves when a retry completes."""
    return f"""\
rules:
  - name: {name}
    on: seeweb.action.failed
    throttle: {{once_within: 30m, group_by: [resource, data.type]}}
    do:
      - alert:
          severity: critical
          summary: "{{{{ event.data.type }}}} failed on {{{{ event.resource }}}}"
          description: "action {{{{ event.data.id }}}} ended {{{{ event.data.status }}}}"
          labels: {{team: ops}}
          to: {json.dumps(to)}
          resolve: {{on: seeweb.action.completed, same: [resource, data.type]}}
"""


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return json.dumps(str(value))  # a JSON string is a TOML basic string


# --- the world: simulator, clock, receivers, config ---------------------------------------------


@dataclass
class World:
    sim: SimHandle
    clock: FakeClock
    dir: Path
    pd: FakePagerDuty
    slack: FakeSlack
    hook: HttpReceiver

    @property
    def config_path(self) -> Path:
        return self.dir / "cloudpilot.toml"

    async def advance(self, seconds: float) -> None:
        await self.sim.advance(seconds)
        self.clock.advance(seconds)

    async def action(
        self, resource: str = "ec300001", outcome: str = "failed", *, kind: str = "power_off"
    ) -> None:
        status, _ = await self.sim.call(
            "POST",
            "/_sim/actions",
            json={"resource": resource, "type": kind, "outcome": outcome, "duration_s": 30},
        )
        assert status in (200, 201)

    def notifier(self, route: str, **overrides: Any) -> dict[str, Any]:
        """Return the `[notifiers.ROUTE]` keys of one of the standard routes."""
        standard: dict[str, dict[str, Any]] = {
            "pd": {
                "type": "pagerduty",
                "url": self.pd.url(PD_PATH),
                "routing_key_file": "pd.key",
            },
            "chat": {"type": "slack", "url_file": "slack.url"},
            "hook": {
                "type": "webhook",
                "url": self.hook.url(HOOK_PATH),
                "secret_file": "hook.secret",
            },
        }
        return {**standard.get(route, {}), **overrides}

    def configure(self, notifiers: Mapping[str, Mapping[str, Any]], rules: str | None) -> None:
        """Write the config (and the rule file, unless `rules` is None: keep what is there)."""
        if rules is not None:
            (self.dir / "rules" / "alerts.yaml").write_text(rules)
        sections = []
        for name, keys in notifiers.items():
            lines = [f"[notifiers.{name}]"]
            lines += [f"{key} = {toml_value(value)}" for key, value in keys.items()]
            sections.append("\n".join(lines))
        write_config(
            self.dir,
            seeweb=self.sim.url,
            extra='[poll]\nactions = "1m"\n\n' + "\n\n".join(sections) + "\n",
        )

    def daemon(self, registry: CollectorRegistry | None = None) -> Daemon:
        return Daemon(
            load_config(self.config_path),
            clock=self.clock,
            registry=registry or CollectorRegistry(),
            rng=random.Random(7),
        )

    async def world_actions(self) -> list[dict[str, Any]]:
        status, body = await self.sim.call("GET", "/_sim/world")
        assert status == 200
        actions: list[dict[str, Any]] = body["actions"]
        return actions


@pytest.fixture
async def world(simulator: SimFactory, tmp_path: Path) -> AsyncIterator[World]:
    sim = await simulator("quiet")
    (tmp_path / "rules").mkdir()
    (tmp_path / "pd.key").write_text(ROUTING_KEY + "\n")
    (tmp_path / "hook.secret").write_text(HMAC_SECRET + "\n")
    pd = await FakePagerDuty().start()
    slack = await FakeSlack().start()
    hook = await HttpReceiver(Answer(204)).start()
    (tmp_path / "slack.url").write_text(slack.url(SLACK_PATH) + "\n")
    try:
        yield World(sim, FakeClock(START), tmp_path, pd, slack, hook)
    finally:
        for receiver in (pd, slack, hook):
            await receiver.close()


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Send every log line (structlog and stdlib) as JSON to a buffer for the test's duration."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    configure_logging(stream=out, json=True, level="debug")
    try:
        yield out
    finally:
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)


def log_lines(out: io.StringIO, event: str | None = None) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    return [line for line in lines if event is None or line.get("event") == event]


# --- driving deliveries -------------------------------------------------------------------------


async def fire(world: World, daemon: Daemon, resource: str = "ec300001", **kw: Any) -> None:
    """Let an action fail in the simulator and poll, so the daemon raises its alert."""
    await world.action(resource, "failed", **kw)
    await world.advance(60)  # the action fails 30 s in
    await daemon.poll_once()


async def fix(world: World, daemon: Daemon, resource: str = "ec300001", **kw: Any) -> None:
    """Let the same action be retried and complete, and poll, so the alert resolves."""
    await world.action(resource, "completed", **kw)
    await world.advance(60)
    await daemon.poll_once()


async def seconds_to_next_try(world: World, daemon: Daemon, destination: str) -> float:
    next_at = await daemon.store.next_delivery_at(destination)
    assert next_at is not None, f"nothing queued for {destination}"
    return (next_at - world.clock.now()).total_seconds()


async def flush(world: World, daemon: Daemon, *destinations: str, rounds: int = 400) -> int:
    """Deliver what is queued, moving time to each next try; return how far time moved (s)."""
    moved = 0.0
    for _ in range(rounds):
        waits = [
            wait
            for wait in [await daemon.dispatcher.pump(d) for d in destinations]
            if wait is not None
        ]
        if not waits:
            return round(moved)
        step = max(min(waits), 0.001)
        await world.advance(step)
        moved += step
    raise AssertionError(f"still queued after {rounds} rounds: {destinations}")


def sample(registry: CollectorRegistry, route: str, outcome: str) -> float:
    value = registry.get_sample_value(
        "cloudpilot_notifications_total", {"route": route, "outcome": outcome}
    )
    return value or 0.0


def queued(registry: CollectorRegistry, route: str) -> float | None:
    return registry.get_sample_value("cloudpilot_notifications_queued", {"route": route})


# --- 1. the happy path --------------------------------------------------------------------------


async def test_a_failed_action_triggers_and_its_retry_resolves_on_every_receiver(
    world: World,
) -> None:
    world.configure(
        {route: world.notifier(route) for route in ("pd", "chat", "hook")},
        alert_rules(["pd", "chat", "hook"]),
    )
    registry = CollectorRegistry()
    async with world.daemon(registry) as daemon:
        await daemon.poll_once()
        await fire(world, daemon)
        for destination in ("pd", "chat", "hook"):
            assert await daemon.dispatcher.pump(destination) is None
        assert world.pd.incidents == [FAILED_KEY]
        assert world.pd.open == {FAILED_KEY}
        [trigger] = world.pd.triggers()
        assert trigger["routing_key"] == ROUTING_KEY
        assert trigger["payload"]["source"] == "ec300001"
        assert trigger["payload"]["class"] == "failed-actions"
        assert trigger["payload"]["component"] == "seeweb.action.failed"
        assert trigger["payload"]["summary"] == "power_off failed on ec300001"
        alert = await daemon.store.get_alert("failed-actions/ec300001|power_off")
        assert alert is not None and alert.status == "firing"
        assert registry.get_sample_value("cloudpilot_alerts_firing", {"rule": "failed-actions"})

        await fix(world, daemon)
        for destination in ("pd", "chat", "hook"):
            assert await daemon.dispatcher.pump(destination) is None
        alert = await daemon.store.get_alert("failed-actions/ec300001|power_off")
        assert alert is not None and alert.status == "resolved"
        assert await daemon.store.pending_deliveries() == {}

    # PagerDuty: one incident, opened by the trigger and closed by the resolve with the same key.
    assert [r.status for r in world.pd.requests] == [202, 202]
    assert [(e["event_action"], e["dedup_key"]) for e in world.pd.events] == [
        ("trigger", FAILED_KEY),
        ("resolve", FAILED_KEY),
    ]
    assert world.pd.events[1] == {
        "routing_key": ROUTING_KEY,
        "event_action": "resolve",
        "dedup_key": FAILED_KEY,
    }
    assert world.pd.incidents == [FAILED_KEY]
    assert world.pd.open == set()

    # Slack: a FIRING message, then a RESOLVED one, posted to the secret path.
    assert [r.path for r in world.slack.requests] == [SLACK_PATH, SLACK_PATH]
    assert world.slack.headers() == [
        "FIRING · CRITICAL: power_off failed on ec300001",
        "RESOLVED · CRITICAL: power_off failed on ec300001",
    ]

    # Webhook: two signed bodies, firing then resolved, each with its own idempotency key.
    firing, resolved = world.hook.requests
    for request in (firing, resolved):
        assert verify_signature(request, HMAC_SECRET)
        assert not verify_signature(request, HMAC_SECRET + "x")
    assert [r.json()["status"] for r in (firing, resolved)] == ["firing", "resolved"]
    assert firing.json()["alert"]["dedup_key"] == FAILED_KEY
    assert resolved.json()["alert"]["ended_at"] is not None
    assert firing.headers["Idempotency-Key"] != resolved.headers["Idempotency-Key"]

    for route in ("pd", "chat", "hook"):
        assert sample(registry, route, "delivered") == 2.0, route
        assert sample(registry, route, "retried") == 0.0, route
    assert registry.get_sample_value("cloudpilot_alerts_firing", {"rule": "failed-actions"}) == 0
    changes = {
        change: registry.get_sample_value(
            "cloudpilot_alert_changes_total", {"rule": "failed-actions", "change": change}
        )
        for change in ("fired", "resolved")
    }
    assert changes == {"fired": 1.0, "resolved": 1.0}


async def test_the_shipped_failed_actions_rules_page_the_oncall_route(world: World) -> None:
    shutil.copy(REPO / "rules" / "failed-actions.yaml", world.dir / "rules")
    world.configure({"oncall": world.notifier("pd")}, rules=None)
    async with world.daemon() as daemon:
        await daemon.poll_once()
        await fire(world, daemon, "ec300002")
        await daemon.dispatcher.pump("oncall")
        await fix(world, daemon, "ec300002")
        await daemon.dispatcher.pump("oncall")
    key = "cloudpilot/failed-actions/ec300002|power_off"
    assert [(e["event_action"], e["dedup_key"]) for e in world.pd.events] == [
        ("trigger", key),
        ("resolve", key),
    ]
    trigger = world.pd.events[0]
    assert trigger["payload"]["summary"] == "power_off failed on ec300002"
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["custom_details"]["labels"] == {
        "alertname": "failed-actions",
        "severity": "critical",
        "resource": "ec300002",
        "type": "power_off",
        "team": "ops",
    }
    assert world.pd.incidents == [key]
    assert world.pd.open == set()


# --- 2. failing receivers -----------------------------------------------------------------------

HANG_TIMEOUT = "500ms"


async def test_a_failing_pagerduty_is_retried_on_schedule_while_others_deliver_at_once(
    world: World, captured_logs: io.StringIO
) -> None:
    world.configure(
        {
            "pd": world.notifier("pd", timeout=HANG_TIMEOUT),
            "chat": world.notifier("chat"),
            "hook": world.notifier("hook"),
        },
        alert_rules(["pd", "chat", "hook"]),
    )
    world.pd.answer(500, Answer(429, {"Retry-After": "30"}), HANG, 202)
    registry = CollectorRegistry()
    async with world.daemon(registry) as daemon:
        await daemon.poll_once()
        await fire(world, daemon)

        # Attempt 1: 500. The others do not wait for PagerDuty.
        await daemon.dispatcher.pump("pd")
        await daemon.dispatcher.pump("chat")
        await daemon.dispatcher.pump("hook")
        assert [r.status for r in world.pd.requests] == [500]
        assert world.slack.headers() == ["FIRING · CRITICAL: power_off failed on ec300001"]
        assert [r.json()["status"] for r in world.hook.requests] == ["firing"]
        assert await daemon.store.pending_deliveries() == {"pd": 1}
        assert queued(registry, "pd") == 1.0

        # The first backoff is at most 1 s, at least half of it: nothing goes before it is due.
        wait = await seconds_to_next_try(world, daemon, "pd")
        assert 0.5 <= wait <= 1.0
        await world.advance(wait - 0.05)
        await daemon.dispatcher.pump("pd")
        assert len(world.pd.requests) == 1
        await world.advance(0.05)

        # Attempt 2: 429 with Retry-After: 30, which outweighs the 2 s backoff.
        await daemon.dispatcher.pump("pd")
        assert [r.status for r in world.pd.requests] == [500, 429]
        wait = await seconds_to_next_try(world, daemon, "pd")
        assert wait == pytest.approx(30.0)
        await world.advance(29.5)
        await daemon.dispatcher.pump("pd")
        assert len(world.pd.requests) == 2
        await world.advance(0.5)

        # Attempt 3: the receiver takes the request and never answers; the timeout ends it.
        await daemon.dispatcher.pump("pd")
        assert len(world.pd.requests) == 3
        assert world.pd.requests[2].status is None
        wait = await seconds_to_next_try(world, daemon, "pd")
        assert 3.2 <= wait <= 4.8  # 4 s ± 20 %
        await world.advance(wait - 0.05)
        await daemon.dispatcher.pump("pd")
        assert len(world.pd.requests) == 3
        await world.advance(0.05)

        # Attempt 4: accepted. One incident, one accepted trigger, nothing left queued.
        assert await daemon.dispatcher.pump("pd") is None
        assert [r.status for r in world.pd.requests] == [500, 429, None, 202]
        assert world.pd.incidents == [FAILED_KEY]
        assert len(world.pd.triggers()) == 1
        assert await daemon.store.pending_deliveries() == {}
        assert queued(registry, "pd") == 0.0

        # Nothing was lost on the way: the resolve follows on every route.
        await fix(world, daemon)
        for destination in ("pd", "chat", "hook"):
            assert await daemon.dispatcher.pump(destination) is None

    assert world.pd.open == set()
    assert [e["event_action"] for e in world.pd.events] == ["trigger", "resolve"]
    assert len(world.pd.requests) == 5
    assert len(world.slack.headers()) == 2
    assert [r.json()["status"] for r in world.hook.requests] == ["firing", "resolved"]
    assert sample(registry, "pd", "retried") == 3.0
    assert sample(registry, "pd", "delivered") == 2.0
    for route in ("chat", "hook"):
        assert (sample(registry, route, "retried"), sample(registry, route, "delivered")) == (
            0.0,
            2.0,
        )

    retries = log_lines(captured_logs, "notification_retry")
    assert [(r["route"], r["attempt"]) for r in retries] == [("pd", 1), ("pd", 2), ("pd", 3)]
    origin = f"http://127.0.0.1:{world.pd.port}"
    assert retries[0]["detail"] == f"{origin}: HTTP 500, the receiver failed"
    assert retries[1]["detail"] == f"{origin}: HTTP 429, rate limited; retry after 30 s"
    assert retries[1]["retry_in_s"] == 30.0
    assert "no answer within 0.5 s" in retries[2]["detail"]
    delivered = log_lines(captured_logs, "notification_delivered")
    assert [(d["route"], d["attempts"]) for d in delivered if d["route"] == "pd"] == [
        ("pd", 4),
        ("pd", 1),
    ]


async def test_a_receiver_down_longer_than_give_up_after_is_given_up(
    world: World, captured_logs: io.StringIO
) -> None:
    dead = free_port()
    world.configure(
        {
            "hook": world.notifier(
                "hook", url=f"http://127.0.0.1:{dead}{HOOK_PATH}", give_up_after="2m"
            ),
            "chat": world.notifier("chat"),
        },
        alert_rules(["hook", "chat"]),
    )
    registry = CollectorRegistry()
    async with world.daemon(registry) as daemon:
        await daemon.poll_once()
        await fire(world, daemon)
        await daemon.dispatcher.pump("chat")
        await daemon.dispatcher.pump("hook")
        created = world.clock.now()
        tries = [created]
        while await daemon.store.pending_deliveries():
            await world.advance(await seconds_to_next_try(world, daemon, "hook"))
            before = sample(registry, "hook", "retried")
            await daemon.dispatcher.pump("hook")
            if sample(registry, "hook", "retried") > before:
                tries.append(world.clock.now())
            assert len(tries) < 20
        given_up_at = world.clock.now()
        assert queued(registry, "hook") == 0.0

    ages = [(t - created).total_seconds() for t in tries]
    # Every try was made within the two minutes; the first one due after them gave up instead.
    assert all(age <= 120 for age in ages)
    assert (given_up_at - created).total_seconds() > 120
    # Backoff doubles from 1 s, each wait in the upper half of its step: 1, 2, 4, 8, 16, 32,
    # 64 s at most, half that at least... so 7 to 8 tries fit in 2 min.
    gaps = [b - a for a, b in itertools.pairwise(ages)]
    for number, gap in enumerate(gaps):
        assert 0.5 * 2**number <= gap <= 2**number
    assert 7 <= len(tries) <= 8
    assert sample(registry, "hook", "expired") == 1.0
    assert sample(registry, "hook", "retried") == len(tries)
    assert sample(registry, "hook", "delivered") == 0.0
    assert world.slack.headers() == ["FIRING · CRITICAL: power_off failed on ec300001"]

    [expired] = log_lines(captured_logs, "notification_expired")
    assert expired["level"] == "error"
    assert expired["route"] == "hook"
    assert expired["alert"] == "failed-actions/ec300001|power_off"
    assert expired["status"] == "firing"
    assert expired["attempts"] == len(tries)
    assert expired["given_up_after_s"] == 120.0
    assert expired["last_error"].startswith(f"http://127.0.0.1:{dead}: cannot connect (")


# --- 3. what each answer means ------------------------------------------------------------------

REFUSED = 0  # not a status: the receiver's port is closed


@pytest.mark.parametrize(
    ("route", "status", "outcome"),
    [
        *[("hook", status, "delivered") for status in (200, 202, 204)],
        *[("pd", status, "delivered") for status in (200, 202)],
        *[("hook", status, "rejected") for status in (400, 404, 422)],
        ("pd", 400, "rejected"),
        *[("hook", status, "retried") for status in (429, 500, 502, 503, REFUSED)],
        *[("pd", status, "retried") for status in (429, 503, REFUSED)],
    ],
)
async def test_what_each_answer_means(world: World, route: str, status: int, outcome: str) -> None:
    receiver = world.hook if route == "hook" else world.pd
    path = HOOK_PATH if route == "hook" else PD_PATH
    url = receiver.url(path) if status != REFUSED else f"http://127.0.0.1:{free_port()}{path}"
    world.configure({route: world.notifier(route, url=url)}, alert_rules([route]))
    receiver.default = Answer(status)
    registry = CollectorRegistry()
    async with world.daemon(registry) as daemon:
        await daemon.poll_once()
        await fire(world, daemon)
        await daemon.dispatcher.pump(route)
        first = len(receiver.requests)
        if outcome == "retried":
            [delivery] = await daemon.store.due_deliveries(route, START.replace(year=2100), 1)
            assert delivery.attempts == 1
            # Nothing more before the backoff (1 s, or Retry-After) has passed, then one more try.
            wait = await seconds_to_next_try(world, daemon, route)
            await world.advance(wait - 0.01)
            await daemon.dispatcher.pump(route)
            assert sample(registry, route, "retried") == 1.0
            await world.advance(0.01)
            await daemon.dispatcher.pump(route)
            assert sample(registry, route, "retried") == 2.0
            [delivery] = await daemon.store.due_deliveries(route, START.replace(year=2100), 1)
            assert delivery.attempts == 2
            left = {route: 1}
        else:
            left = {}
        assert await daemon.store.pending_deliveries() == left
    expected_requests = 0 if status == REFUSED else 1
    assert first == expected_requests
    if outcome == "retried":
        assert len(receiver.requests) == 2 * expected_requests
        if status == REFUSED:
            assert "cannot connect" in delivery.last_error
        else:
            assert f"HTTP {status}" in delivery.last_error
    else:
        assert len(receiver.requests) == 1
        assert sample(registry, route, outcome) == 1.0
        assert sample(registry, route, "retried") == 0.0
    others = {"delivered", "rejected", "retried"} - {outcome}
    assert all(sample(registry, route, other) == 0.0 for other in others)


# --- 4. secrets never show ----------------------------------------------------------------------


def assert_no_canary(where: str, data: bytes | str) -> None:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    for canary in (CANARY.lower(), LOWER_CANARY):
        position = text.lower().find(canary)
        assert position < 0, (
            f"{where} shows a secret: …{text[max(0, position - 200) : position + 60]}…"
        )


async def test_no_secret_shows_in_logs_metrics_state_status_or_errors(
    world: World, captured_logs: io.StringIO, tmp_path: Path
) -> None:
    cert, key = self_signed_cert(tmp_path)
    smtp = await FakeSmtp(cert, key, username=SMTP_USERNAME, password=SMTP_PASSWORD).start()
    (world.dir / "smtp.password").write_text(SMTP_PASSWORD + "\n")
    (world.dir / "smtp-ca.pem").write_text(cert.read_text())
    dead = free_port()
    (world.dir / "dead.url").write_text(f"http://127.0.0.1:{dead}/hooks/{CANARY}?t={CANARY}\n")
    # Hostile receivers: they echo the request (routing key, signature, path) in their answers.
    world.pd.echo = True
    world.hook.echo = True
    world.pd.answer(
        500,
        Answer(429, {"Retry-After": "1"}),
        HANG,
        401,
        Answer(302, {"Location": f"/elsewhere/{CANARY}"}),
        400,
    )
    world.slack.answer(Answer(400, text=LOWER_CANARY), 500, HANG, 403, Answer(429), 404)
    world.hook.answer(500, HANG, 422, Answer(503, {"Retry-After": "2"}))
    # One refused login: the client tries each mechanism the server offers (PLAIN, then LOGIN).
    smtp.login_answers += [f"535 5.7.8 bad login for {SMTP_USERNAME}:{SMTP_PASSWORD}"] * 2
    smtp.data_answers += ["451 4.3.0 try later", "554 5.6.0 refused"]
    mail = {
        "type": "email",
        "host": "127.0.0.1",
        "port": smtp.port,
        "from": FROM,
        "to": [MAIL_TO],
        "username": SMTP_USERNAME,
        "password_file": "smtp.password",
        "ca_file": "smtp-ca.pem",
        "timeout": "5s",
    }
    routes = ["pd", "chat", "hook", "mail", "dead", "mail-dead"]
    world.configure(
        {
            "pd": world.notifier("pd", timeout=HANG_TIMEOUT),
            "chat": world.notifier("chat", timeout=HANG_TIMEOUT),
            "hook": world.notifier("hook", timeout=HANG_TIMEOUT),
            "mail": mail,
            "dead": {
                "type": "webhook",
                "url_file": "dead.url",
                "secret_file": "hook.secret",
                "give_up_after": "5m",
            },
            "mail-dead": {**mail, "port": dead, "give_up_after": "5m"},
        },
        alert_rules(routes),
    )
    registry = CollectorRegistry()
    servers = ("ec300001", "ec300002", "ec300003")
    try:
        async with world.daemon(registry) as daemon:
            await daemon.poll_once()
            for server in servers:
                await world.action(server, "failed")
            await world.advance(60)
            await daemon.poll_once()
            await flush(world, daemon, *routes)
            for server in servers:
                await world.action(server, "completed")
            await world.advance(60)
            await daemon.poll_once()
            await flush(world, daemon, *routes)
            running_state = b"".join(
                path.read_bytes() for path in world.dir.glob("state.db*") if path.is_file()
            )
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{daemon.http_port}/status") as status_answer,
            ):
                assert status_answer.status == 200
                status_page = await status_answer.read()
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{daemon.http_port}/metrics") as metrics_answer,
            ):
                metrics_page = await metrics_answer.read()
    finally:
        await smtp.close()

    # The secrets did travel, each to its receiver only: the sends were real.
    assert world.pd.triggers() and all(e["routing_key"] == ROUTING_KEY for e in world.pd.events)
    assert {r.path for r in world.slack.requests} == {SLACK_PATH}
    assert world.slack.headers()
    assert world.hook.answered
    assert all(verify_signature(r, HMAC_SECRET) for r in world.hook.requests)
    assert smtp.mail and all(m.login == SMTP_USERNAME for m in smtp.mail)
    assert all(m.tls for m in smtp.mail)
    assert "[cloudpilot] [RESOLVED] power_off failed on ec300001" in smtp.subjects()
    # ... and every way of failing happened: errors, timeouts, 4xx, 5xx, refusals, give-ups.
    for route in routes:
        assert sample(registry, route, "retried") > 0, route
    for route in ("pd", "chat", "hook", "mail"):
        assert sample(registry, route, "delivered") > 0, route
    rejected = {route: sample(registry, route, "rejected") for route in routes}
    # PagerDuty 400, Slack 400 and 404, webhook 422, SMTP 554 to the message.
    assert rejected == {"pd": 1, "chat": 2, "hook": 1, "mail": 1, "dead": 0, "mail-dead": 0}
    for route in ("dead", "mail-dead"):
        assert sample(registry, route, "expired") == 6.0, route  # 3 firing + 3 resolved
    logged = captured_logs.getvalue()
    for event in ("notification_retry", "notification_rejected", "notification_expired"):
        assert log_lines(captured_logs, event), event
    details = " ".join(line.get("detail", "") for line in log_lines(captured_logs))
    assert "no answer within 0.5 s" in details
    assert "login refused (535)" in details
    assert "cannot connect" in details
    assert "HTTP 302" in details

    assert_no_canary("the logs", logged)
    assert_no_canary("the Prometheus exposition", generate_latest(registry))
    assert_no_canary("/metrics", metrics_page)
    assert_no_canary("/status", status_page)
    assert_no_canary("the state files while running", running_state)
    state_files = [world.dir / f"state.db{suffix}" for suffix in ("", "-wal", "-shm")]
    assert state_files[0].stat().st_size > 0
    for path in state_files:
        if path.exists():
            assert_no_canary(path.name, path.read_bytes())
    # Some secrets travel encoded: the SMTP login in base64, for one.
    encoded = base64.b64encode(f"\0{SMTP_USERNAME}\0{SMTP_PASSWORD}".encode())
    assert encoded not in logged.encode()
    assert encoded not in state_files[0].read_bytes()


@pytest.mark.parametrize(
    "url",
    [
        f"http://hooks.example.com/services/{CANARY}/{LOWER_CANARY}",
        f"https://user:{CANARY}@hooks.example.com/services/x",
        f"https://169.254.169.254/latest/{CANARY}",
        f"ftp://hooks.example.com/{CANARY}",
        f"hooks.example.com/{CANARY}",
    ],
)
async def test_a_bad_url_file_is_a_config_error_that_does_not_quote_it(
    world: World, captured_logs: io.StringIO, url: str
) -> None:
    (world.dir / "slack.url").write_text(url + "\n")
    world.configure({"chat": world.notifier("chat")}, alert_rules(["chat"]))
    daemon = world.daemon()
    with pytest.raises(ConfigError) as raised:
        await daemon.start()
    message = str(raised.value)
    assert "notifiers.chat.url_file" in message
    assert_no_canary("the ConfigError", message)
    assert_no_canary("the ConfigError's repr", repr(raised.value))
    assert_no_canary("the logs", captured_logs.getvalue())


# --- 5. the pagination race, end to end ---------------------------------------------------------

EVERY_FAILURE_RULES = """\
rules:
  - name: every-failed-action
    on: seeweb.action.failed
    throttle: {once_within: 1h, group_by: [data.id]}
    do:
      - alert:
          severity: warning
          summary: "action {{ event.data.id }} ({{ event.data.type }}) failed"
          to: [pd]
"""
POLLS = 6
# The simulator adds this many finished actions (a quarter of them failed) after every page of
# GET /actions it serves, so each multi-page walk has new actions landing between its pages.
INSERTS_PER_PAGE = 7


async def test_actions_landing_while_paging_each_trigger_pagerduty_exactly_once(
    world: World,
) -> None:
    world.configure({"pd": world.notifier("pd", rate=100)}, EVERY_FAILURE_RULES)
    rng = random.Random(20261110)
    registry = CollectorRegistry()
    async with world.daemon(registry) as daemon:
        await daemon.poll_once()
        before = max(action["id"] for action in await world.world_actions())
        status, _ = await world.sim.call(
            "POST", "/_sim/faults", json={"insert_actions_while_paging": INSERTS_PER_PAGE}
        )
        assert status == 200
        posted = 0
        for _ in range(POLLS):
            # More than a page (50) lands between polls, some still running when polled.
            for _ in range(rng.randint(60, 110)):
                posted += 1
                body = {
                    "resource": rng.choice(["ec300001", "ec300002", "ec300003"]),
                    "type": rng.choice(["power_on", "power_off", "rollback"]),
                    "outcome": rng.choice(["completed", "failed", "error"]),
                    "duration_s": rng.choice([0, 0, 0, 90]),
                }
                status, _ = await world.sim.call("POST", "/_sim/actions", json=body)
                assert status == 200
            await daemon.poll_once()
            await world.advance(60)
        status, _ = await world.sim.call("DELETE", "/_sim/faults")
        assert status == 200
        await world.advance(120)  # let the last running actions end
        await daemon.poll_once()
        await flush(world, daemon, "pd")
        assert await daemon.store.pending_deliveries() == {}

    actions = [a for a in await world.world_actions() if a["id"] > before]
    failed = {a["id"] for a in actions if a["status"] in ("failed", "error")}
    assert all(a["status"] in ("completed", "failed", "error") for a in actions)
    keys = [event["dedup_key"] for event in world.pd.triggers()]
    assert [key for key, n in Counter(keys).items() if n > 1] == []  # none triggered twice
    expected = {f"cloudpilot/every-failed-action/{action_id}" for action_id in failed}
    assert sorted(expected - set(keys)) == []  # none missed
    assert set(keys) == expected
    assert world.pd.incidents == keys
    assert len(world.pd.requests) == len(failed)  # and no send was repeated
    assert sample(registry, "pd", "delivered") == len(failed)

    # The race really ran: walks of several pages, with actions inserted between their pages.
    served = [r for r in await world.sim.requests() if r["path"] == "/ecs/v2/actions"]
    later_pages = [r for r in served if int(r["query"].get("start", 0)) > 0]
    assert len(later_pages) >= POLLS
    inserted_by_simulator = len(actions) - posted
    assert inserted_by_simulator >= INSERTS_PER_PAGE * (POLLS + len(later_pages))
    assert len(failed) > 100


# --- 6. one route down does not hold back another -----------------------------------------------


async def test_a_dead_route_keeps_its_delivery_until_its_receiver_comes_up(world: World) -> None:
    port = free_port()
    world.configure(
        {
            "chat": world.notifier("chat"),
            "hook": world.notifier("hook", url=f"http://127.0.0.1:{port}{HOOK_PATH}"),
        },
        alert_rules(["chat", "hook"]),
    )
    registry = CollectorRegistry()
    late = HttpReceiver(Answer(200))
    try:
        async with world.daemon(registry) as daemon:
            await daemon.poll_once()
            await fire(world, daemon)
            await daemon.dispatcher.pump("chat")
            await daemon.dispatcher.pump("hook")
            assert world.slack.headers() == ["FIRING · CRITICAL: power_off failed on ec300001"]
            assert await daemon.store.pending_deliveries() == {"hook": 1}
            assert queued(registry, "hook") == 1.0
            assert not queued(registry, "chat")  # 0, or no series if never queued when counted

            # Still down at the next try: the entry stays, with one more attempt on it.
            await world.advance(await seconds_to_next_try(world, daemon, "hook"))
            await daemon.dispatcher.pump("hook")
            [delivery] = await daemon.store.due_deliveries("hook", START.replace(year=2100), 1)
            assert delivery.attempts == 2
            assert "cannot connect" in delivery.last_error

            # The receiver comes up on that port: the next try delivers it.
            await late.start(port)
            await world.advance(await seconds_to_next_try(world, daemon, "hook"))
            assert await daemon.dispatcher.pump("hook") is None
            assert await daemon.store.pending_deliveries() == {}
            assert queued(registry, "hook") == 0.0
    finally:
        await late.close()
    [request] = late.requests
    assert request.path == HOOK_PATH
    assert verify_signature(request, HMAC_SECRET)
    assert request.json()["alert"]["dedup_key"] == FAILED_KEY
    assert request.json()["status"] == "firing"
    assert sample(registry, "hook", "retried") == 2.0
    assert sample(registry, "hook", "delivered") == 1.0
    assert sample(registry, "chat", "delivered") == 1.0


async def test_a_queued_delivery_survives_a_restart_onto_a_fixed_config(world: World) -> None:
    dead = f"http://127.0.0.1:{free_port()}{HOOK_PATH}"
    notifiers = {"chat": world.notifier("chat"), "hook": world.notifier("hook", url=dead)}
    world.configure(notifiers, alert_rules(["chat", "hook"]))
    async with world.daemon() as daemon:
        await daemon.poll_once()
        await fire(world, daemon)
        await daemon.dispatcher.pump("chat")
        await daemon.dispatcher.pump("hook")
        assert await daemon.store.pending_deliveries() == {"hook": 1}
    assert len(world.slack.requests) == 1

    # The operator points the route at a receiver that works, and restarts.
    world.configure({**notifiers, "hook": world.notifier("hook")}, rules=None)
    registry = CollectorRegistry()
    async with world.daemon(registry) as daemon:
        assert queued(registry, "hook") == 1.0
        await world.advance(await seconds_to_next_try(world, daemon, "hook"))
        assert await daemon.dispatcher.pump("hook") is None
        assert await daemon.dispatcher.pump("chat") is None
        assert await daemon.store.pending_deliveries() == {}
    [request] = world.hook.requests
    assert verify_signature(request, HMAC_SECRET)
    assert request.json()["status"] == "firing"
    assert len(world.slack.requests) == 1  # delivered once, before the restart; not again
    assert sample(registry, "hook", "delivered") == 1.0


# --- ordering: a resolve never overtakes its trigger --------------------------------------------


async def test_a_resolve_queued_while_its_trigger_waits_to_retry_does_not_overtake_it(
    world: World,
) -> None:
    # PagerDuty asks for five minutes' rest; meanwhile the action is retried and completes.
    world.configure({"pd": world.notifier("pd")}, alert_rules(["pd"]))
    world.pd.answer(Answer(429, {"Retry-After": "300"}))
    async with world.daemon() as daemon:
        await daemon.poll_once()
        await fire(world, daemon)
        await daemon.dispatcher.pump("pd")
        assert [r.status for r in world.pd.requests] == [429]
        await fix(world, daemon)  # one minute later: the resolve is queued behind the trigger
        await daemon.dispatcher.pump("pd")
        # Nothing goes before the trigger may: sending the resolve first would resolve nothing,
        # and the trigger after it would open an incident that no one ever resolves.
        assert [r.status for r in world.pd.requests] == [429]
        await flush(world, daemon, "pd")
    assert [(e["event_action"], e["dedup_key"]) for e in world.pd.events] == [
        ("trigger", FAILED_KEY),
        ("resolve", FAILED_KEY),
    ]
    assert world.pd.incidents == [FAILED_KEY]
    assert world.pd.open == set()
