"""The spend model: burn-rate integrals, billed and estimated spend per scope, reconciliation."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone

import pytest

from daemon.client.plans import PlanCatalogue
from daemon.client.records import (
    GpuPodBill,
    GpuPodRef,
    Plan,
    ServerBill,
    SnapshotBill,
    TemplateBill,
)
from daemon.facts import Facts, MonthBills, PodFact, ServerFact
from daemon.policies.spend import (
    BurnHistory,
    SpendModel,
    month_end,
    month_of,
    previous_month,
)
from daemon.rules.compiled import BudgetScope
from daemon.rules.selector import ServerSelector

T0 = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
BILLED_UNTIL = T0 - 4 * HOUR  # the bill is 4 hours behind T0
HOURS_LEFT = 20 * 24 + 12  # from T0 to 2026-12-01 00:00 UTC

ACCOUNT = BudgetScope("account")
GROUP_EG1 = BudgetScope("group", group="eg1")
BATCH_SERVERS = BudgetScope("servers", servers=ServerSelector.of({"notes": "*batch*"}))
CLUSTER_C1 = BudgetScope("cluster", cluster="c1")

PLANS = (
    Plan(name="eCS2", cpu=2, hourly_price=0.5),
    Plan(name="eCS4", cpu=4, hourly_price=1.0),
    Plan(name="eCS8", cpu=8),  # no price known
)
GPU_PRICES = {"a100": 2.5}


# --- BurnHistory ---------------------------------------------------------------------------------


def test_a_single_rate_integrates_over_the_window() -> None:
    history = BurnHistory()
    history.add(T0, 2.0)
    assert history.integral(T0, T0 + 3 * HOUR) == pytest.approx(6.0)
    assert history.integral(T0 + 30 * timedelta(minutes=1), T0 + HOUR) == pytest.approx(1.0)


def test_a_rate_change_mid_window_splits_the_integral() -> None:
    history = BurnHistory()
    history.add(T0, 2.0)
    history.add(T0 + HOUR, 4.0)
    # Half an hour at 2 EUR/h, then an hour at 4 EUR/h.
    assert history.integral(T0 + HOUR / 2, T0 + 2 * HOUR) == pytest.approx(5.0)
    # A window wholly after the change sees only the new rate.
    assert history.integral(T0 + 2 * HOUR, T0 + 4 * HOUR) == pytest.approx(8.0)


def test_a_window_before_the_first_sample_uses_the_first_rate() -> None:
    history = BurnHistory()
    history.add(T0, 3.0)
    history.add(T0 + HOUR, 10.0)
    assert history.integral(T0 - 2 * HOUR, T0 - HOUR) == pytest.approx(3.0)
    # Straddling the first sample: the first rate holds until the second sample.
    assert history.integral(T0 - HOUR, T0 + HOUR) == pytest.approx(6.0)


def test_an_empty_history_or_an_empty_window_burns_nothing() -> None:
    history = BurnHistory()
    assert history.integral(T0, T0 + HOUR) == 0.0
    history.add(T0, 5.0)
    assert history.integral(T0 + HOUR, T0 + HOUR) == 0.0
    assert history.integral(T0 + HOUR, T0) == 0.0


def test_a_rate_seen_before_the_last_one_is_ignored() -> None:
    history = BurnHistory()
    history.add(T0, 1.0)
    history.add(T0 - HOUR, 100.0)
    assert history.rates == [(T0, 1.0)]
    assert history.integral(T0, T0 + HOUR) == pytest.approx(1.0)


def test_forget_before_keeps_the_rate_in_force_at_the_cutoff() -> None:
    history = BurnHistory()
    history.add(T0, 1.0)
    history.add(T0 + HOUR, 2.0)
    history.add(T0 + 2 * HOUR, 3.0)
    cutoff = T0 + 90 * timedelta(minutes=1)
    windows = [
        (cutoff, T0 + 3 * HOUR),
        (cutoff, cutoff + 10 * timedelta(minutes=1)),
        (T0 + 2 * HOUR, T0 + 5 * HOUR),
    ]
    before = [history.integral(lo, hi) for lo, hi in windows]
    history.forget_before(cutoff)
    assert history.rates == [(T0 + HOUR, 2.0), (T0 + 2 * HOUR, 3.0)]
    assert [history.integral(lo, hi) for lo, hi in windows] == pytest.approx(before)
    assert before[0] == pytest.approx(2.0 * 0.5 + 3.0 * 1.0)


def test_forget_before_at_a_sample_keeps_that_sample_only() -> None:
    history = BurnHistory()
    history.add(T0, 1.0)
    history.add(T0 + HOUR, 2.0)
    before = history.integral(T0 + HOUR, T0 + 3 * HOUR)
    history.forget_before(T0 + HOUR)
    assert history.rates == [(T0 + HOUR, 2.0)]
    assert history.integral(T0 + HOUR, T0 + 3 * HOUR) == pytest.approx(before) == 4.0
    history.forget_before(T0 + 10 * HOUR)  # never drops the last rate
    assert history.rates == [(T0 + HOUR, 2.0)]


# --- months --------------------------------------------------------------------------------------


def test_month_of_is_the_utc_calendar_month() -> None:
    assert month_of(T0) == "2026-11"
    assert month_of(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == "2026-12"
    # Half past midnight on December 1st in UTC+2 is still November in UTC.
    rome_summer = timezone(timedelta(hours=2))
    assert month_of(datetime(2026, 12, 1, 0, 30, tzinfo=rome_summer)) == "2026-11"


def test_month_end_is_the_first_instant_of_the_next_month() -> None:
    assert month_end(T0) == datetime(2026, 12, 1, tzinfo=UTC)
    assert month_end(datetime(2026, 12, 15, 8, 0, tzinfo=UTC)) == datetime(2027, 1, 1, tzinfo=UTC)
    assert month_end(datetime(2027, 1, 1, tzinfo=UTC)) == datetime(2027, 2, 1, tzinfo=UTC)
    plus_two = timezone(timedelta(hours=2))
    assert month_end(datetime(2026, 12, 1, 0, 30, tzinfo=plus_two)) == datetime(
        2026, 12, 1, tzinfo=UTC
    )


def test_previous_month_wraps_around_the_year() -> None:
    assert previous_month("2026-11") == "2026-10"
    assert previous_month("2027-01") == "2026-12"
    assert previous_month("2026-12") == "2026-11"
    assert previous_month("2026-02") == "2026-01"


# --- SpendModel ----------------------------------------------------------------------------------


def server(name: str, plan: str, group: str, notes: str) -> ServerFact:
    return ServerFact("seeweb", name, name, T0, plan=plan, group=group, notes=notes)


def pod(uuid: str, cluster: str, runtime_class: str, *, online: bool = True) -> PodFact:
    status = "running" if online else "succeeded"
    return PodFact(uuid, cluster, uuid, runtime_class, status, online, False, T0)


def row(
    name: str,
    cost: float,
    hours: float | None,
    *,
    plan: str | None,
    group: str,
    notes: str,
    deleted: bool = False,
) -> ServerBill:
    return ServerBill(
        name=name,
        cost=cost,
        billed_hours=hours,
        plan=plan,
        group=group,
        notes=notes,
        deletion_date=T0 - 48 * HOUR if deleted else None,
    )


def gpu_row(cluster: str, runtime_class: str, cost: float, online_hour: float) -> GpuPodBill:
    return GpuPodBill(
        pod=GpuPodRef(cluster=cluster),
        cost=cost,
        online_hour=online_hour,
        runtime_class=runtime_class,
    )


SERVER_ROWS = (
    row("web1", 100.0, 200.0, plan="eCS2", group="eg1", notes="frontend web"),
    row("batch1", 50.0, 50.0, plan="eCS4", group="eg2", notes="nightly batch"),
    row("old1", 7.0, 7.0, plan="eCS2", group="eg1", notes="old batch", deleted=True),
)


def month_bills(
    *,
    month: str = "2026-11",
    billed_until: datetime | None = BILLED_UNTIL,
    servers: Sequence[ServerBill] = SERVER_ROWS,
) -> MonthBills:
    return MonthBills(
        month=month,
        observed_at=T0 - HOUR,
        billed_until=billed_until,
        servers=tuple(servers),
        templates=(TemplateBill(name="tpl1", cost=2.0, hours=100.0),),
        snapshots=(
            SnapshotBill(snapshot=9, final_cost=3.0, hours=100.0),
            SnapshotBill(snapshot=8, final_cost=1.0, hours=10.0, snapshot_deleted_at=T0 - HOUR),
        ),
        snapshots_total=4.0,
        gpu=(
            gpu_row("c1", "a100", 30.0, 10.0),  # 3 EUR/h, but the price table says 2.5
            gpu_row("c2", "l4", 8.0, 8.0),  # 1 EUR/h, learned from the bill
        ),
    )


def make_facts(bills: MonthBills | None = None) -> Facts:
    facts = Facts(bills=month_bills() if bills is None else bills)
    facts.replace_servers(
        "seeweb",
        [
            server("web1", "eCS2", "eg1", "frontend web"),
            server("batch1", "eCS4", "eg2", "nightly batch"),
        ],
    )
    for item in (
        pod("p1", "c1", "a100"),
        pod("p2", "c2", "l4"),
        pod("p3", "c1", "h100"),  # no configured price and not on the bill
        pod("p4", "c1", "a100", online=False),
    ):
        facts.pods[item.uuid] = item
    return facts


def model(facts: Facts, power: dict[str, str] | None = None) -> SpendModel:
    states = {} if power is None else power
    return SpendModel(
        facts,
        plans=lambda: PlanCatalogue(PLANS),
        gpu_prices=GPU_PRICES,
        power=lambda name: states.get(name),
        billed="seeweb",
    )


def test_billed_counts_each_scope_s_own_rows() -> None:
    spender = model(make_facts())
    bills = month_bills()
    # Servers (deleted ones too) + templates + snapshots total + every GPU row.
    assert spender.billed(ACCOUNT, bills) == pytest.approx(100 + 50 + 7 + 2 + 4 + 30 + 8)
    assert spender.billed(GROUP_EG1, bills) == pytest.approx(100 + 7)
    assert spender.billed(BATCH_SERVERS, bills) == pytest.approx(50 + 7)
    assert spender.billed(CLUSTER_C1, bills) == pytest.approx(30)
    assert spender.billed(BudgetScope("cluster", cluster="nowhere"), bills) == 0.0


def test_account_spend_is_billed_plus_the_burn_since_the_bill() -> None:
    spend, reconciled = model(make_facts()).spend("account-cap", ACCOUNT, T0)
    # web1 0.5 + batch1 1.0 + snapshot 0.03 + template 0.02 + p1 2.5 (table) + p2 1.0 (bill).
    rate = 0.5 + 1.0 + 0.03 + 0.02 + 2.5 + 1.0
    billed = 201.0
    assert reconciled is None
    assert spend.month == "2026-11"
    assert spend.billed == pytest.approx(billed)
    assert spend.rate == pytest.approx(rate)
    assert spend.unbilled == pytest.approx(rate * 4)
    assert spend.estimated == pytest.approx(billed + rate * 4)
    assert spend.forecast == pytest.approx(billed + rate * 4 + rate * HOURS_LEFT)
    assert spend.billed_until == BILLED_UNTIL
    assert spend.bill_read_at == T0 - HOUR
    assert spend.unpriced == ("pod:p3(h100)",)
    assert spend.percent(1000) == pytest.approx((billed + rate * 4) / 10)


def test_burn_lists_each_item_with_its_price() -> None:
    spender = model(make_facts())
    burn = spender.burn(ACCOUNT, month_bills())
    assert dict(burn.items) == pytest.approx(
        {
            "server:batch1": 1.0,
            "server:web1": 0.5,
            "snapshot:9": 0.03,
            "template:tpl1": 0.02,
            "pod:p1": 2.5,
            "pod:p2": 1.0,
        }
    )
    assert "server:old1" not in dict(burn.items)  # deleted: billed, burns no more


def test_a_group_counts_only_its_servers() -> None:
    spend, _ = model(make_facts()).spend("eg1-cap", GROUP_EG1, T0)
    assert spend.billed == pytest.approx(107.0)
    assert spend.rate == pytest.approx(0.5)
    assert spend.unbilled == pytest.approx(2.0)
    assert spend.forecast == pytest.approx(107.0 + 2.0 + 0.5 * HOURS_LEFT)
    assert spend.unpriced == ()


def test_a_server_selector_matches_notes_globs() -> None:
    spend, _ = model(make_facts()).spend("batch-cap", BATCH_SERVERS, T0)
    assert spend.billed == pytest.approx(57.0)
    assert spend.rate == pytest.approx(1.0)
    assert spend.unbilled == pytest.approx(4.0)


def test_a_gpu_cluster_counts_only_its_rows_and_pods() -> None:
    spend, _ = model(make_facts()).spend("c1-cap", CLUSTER_C1, T0)
    assert spend.billed == pytest.approx(30.0)
    assert spend.rate == pytest.approx(2.5)  # p1 at the table's price; p4 is offline
    assert spend.unbilled == pytest.approx(10.0)
    assert spend.unpriced == ("pod:p3(h100)",)


def test_a_gpu_class_absent_from_the_table_uses_what_the_bill_charged_per_hour() -> None:
    spend, _ = model(make_facts()).spend("c2-cap", BudgetScope("cluster", cluster="c2"), T0)
    assert spend.rate == pytest.approx(1.0)
    facts = make_facts()
    facts.pods["p5"] = pod("p5", "c2", "a100")
    spender = SpendModel(facts, plans=lambda: PlanCatalogue(PLANS), gpu_prices={}, billed="seeweb")
    spend, _ = spender.spend("c2-cap", BudgetScope("cluster", cluster="c2"), T0)
    assert spend.rate == pytest.approx(1.0 + 3.0)  # a100 learned from c1's row: 30 / 10


def test_a_server_switched_off_burns_nothing() -> None:
    spender = model(make_facts(), {"batch1": "SHUTOFF", "web1": "RUNNING"})
    spend, _ = spender.spend("batch-cap", BATCH_SERVERS, T0)
    assert spend.rate == 0.0
    assert spend.unbilled == 0.0
    assert spend.billed == pytest.approx(57.0)  # what was billed stays billed
    assert spend.forecast == pytest.approx(57.0)
    spend, _ = spender.spend("account-cap", ACCOUNT, T0)
    assert spend.rate == pytest.approx(0.5 + 0.03 + 0.02 + 2.5 + 1.0)


def test_a_server_without_a_plan_price_is_priced_by_its_bill_row() -> None:
    rows = (
        row("big1", 30.0, 60.0, plan="eCS8", group="eg3", notes="x"),  # 0.5 EUR/h by the bill
        row("big2", 9.0, None, plan="eCS8", group="eg3", notes="x"),  # no hours: no price
    )
    facts = make_facts(month_bills(servers=rows))
    facts.replace_servers(
        "seeweb", [server("big1", "eCS8", "eg3", "x"), server("big2", "eCS8", "eg3", "x")]
    )
    spend, _ = model(facts).spend("eg3-cap", BudgetScope("group", group="eg3"), T0)
    assert spend.billed == pytest.approx(39.0)
    assert spend.rate == pytest.approx(0.5)
    assert spend.unbilled == pytest.approx(2.0)
    assert spend.unpriced == ("server:big2",)


def test_a_billed_server_the_server_list_no_longer_shows_burns_nothing() -> None:
    rows = (row("gone1", 10.0, 10.0, plan="eCS4", group="eg4", notes="x"),)
    facts = make_facts(month_bills(servers=rows))
    scope = BudgetScope("group", group="eg4")
    spend, _ = model(facts).spend("eg4-cap", scope, T0)
    assert spend.rate == pytest.approx(1.0)  # no server list read yet: trust the bill
    facts.polled_at["metrics"] = T0
    spend, _ = model(facts).spend("eg4-cap", scope, T0)
    assert spend.rate == 0.0
    assert spend.billed == pytest.approx(10.0)


def test_without_billed_until_the_estimate_starts_at_the_bill_read() -> None:
    facts = make_facts(month_bills(billed_until=None))
    spend, _ = model(facts).spend("eg1-cap", GROUP_EG1, T0)
    assert spend.billed_until == T0 - HOUR
    assert spend.unbilled == pytest.approx(0.5)


def test_a_bill_of_another_month_or_none_raises_lookup_error() -> None:
    spender = model(make_facts(month_bills(month="2026-10")))
    with pytest.raises(LookupError, match="no complete bill for 2026-11"):
        spender.spend("account-cap", ACCOUNT, T0)
    facts = make_facts()
    facts.bills = None
    with pytest.raises(LookupError, match="2026-11"):
        model(facts).spend("account-cap", ACCOUNT, T0)
    # The bill is November's; December's first hour has none yet.
    with pytest.raises(LookupError, match="2026-12"):
        model(make_facts()).spend("account-cap", ACCOUNT, datetime(2026, 12, 1, 0, 30, tzinfo=UTC))


def test_a_later_bill_reconciles_the_estimate_for_the_hours_it_covers() -> None:
    facts = make_facts()
    power: dict[str, str] = {}
    spender = model(facts, power)
    scope = BudgetScope("servers", servers=ServerSelector.of({"name": ["web1", "batch1"]}))
    b1 = BILLED_UNTIL  # T0 - 4h
    t1, t2, t3 = T0, T0 + HOUR, T0 + 3 * HOUR

    first, reconciled = spender.spend("cap", scope, t1)
    assert reconciled is None
    assert first.billed == pytest.approx(150.0)
    assert first.unbilled == pytest.approx(1.5 * 4)

    power["batch1"] = "SHUTOFF"  # the rate drops from 1.5 to 0.5 EUR/h
    second, reconciled = spender.spend("cap", scope, t2)
    assert reconciled is None  # the same bill: nothing to reconcile
    assert second.unbilled == pytest.approx(1.5 * 5)
    assert second.rate == pytest.approx(0.5)

    b2 = T0 + 2 * HOUR
    grown = (
        row("web1", 103.0, 206.0, plan="eCS2", group="eg1", notes="frontend web"),
        row("batch1", 55.5, 55.5, plan="eCS4", group="eg2", notes="nightly batch"),
    )
    facts.bills = month_bills(billed_until=b2, servers=grown)
    del power["batch1"]  # running again: 1.5 EUR/h from t3 on
    third, reconciled = spender.spend("cap", scope, t3)
    # The estimate for [b1, b2): 5 hours at 1.5 (until t2), then 1 hour at 0.5.
    assert reconciled is not None
    assert (reconciled.lo, reconciled.hi) == (b1, b2)
    assert reconciled.estimated == pytest.approx(8.0)
    assert reconciled.billed == pytest.approx(8.5)
    assert reconciled.error == pytest.approx(-0.5)
    assert third.billed == pytest.approx(158.5)
    assert third.billed_until == b2
    # Since b2 the rate seen at t2 held until t3; the new rate counts from t3 on.
    assert third.unbilled == pytest.approx(0.5)
    assert third.rate == pytest.approx(1.5)

    fourth, reconciled = spender.spend("cap", scope, t3 + HOUR)
    assert reconciled is None
    assert fourth.unbilled == pytest.approx(0.5 + 1.5)


def test_histories_are_kept_per_key_and_forgotten_with_their_budget() -> None:
    facts = make_facts()
    spender = model(facts)
    spender.spend("a", GROUP_EG1, T0)
    spender.spend("b", GROUP_EG1, T0)
    spender.forget(["a"])
    facts.bills = month_bills(billed_until=T0 - 2 * HOUR)
    _, kept = spender.spend("a", GROUP_EG1, T0 + HOUR)
    _, dropped = spender.spend("b", GROUP_EG1, T0 + HOUR)
    assert kept is not None and kept.lo == BILLED_UNTIL and kept.hi == T0 - 2 * HOUR
    assert kept.estimated == pytest.approx(0.5 * 2)
    assert dropped is None  # a fresh history has nothing to reconcile


def test_a_location_selector_bills_the_servers_the_server_list_places_there() -> None:
    facts = make_facts()
    facts.replace_servers(
        "seeweb",
        [
            ServerFact("seeweb", "web1", "web1", T0, plan="eCS2", location="it-fr2"),
            ServerFact("seeweb", "batch1", "batch1", T0, plan="eCS4", location="ch-lug1"),
        ],
    )
    scope = BudgetScope("servers", servers=ServerSelector.of({"location": "it-fr2"}))
    # Bill rows carry no location: the server list supplies it.
    assert model(facts).billed(scope, month_bills()) == pytest.approx(100.0)


def test_a_bill_cut_off_never_moves_back() -> None:
    facts = make_facts()
    spender = model(facts)
    scope = BudgetScope("servers", servers=ServerSelector.of({"name": "web1"}))
    first, _ = spender.spend("cap", scope, T0)
    # A later bill is never less complete than an earlier one, whatever its rows suggest.
    facts.bills = month_bills(billed_until=BILLED_UNTIL - HOUR)
    second, reconciled = spender.spend("cap", scope, T0 + HOUR)
    assert reconciled is None
    assert first.billed_until == second.billed_until == BILLED_UNTIL
    assert second.unbilled == pytest.approx(0.5 * 5)
