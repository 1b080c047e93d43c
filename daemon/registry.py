"""The provider registry: every provider package's declaration, found by name.

A provider package (`daemon/providers/<name>/`) exports `SPEC`, a `ProviderSpec`: its traits
(capabilities, where its CPU facts come from), its config section and sources' poll intervals,
and how to build its client, sources, server backend and own actions. The daemon, `plan` and
`exec` build what the config enables through `Providers`; the policies, the guard and the rule
loader ask capabilities. Adding a provider is adding a package: `builtin()` finds it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import structlog

import daemon.providers as providers_package
from daemon.actions.base import ActionRegistry
from daemon.actions.log import LogAction
from daemon.actions.server import (
    SERVER_ACTIONS,
    ServerBackends,
    server_actions,
)
from daemon.actions.webhook import WebhookAction
from daemon.clock import Clock
from daemon.config import Config, read_config
from daemon.notify.alert_action import AlertAction, AlertRaiser
from daemon.provider import ProviderSpec, Wiring
from daemon.rules.action import Action, ActionParams
from daemon.rules.vocabulary import Capability, ProviderTraits, Vocabulary
from daemon.sources.base import Source

Logger = structlog.typing.FilteringBoundLogger


@dataclass(slots=True)
class Built:
    """The parts of the providers the config enables, sharing one session."""

    clients: dict[str, Any] = field(default_factory=dict)
    sources: list[Source] = field(default_factory=list)
    backends: ServerBackends = field(default_factory=ServerBackends)


class Providers:
    """The provider packages, in order: the first that offers an action is its default."""

    def __init__(self, specs: Sequence[ProviderSpec]) -> None:
        self._specs = {spec.name: spec for spec in specs}
        if len(self._specs) != len(specs):
            raise ValueError("a provider is registered twice")
        self._vocabulary: Vocabulary | None = None

    def __iter__(self) -> Iterator[ProviderSpec]:
        return iter(self._specs.values())

    @property
    def traits(self) -> dict[str, ProviderTraits]:
        """Return every provider's traits by name."""
        return {name: spec.traits for name, spec in self._specs.items()}

    # --- config ----------------------------------------------------------------------------------

    def load_config(self, path: Path, environ: Mapping[str, str] | None = None) -> Config:
        """Read a config file whose provider sections are these providers'."""
        return read_config(path, [spec.config_section() for spec in self], environ)

    def configured(self, config: Config) -> list[ProviderSpec]:
        """Return the providers the config has a section for."""
        return [spec for spec in self if config.model.provider(spec.name) is not None]

    # --- rules -----------------------------------------------------------------------------------

    def vocabulary(self) -> Vocabulary:
        """Return what rule files may name: every action's parameters, every provider's traits."""
        if self._vocabulary is None:
            self._vocabulary = self._gather()
        return self._vocabulary

    def _gather(self) -> Vocabulary:
        traits = self.traits
        actions: dict[str, type[ActionParams]] = {
            kind.name: kind.params_model for kind in (AlertAction, LogAction, WebhookAction)
        }
        for kind in SERVER_ACTIONS:
            actions[kind.name] = kind.params_for(traits)
        for spec in self:
            for action in spec.actions(None):
                actions[action.name] = action.params_model
        return Vocabulary(actions, traits)

    # --- building --------------------------------------------------------------------------------

    def build(self, config: Config, wiring: Wiring) -> Built:
        """Return the clients, sources and server backends of the configured providers."""
        built = Built()
        configured = self.configured(config)
        for spec in configured:
            built.clients[spec.name] = spec.client(config.model.provider(spec.name), wiring)

        def find(capability: Capability) -> Any:
            return next(
                (built.clients[spec.name] for spec in configured if spec.traits.offers(capability)),
                None,
            )

        power: dict[str, Any] = {}
        cores: dict[str, Any] = {}
        snapshots: dict[str, Any] = {}
        for spec in configured:
            client = built.clients[spec.name]
            section = config.model.provider(spec.name)
            built.sources.extend(spec.sources(client, section, wiring, find))
            if spec.servers is not None:
                backend = spec.servers(client)
                for capability, found in (
                    (Capability.POWER, power),
                    (Capability.SET_CORES, cores),
                    (Capability.SNAPSHOT, snapshots),
                ):
                    if spec.traits.offers(capability):
                        found[spec.name] = backend
        built.backends = ServerBackends(power=power, cores=cores, snapshots=snapshots)
        return built

    def actions(
        self,
        built: Built,
        *,
        session: aiohttp.ClientSession,
        clock: Clock,
        log: Logger,
        alerts: AlertRaiser,
        resolver: aiohttp.abc.AbstractResolver | None = None,
    ) -> ActionRegistry:
        """Return the registry of every action: the built-in ones and the providers' own."""
        builtins: list[Action] = [
            AlertAction(alerts),
            LogAction(log=log),
            WebhookAction(session=session, clock=clock, resolver=resolver),
        ]
        params = self.vocabulary().actions
        registry = ActionRegistry([*builtins, *server_actions(built.backends, params)])
        for spec in self:
            for action in spec.actions(built.clients.get(spec.name)):
                registry.add(action)
        return registry


def builtin() -> Providers:
    """Return the providers Cloudpilot ships: each package in `daemon/providers/` with a SPEC.

    A new provider is found by being there: nothing lists the packages.
    """
    specs: list[ProviderSpec] = []
    for found in pkgutil.iter_modules(providers_package.__path__):
        if not found.ispkg:
            continue
        module = importlib.import_module(f"{providers_package.__name__}.{found.name}")
        spec = getattr(module, "SPEC", None)
        if not isinstance(spec, ProviderSpec):
            raise TypeError(f"{module.__name__} has no SPEC (a ProviderSpec)")
        specs.append(spec)
    return Providers(sorted(specs, key=lambda spec: (spec.order, spec.name)))


BUILTIN = builtin()


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, check and resolve a config file with the shipped providers' sections."""
    return BUILTIN.load_config(path, environ)


def vocabulary() -> Vocabulary:
    """Return what rule files may name with the shipped providers."""
    return BUILTIN.vocabulary()
