"""The `log` action and the registry of built-in actions."""

from __future__ import annotations

import aiohttp
import pytest
from action_fakes import GatedAction, capture_logger, events_named, make_decision
from pydantic import ValidationError

from daemon.actions.base import ActionRegistry
from daemon.actions.log import LogAction, LogParams
from daemon.actions.server import ServerParams, SetCoresParams
from daemon.actions.webhook import WebhookParams
from daemon.clock import FakeClock
from daemon.models import Decision, Outcome, OutcomeStatus
from daemon.notify.alert_action import AlertParams
from daemon.providers.k8sgpu.actions import DeletePodParams
from daemon.registry import BUILTIN, Built, vocabulary
from daemon.rules.action import ActionContext


async def test_log_writes_the_message_with_rule_and_event() -> None:
    log, capture = capture_logger()
    decision = make_decision(
        action="log", params={"message": "power off failed on {{ x }}", "level": "warning"}
    )
    ctx = ActionContext(decision=decision, clock=FakeClock(), log=log, timeout_s=5.0)
    outcome = await LogAction(log=log).run(ctx)
    assert outcome.status is OutcomeStatus.DONE
    [entry] = events_named(capture, "rule_log")
    assert entry == {
        "event": "rule_log",
        "log_level": "warning",
        "message": "power off failed on {{ x }}",  # literal: templating is not this action's
        "rule": "r",
        "decision_key": "r/0/e1",
        "event_type": "seeweb.action.failed",
        "event_key": "seeweb.action:709:failed",
        "resource": "ec200001",
    }
    assert await LogAction(log=log).reconcile(ctx) is None


def test_log_params() -> None:
    assert LogParams.model_validate({"message": "hi"}).level == "info"
    with pytest.raises(ValidationError):
        LogParams.model_validate({"message": "hi", "level": "critical"})
    with pytest.raises(ValidationError):
        LogParams.model_validate({"message": ""})
    with pytest.raises(ValidationError):
        LogParams.model_validate({"message": "hi", "extra": 1})


class _Raiser:
    def __init__(self) -> None:
        self.raised: list[Decision] = []

    async def raise_alert(self, decision: Decision) -> Outcome:
        self.raised.append(decision)
        return Outcome(OutcomeStatus.DONE, "queued")


async def test_default_registry_has_the_built_in_actions() -> None:
    log, _ = capture_logger()
    raiser = _Raiser()
    async with aiohttp.ClientSession() as session:
        registry = BUILTIN.actions(
            Built(), session=session, clock=FakeClock(), log=log, alerts=raiser
        )
    assert list(registry) == [
        "alert",
        "delete_pod",
        "log",
        "power_off",
        "power_on",
        "set_cores",
        "snapshot",
        "webhook",
    ]
    assert "webhook" in registry
    assert "delete_server" not in registry
    models = registry.params_models()
    assert {name: models[name] for name in ("alert", "delete_pod", "log", "webhook")} == {
        "alert": AlertParams,
        "delete_pod": DeletePodParams,
        "log": LogParams,
        "webhook": WebhookParams,
    }
    # The server actions' parameters name the providers that offer each one.
    assert issubclass(models["set_cores"], SetCoresParams)
    assert all(issubclass(models[name], ServerParams) for name in ("power_off", "snapshot"))
    assert models["set_cores"].model_fields["provider"].default == "glesys"
    assert models["power_off"].model_fields["provider"].default == "seeweb"
    assert vocabulary().actions == models
    assert not registry.get("webhook").destructive
    decision = make_decision(action="alert", params={"summary": "s", "to": ["oncall"]})
    ctx = ActionContext(decision=decision, clock=FakeClock(), log=log, timeout_s=5.0)
    assert (await registry.get("alert").run(ctx)).status is OutcomeStatus.DONE
    assert raiser.raised == [decision]


def test_a_name_registers_once() -> None:
    registry = ActionRegistry([GatedAction()])
    with pytest.raises(ValueError, match="registered twice"):
        registry.add(GatedAction())
    with pytest.raises(KeyError):
        registry.get("missing")
