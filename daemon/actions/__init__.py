"""Actions a rule can take, found by their YAML name, and the runner that carries them out."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
import structlog
from aiohttp.abc import AbstractResolver

from daemon.actions.base import ActionRegistry
from daemon.actions.log import LogAction
from daemon.actions.pods import DeletePodAction
from daemon.actions.server import (
    PowerOffAction,
    PowerOnAction,
    ServerClients,
    SetCoresAction,
    SnapshotAction,
)
from daemon.actions.webhook import WebhookAction
from daemon.clock import Clock
from daemon.notify.alert_action import AlertAction, AlertRaiser
from daemon.rules.action import Action, ActionParams

_ACTION_TYPES: tuple[type[Action], ...] = (
    AlertAction,
    LogAction,
    WebhookAction,
    PowerOffAction,
    PowerOnAction,
    SetCoresAction,
    SnapshotAction,
    DeletePodAction,
)


def action_params_models() -> Mapping[str, type[ActionParams]]:
    """Return each built-in action's parameter model by name, without building the actions."""
    return {action.name: action.params_model for action in _ACTION_TYPES}


def default_registry(
    *,
    session: aiohttp.ClientSession,
    clock: Clock,
    log: structlog.typing.FilteringBoundLogger,
    alerts: AlertRaiser,
    clients: ServerClients | None = None,
    resolver: AbstractResolver | None = None,
) -> ActionRegistry:
    """Return a registry of the built-in actions, sharing the process's HTTP session."""
    clients = clients or ServerClients()
    return ActionRegistry(
        [
            AlertAction(alerts),
            LogAction(log=log),
            WebhookAction(session=session, clock=clock, resolver=resolver),
            *(
                server_action(clients)
                for server_action in (PowerOffAction, PowerOnAction, SetCoresAction, SnapshotAction)
            ),
            DeletePodAction(clients),
        ]
    )


__all__ = ["ActionRegistry", "action_params_models", "default_registry"]
