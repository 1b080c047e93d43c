"""Bad billing answers: the billing source names the request and the field, and changes nothing.

The source is built as `daemon/app.py` builds it (Seeweb client, k8sgpu client, shared facts),
against the in-process simulator, whose `/_sim/faults` cuts bodies (`truncate`) or drops top-level
keys (`omit`). A bill that cannot be read must leave the month-to-date facts and gauges as the last
good poll left them: budgets would otherwise act on half a bill.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import SimFactory, SimHandle
from prometheus_client import CollectorRegistry
from test_clients_vs_sim import API_KEY, PASSWORD, fake_clock, k8sgpu, seeweb, sim_ok

from daemon.client.errors import ProviderError
from daemon.clock import FakeClock
from daemon.facts import Facts
from daemon.observability.metrics import Metrics
from daemon.providers.seeweb.sources.billing import BillingSource
from daemon.simulator.http import Credentials

SERVERS = "/ecs/v2/billing/servers"
SNAPSHOTS = "/ecs/v2/billing/snapshots"
GPU = "/k8sgpu/v1/billing"
MONTH_PATH = "/2026/11"


@dataclass
class Rig:
    """A billing source on the simulator, with its clock, facts and metrics."""

    h: SimHandle
    clock: FakeClock = field(default_factory=fake_clock)
    facts: Facts = field(default_factory=Facts)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.source = BillingSource(
            seeweb(self.h, self.clock),
            k8sgpu=k8sgpu(self.h, self.clock),
            facts=self.facts,
            clock=self.clock,
            metrics=Metrics(self.registry),
        )

    async def advance(self, seconds: float) -> None:
        """Move simulated time and the source's clock together."""
        await self.h.advance(seconds)
        self.clock.advance(seconds)

    def account_gauge(self) -> float | None:
        """Return the account's month-to-date cost gauge."""
        return self.registry.get_sample_value(
            "cloudpilot_month_to_date_cost_euros", {"scope": "account"}
        )

    def remembered(self) -> tuple[Any, ...]:
        """Return what a poll leaves behind: the bills, the costs by scope, the account gauge."""
        return self.facts.bills, dict(self.facts.month_cost), self.account_gauge()


@pytest.fixture
async def rig(simulator: SimFactory) -> Rig:
    """Return a rig whose first poll succeeded, three hours before now (the bills have grown)."""
    h = await simulator("default", credentials=Credentials(api_token=API_KEY, password=PASSWORD))
    rig = Rig(h)
    await rig.source.poll(None)
    assert rig.facts.bills is not None and rig.facts.month_cost
    await rig.advance(3 * 3600)
    return rig


async def fault(h: SimHandle, **spec: Any) -> None:
    """Add a request fault through the control surface."""
    await sim_ok(h, "POST", "/_sim/faults", spec)


async def poll_fails(rig: Rig) -> ProviderError:
    """Poll, expect a ProviderError, and check nothing the last good poll left was changed."""
    before = rig.remembered()
    with pytest.raises(ProviderError) as caught:
        await rig.source.poll(None)
    after = rig.remembered()
    assert after[0] is before[0], "facts.bills was replaced by a failed poll"
    assert after == before
    return caught.value


async def good_poll_moves_the_facts(rig: Rig) -> None:
    """Clear the faults and check a poll now does change the facts (so the test could tell)."""
    before = rig.remembered()
    await sim_ok(rig.h, "DELETE", "/_sim/faults")
    await rig.source.poll(None)
    assert rig.facts.bills is not before[0]
    assert rig.facts.month_cost["account"].euros > before[1]["account"].euros


async def test_a_truncated_servers_bill_names_the_request(rig: Rig) -> None:
    await fault(rig.h, path=SERVERS, truncate=True)

    error = await poll_fails(rig)

    assert str(error).startswith(f"seeweb GET {SERVERS}{MONTH_PATH}: invalid JSON")
    await good_poll_moves_the_facts(rig)


async def test_a_snapshots_bill_without_month_names_month(rig: Rig) -> None:
    await fault(rig.h, path=SNAPSHOTS, omit=["month"])

    error = await poll_fails(rig)

    assert str(error) == f"seeweb GET {SNAPSHOTS}{MONTH_PATH}: month: field required"
    await good_poll_moves_the_facts(rig)


async def test_a_gpu_bill_without_month_names_month(rig: Rig) -> None:
    # The Seeweb bill is read first and is fine: it must not be applied without the GPU one.
    await fault(rig.h, path=GPU, omit=["month"])

    error = await poll_fails(rig)

    assert str(error) == f"k8sgpu GET {GPU}{MONTH_PATH}: month: field required"
    served = [(r["path"], r["status"]) for r in await rig.h.requests()][-4:]
    assert served == [
        (f"{SERVERS}{MONTH_PATH}", 200),
        (f"/ecs/v2/billing/templates{MONTH_PATH}", 200),
        (f"{SNAPSHOTS}{MONTH_PATH}", 200),
        (f"{GPU}{MONTH_PATH}", 200),
    ]
    await good_poll_moves_the_facts(rig)


# -- the `omit` fault itself --------------------------------------------------------------------


async def test_omit_drops_top_level_keys_of_json_objects_only(simulator: SimFactory) -> None:
    h = await simulator("default")
    listed = await sim_ok(h, "POST", "/_sim/faults", {"path": "/ecs/v2/billing", "omit": ["month"]})

    _, snapshots = await h.call("GET", f"{SNAPSHOTS}{MONTH_PATH}")
    _, servers = await h.call("GET", f"{SERVERS}{MONTH_PATH}")

    assert [f["omit"] for f in listed["faults"]] == [["month"]]
    assert "month" not in snapshots and snapshots["year"] == 2026
    assert "total_cost" in snapshots
    # A list answer has no top-level keys: it passes unchanged.
    assert isinstance(servers, list) and servers
    assert all(row["month"] == 11 for row in servers)


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        (
            {"path": SNAPSHOTS, "omit": []},
            "a fault needs one of status, latency_ms, truncate, pad_bytes, omit",
        ),
        ({"path": SNAPSHOTS, "omit": [""]}, "omit.0: String should have at least 1 character"),
        ({"path": SNAPSHOTS, "omit": "month"}, "omit: Input should be a valid list"),
    ],
)
async def test_omit_is_validated(simulator: SimFactory, spec: dict[str, Any], problem: str) -> None:
    h = await simulator("default")
    status, body = await h.call("POST", "/_sim/faults", json=spec)

    assert status == 400
    assert problem in body["message"]
    assert h.sim.faults.faults == []
