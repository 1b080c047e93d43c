"""`delete_pod` against the simulator: one DELETE per pod, never a second, clear about the rest."""

from __future__ import annotations

import json
import logging
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from configs import write_config
from conftest import START, LinkedClock, SimFactory, SimHandle
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from structlog.testing import LogCapture
from test_clients_vs_sim import API_KEY, PASSWORD, fake_clock, k8sgpu

from daemon.actions.server import ActionError
from daemon.app import Daemon
from daemon.cli import main
from daemon.clock import FakeClock
from daemon.facts import Facts
from daemon.models import Decision, Event, Mode, OutcomeStatus
from daemon.observability.metrics import Metrics
from daemon.observability.problems import Problems
from daemon.policies.guard import SnapshotGuard
from daemon.provider import Wiring, client_settings
from daemon.providers.k8sgpu.actions import DeletePodAction, DeletePodParams
from daemon.registry import BUILTIN, load_config, vocabulary
from daemon.rules.action import ActionContext, params_as_data
from daemon.rules.compiled import GuardSpec
from daemon.rules.loader import RuleError, load_rules
from daemon.simulator.http import Credentials
from daemon.state import LedgerState

SCENARIO = """
name: pods-to-delete
seed: 5
clusters:
  - {name: skg00018, label: lab}
  - {name: skg100004, label: ops}
pods:
  - {cluster: skg00018, runtime_class: seeweb-nvidia-1xa6000, name: trainer, age: 2h}
  - {cluster: skg00018, runtime_class: seeweb-nvidia-1xl4, name: ended, age: 3h}
  - {cluster: skg100004, runtime_class: seeweb-nvidia-1xa100, name: ops-pod, age: 1h}
timeline:
  - {at: 0s, pod_end: {pod: ended, failed: false}}
  - {at: 5m, pod_start: {cluster: skg00018, runtime_class: seeweb-nvidia-1xl4, name: stray}}
"""

UNKNOWN = "00000000-0000-4000-8000-000000000000"
POD_PATH = "/k8sgpu/v1/pod/"
LOGIN = "/k8sgpu/v1/user/login/"


def logger() -> tuple[structlog.typing.FilteringBoundLogger, LogCapture]:
    """Return a logger whose entries land in a LogCapture."""
    capture = LogCapture()
    log = structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )
    return log, capture


def uuid_of(h: SimHandle, name: str) -> str:
    """Return the uuid of the simulated pod with this remote name."""
    return str(next(pod.uuid for pod in h.sim.world.pods.values() if pod.remote_name == name))


def pod_event(uuid: str, name: str = "trainer") -> Event:
    """Return a `k8sgpu.pod.failed` event about a pod, as the k8sgpu source makes it."""
    return Event(
        type="k8sgpu.pod.failed",
        key=f"k8sgpu.pod:{uuid}:failed",
        time=START,
        resource=uuid,
        data={"uuid": uuid, "cluster": "skg00018", "name": name, "status": "failed"},
        source="k8sgpu",
    )


def context(params: dict[str, Any], event: Event | None, clock: FakeClock) -> ActionContext:
    """Return the context of one enforced `delete_pod` decision with these parameters."""
    decision = Decision(
        key="gpu/0/e1",
        rule="gpu",
        action="delete_pod",
        params=params_as_data(DeletePodParams.model_validate(params)),
        mode=Mode.ENFORCE,
        event=event,
        time=START,
    )
    return ActionContext(decision=decision, clock=clock, log=logger()[0], timeout_s=60.0)


class Rig:
    """A `delete_pod` action on a Serverless GPU client to the simulator."""

    def __init__(self, h: SimHandle) -> None:
        self.h = h
        self.clock = fake_clock()
        self.action = DeletePodAction(k8sgpu(h, self.clock))

    def ctx(self, params: dict[str, Any], event: Event | None = None) -> ActionContext:
        """Return a decision's context on the rig's clock."""
        return context(params, event, self.clock)

    async def deletes(self) -> list[str]:
        """Return the paths of the DELETE requests the simulator served, in order."""
        return [r["path"] for r in await self.h.requests() if r["method"] == "DELETE"]

    async def world_pod(self, uuid: str) -> dict[str, Any]:
        """Return a pod as `/_sim/world` shows it."""
        status, world = await self.h.call("GET", "/_sim/world")
        assert status == 200
        return next(pod for pod in world["pods"] if pod["uuid"] == uuid)


@pytest.fixture
async def rig(simulator: SimFactory) -> Rig:
    h = await simulator(SCENARIO, credentials=Credentials(api_token=API_KEY, password=PASSWORD))
    return Rig(h)


async def test_a_running_pod_is_deleted_with_one_request(rig: Rig) -> None:
    uuid = uuid_of(rig.h, "trainer")
    ctx = rig.ctx({"pod": uuid, "cluster": "skg00018", "name": "trainer"})

    assert await rig.action.reconcile(ctx) is None  # nothing asked yet: run it
    outcome = await rig.action.run(ctx)

    assert outcome.status is OutcomeStatus.DONE
    assert outcome.detail == f"pod trainer ({uuid}): deletion requested"
    assert await rig.deletes() == [f"{POD_PATH}{uuid}"]
    assert rig.h.sim.world.pods[uuid].in_deletion
    await rig.h.advance(11)
    assert (await rig.world_pod(uuid))["status"] == "terminated"


async def test_running_again_sends_no_second_delete(rig: Rig) -> None:
    uuid = uuid_of(rig.h, "trainer")
    ctx = rig.ctx({"pod": uuid})

    first = await rig.action.run(ctx)
    again = await rig.action.run(ctx)  # in deletion, not yet terminated
    reconciled = await rig.action.reconcile(ctx)
    await rig.h.advance(11)
    after_end = await rig.action.run(ctx)

    assert first.detail == f"pod {uuid}: deletion requested"
    assert (again.status, again.detail) == (
        OutcomeStatus.DONE,
        f"pod {uuid}: already in deletion, not deleted again",
    )
    assert reconciled is not None
    assert (reconciled.status, reconciled.detail) == (
        OutcomeStatus.DONE,
        f"pod {uuid}: in deletion",
    )
    assert (after_end.status, after_end.detail) == (
        OutcomeStatus.DONE,
        f"pod {uuid}: already terminated, not deleted again",
    )
    assert await rig.deletes() == [f"{POD_PATH}{uuid}"]


async def test_a_pod_that_ended_on_its_own_is_not_deleted(rig: Rig) -> None:
    uuid = uuid_of(rig.h, "ended")
    outcome = await rig.action.run(rig.ctx({"pod": uuid, "name": "ended"}))
    reconciled = await rig.action.reconcile(rig.ctx({"pod": uuid}))

    assert (outcome.status, outcome.detail) == (
        OutcomeStatus.DONE,
        f"pod ended ({uuid}): already terminated, not deleted again",
    )
    assert reconciled is not None and reconciled.status is OutcomeStatus.DONE
    assert await rig.deletes() == []


async def test_an_unknown_pod_is_skipped_and_counts_as_gone(rig: Rig) -> None:
    outcome = await rig.action.run(rig.ctx({"pod": UNKNOWN}))
    reconciled = await rig.action.reconcile(rig.ctx({"pod": UNKNOWN}))

    assert (outcome.status, outcome.detail) == (
        OutcomeStatus.SKIPPED,
        f"pod {UNKNOWN} not found: nothing to delete",
    )
    assert reconciled is not None
    assert (reconciled.status, reconciled.detail) == (OutcomeStatus.DONE, f"pod {UNKNOWN}: gone")
    assert await rig.deletes() == []
    gets = [r for r in await rig.h.requests() if r["path"] == f"{POD_PATH}{UNKNOWN}"]
    assert [(r["method"], r["status"]) for r in gets] == [("GET", 404), ("GET", 404)]


async def test_the_pod_defaults_to_the_events(rig: Rig) -> None:
    uuid = uuid_of(rig.h, "trainer")
    outcome = await rig.action.run(rig.ctx({}, pod_event(uuid)))

    assert outcome.detail == f"pod {uuid}: deletion requested"
    assert await rig.deletes() == [f"{POD_PATH}{uuid}"]


async def test_a_pod_is_needed_and_an_event_resource_must_be_one(rig: Rig) -> None:
    server_event = Event(
        type="seeweb.action.failed", key="a:1", time=START, resource="ec200001", source="actions"
    )
    with pytest.raises(ActionError, match="no pod: give `pod`"):
        await rig.action.run(rig.ctx({}))
    with pytest.raises(ActionError, match="event resource 'ec200001' is not a pod uuid"):
        await rig.action.run(rig.ctx({}, server_event))
    assert await rig.h.requests() == []


async def test_a_pod_of_another_cluster_is_left_alone(rig: Rig) -> None:
    uuid = uuid_of(rig.h, "ops-pod")
    ctx = rig.ctx({"pod": uuid, "cluster": "skg00018"})

    with pytest.raises(ActionError, match=f"pod {uuid} is in cluster 'skg100004', not 'skg00018'"):
        await rig.action.run(ctx)
    assert await rig.deletes() == []
    assert not rig.h.sim.world.pods[uuid].in_deletion


async def test_without_k8sgpu_the_action_says_what_to_configure() -> None:
    action = DeletePodAction(None)
    ctx = context({"pod": UNKNOWN}, None, FakeClock(START))
    with pytest.raises(ActionError, match=r"add a \[k8sgpu\] section"):
        await action.run(ctx)


# -- declaration: params, schema, rules, guard ----------------------------------------------------


def test_params_take_a_uuid_and_say_they_are_not_templated() -> None:
    params = DeletePodParams.model_validate({"pod": UNKNOWN.upper(), "name": "x"})
    assert params.pod == UNKNOWN
    with pytest.raises(ValidationError, match="parameters are not templated"):
        DeletePodParams.model_validate({"pod": "{{ event.data.uuid }}"})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        DeletePodParams.model_validate({"pod": UNKNOWN, "uuid": UNKNOWN})
    with pytest.raises(ValidationError):
        DeletePodParams.model_validate({"cluster": ""})


def test_delete_pod_is_destructive_waits_for_k8sgpu_and_is_not_guarded() -> None:
    action = DeletePodAction(None)
    assert action.destructive
    assert action.depends_on == frozenset({"k8sgpu"})
    assert "delete_pod" not in GuardSpec().risky
    assert not guard_with(GuardSpec()).covers(action)
    # Even listed as risky: the guard snapshots servers, and a GPU pod has no snapshots.
    assert not guard_with(GuardSpec(risky=(*GuardSpec().risky, "delete_pod"))).covers(action)


def guard_with(spec: GuardSpec) -> SnapshotGuard:
    """Return a snapshot guard that applies this guard section."""
    return SnapshotGuard(backends={}, spec=lambda: spec, metrics=Metrics(CollectorRegistry()))


def test_schema_and_rules_know_delete_pod(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    rule = next(d for d in schema["$defs"].values() if d.get("title") == "Rule")
    steps = rule["properties"]["do"]["items"]["oneOf"]
    (step,) = [step for step in steps if "delete_pod" in step["properties"]]
    ref = step["properties"]["delete_pod"]["anyOf"][0]["$ref"]
    params = schema["$defs"][ref.rsplit("/", 1)[-1]]
    assert sorted(params["properties"]) == ["cluster", "name", "pod"]
    assert params["properties"]["pod"]["format"] == "uuid"
    assert params["additionalProperties"] is False

    good = tmp_path / "good.yaml"
    good.write_text(
        "rules:\n"
        "  - name: delete-failed-pods\n"
        "    on: k8sgpu.pod.failed\n"
        "    do:\n"
        "      - delete_pod:\n"
        "      - delete_pod: {cluster: skg00018, name: trainer}\n"
        f"      - delete_pod: {{pod: {UNKNOWN}}}\n"
    )
    rule = load_rules([good], vocabulary()).rules[0]
    assert [step.action for step in rule.steps] == ["delete_pod"] * 3
    assert rule.steps[2].params == {"pod": UNKNOWN}

    templated = tmp_path / "templated.yaml"
    templated.write_text(
        "rules:\n"
        "  - name: delete-failed-pods\n"
        "    on: k8sgpu.pod.failed\n"
        "    do:\n"
        '      - delete_pod: {pod: "{{ event.data.uuid }}"}\n'
    )
    with pytest.raises(RuleError, match="leave `pod` out to use the pod of the k8sgpu event"):
        load_rules([templated], vocabulary())


# -- in the daemon: sources and actions share one client ------------------------------------------

RULES = """\
rules:
  - name: delete-stray-pods
    on: k8sgpu.event.started
    match: {data.remote_reference_name: "stray*"}
    do:
      - delete_pod: {cluster: skg00018}
"""


def gpu_daemon(h: SimHandle, tmp_path: Path) -> Daemon:
    """Return a daemon with only a [k8sgpu] section, on the simulator, with a LinkedClock."""
    config = write_config(tmp_path, k8sgpu=h.url, rules=RULES)
    (tmp_path / "k8sgpu-password").write_text(f"{PASSWORD}\n")  # this simulator's own
    return Daemon(
        load_config(config),
        clock=LinkedClock(h),
        registry=CollectorRegistry(),
        rng=random.Random(5),
    )


async def test_the_daemon_deletes_a_stray_pod_once(simulator: SimFactory, tmp_path: Path) -> None:
    h = await simulator(SCENARIO, credentials=Credentials(api_token=API_KEY, password=PASSWORD))
    daemon = gpu_daemon(h, tmp_path)
    async with daemon:
        await daemon.poll_once()
        daemon.clock.advance(timedelta(minutes=6).total_seconds())  # type: ignore[attr-defined]
        await daemon.poll_once()
        await daemon.runner.wait_idle()
        stray = uuid_of(h, "stray")
        daemon.clock.advance(11)  # type: ignore[attr-defined]
        await daemon.poll_once()  # sees the pod terminated: no new decision, no new DELETE
        await daemon.runner.wait_idle()
        entries = await daemon.store.ledger(rule="delete-stray-pods")
    log = await h.requests()

    assert [(e.state, e.detail) for e in entries] == [
        (LedgerState.DONE, f"pod {stray}: deletion requested")
    ]
    assert [r["path"] for r in log if r["method"] == "DELETE"] == [f"{POD_PATH}{stray}"]
    # The source and the action share one client, so one login serves both.
    assert [r["status"] for r in log if r["path"] == LOGIN] == [200]
    assert h.sim.world.pods[stray].status == "terminated"
    assert h.sim.world.pods[stray].in_deletion


async def test_the_registry_builds_the_k8sgpu_client(simulator: SimFactory, tmp_path: Path) -> None:
    h = await simulator(SCENARIO)
    config = load_config(gpu_daemon(h, tmp_path).config.path)
    metrics = Metrics(CollectorRegistry())
    async with aiohttp.ClientSession() as session:
        wiring = Wiring(
            session=session,
            clock=FakeClock(START),
            log=logger()[0],
            metrics=metrics,
            problems=Problems(metrics=metrics, clock=FakeClock(START)),
            facts=Facts(),
            settings=client_settings(config),
            secret=config.secret,
        )
        built = BUILTIN.build(config, wiring)
        registry = BUILTIN.actions(
            built, session=session, clock=FakeClock(START), log=logger()[0], alerts=_NoAlerts()
        )
    assert list(built.clients) == ["k8sgpu"]
    assert [source.name for source in built.sources] == ["k8sgpu"]
    action = registry.get("delete_pod")
    assert isinstance(action, DeletePodAction) and action.client is built.clients["k8sgpu"]


class _NoAlerts:
    async def raise_alert(self, decision: Decision) -> Any:
        raise AssertionError("no alert expected")
