"""Budget records in SQLite: writes within a batch, listing by month and scope, transitions."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import rows

from daemon.clock import FakeClock
from daemon.state import BudgetRecord, SqliteStore, StateError

START = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


def budget(
    scope: str, *, rule: str = "monthly-cap", month: str = "2026-11", **data: Any
) -> BudgetRecord:
    return BudgetRecord(rule, scope, month, START, data)


def keys(records: list[BudgetRecord]) -> list[tuple[str, str, str]]:
    return [(record.rule, record.month, record.scope) for record in records]


# Batch.put_budget


async def test_a_budget_put_in_a_batch_lands_with_the_batch(store: SqliteStore) -> None:
    async with store.batch() as batch:
        await batch.put_budget(budget("account", spent=41.5))
        await batch.put_budget(budget("account", spent=42.0))  # replaces, within the batch
        await batch.set_cursor("seeweb.actions", {"high_water": 7})
    assert await store.get_budget("monthly-cap", "account", "2026-11") == budget(
        "account", spent=42.0
    )
    assert rows(store.path, "SELECT scope, data FROM budgets") == [("account", '{"spent":42.0}')]


async def test_a_budget_put_in_a_batch_that_raises_is_rolled_back(store: SqliteStore) -> None:
    await store.put_budget(budget("account", spent=10.0))
    with pytest.raises(RuntimeError, match="evaluation failed"):
        async with store.batch() as batch:
            await batch.put_budget(budget("account", spent=99.0))
            await batch.put_budget(budget("approval:3f2a9c01bd", state="waiting"))
            await batch.set_cursor("seeweb.actions", {"high_water": 7})
            raise RuntimeError("evaluation failed")
    assert await store.get_budget("monthly-cap", "account", "2026-11") == budget(
        "account", spent=10.0
    )
    assert await store.get_budget("monthly-cap", "approval:3f2a9c01bd", "2026-11") is None
    assert await store.get_cursor("seeweb.actions") is None
    assert rows(store.path, "SELECT count(*) FROM budgets") == [(1,)]


async def test_a_batch_refuses_a_budget_it_cannot_encode_and_keeps_nothing(
    store: SqliteStore,
) -> None:
    with pytest.raises(StateError, match="approval:1"):
        async with store.batch() as batch:
            await batch.put_budget(budget("account", spent=1.0))
            await batch.put_budget(budget("approval:1", state=object()))
    assert rows(store.path, "SELECT count(*) FROM budgets") == [(0,)]


async def test_a_batch_that_ended_refuses_a_budget(store: SqliteStore) -> None:
    async with store.batch() as batch:
        pass
    with pytest.raises(StateError, match="the batch has ended"):
        await batch.put_budget(budget("account"))
    assert rows(store.path, "SELECT count(*) FROM budgets") == [(0,)]


# Store.budgets


async def test_budgets_are_listed_by_rule_month_and_scope(store: SqliteStore) -> None:
    for record in [
        budget("approval:bb", month="2026-12"),
        budget("account", rule="weekly-gpu", month="2026-11"),
        budget("approval:aa", month="2026-12"),
        budget("account", month="2026-11"),
        budget("approval:cc", month="2026-10"),
    ]:
        await store.put_budget(record)
    assert keys(await store.budgets()) == [
        ("monthly-cap", "2026-10", "approval:cc"),
        ("monthly-cap", "2026-11", "account"),
        ("monthly-cap", "2026-12", "approval:aa"),
        ("monthly-cap", "2026-12", "approval:bb"),
        ("weekly-gpu", "2026-11", "account"),
    ]
    assert keys(await store.budgets(month="2026-12")) == [
        ("monthly-cap", "2026-12", "approval:aa"),
        ("monthly-cap", "2026-12", "approval:bb"),
    ]
    assert keys(await store.budgets(scope_prefix="approval:")) == [
        ("monthly-cap", "2026-10", "approval:cc"),
        ("monthly-cap", "2026-12", "approval:aa"),
        ("monthly-cap", "2026-12", "approval:bb"),
    ]
    assert keys(await store.budgets(month="2026-11", scope_prefix="approval:")) == []
    assert keys(await store.budgets(month="2027-01")) == []


async def test_budgets_return_the_data_as_stored(store: SqliteStore) -> None:
    record = budget("approval:3f2a9c01bd", state="waiting", extra={"kept": [1, 2]})
    await store.put_budget(record)
    assert await store.budgets(scope_prefix="approval:3f2a") == [record]


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("pod_", ["pod_a"]),  # `_` is not "any one character": `podXa` stays out
        ("pod%", ["pod%b"]),  # `%` is not "anything": `pod_a` and `podXa` stay out
        ("POD", []),  # case counts
        ("pod", ["pod%b", "podXa", "pod_a"]),  # byte order: `X` sorts before `_`
        ("", ["pod%b", "podXa", "pod_a", "pödc"]),
        ("pö", ["pödc"]),
    ],
)
async def test_a_scope_prefix_is_literal_text(
    store: SqliteStore, prefix: str, expected: list[str]
) -> None:
    for scope in ["pod_a", "podXa", "pod%b", "pödc"]:
        await store.put_budget(budget(scope))
    assert [record.scope for record in await store.budgets(scope_prefix=prefix)] == expected


# Store.transition_budget


async def test_a_transition_from_the_expected_state_writes_the_new_data(
    store: SqliteStore,
) -> None:
    await store.put_budget(budget("approval:3f2a9c01bd", state="waiting", target="ec600003"))
    decided = START + timedelta(minutes=5)
    new = {"state": "approved", "target": "ec600003", "decided_at": decided.isoformat()}
    written = await store.transition_budget(
        "monthly-cap", "approval:3f2a9c01bd", "2026-11", expect="waiting", data=new, now=decided
    )
    expected = BudgetRecord("monthly-cap", "approval:3f2a9c01bd", "2026-11", decided, new)
    assert written == expected
    assert await store.get_budget("monthly-cap", "approval:3f2a9c01bd", "2026-11") == expected


async def test_a_transition_loses_when_the_state_moved_and_changes_nothing(
    store: SqliteStore,
) -> None:
    rejected = budget("approval:3f2a9c01bd", state="rejected")
    await store.put_budget(rejected)
    written = await store.transition_budget(
        "monthly-cap",
        "approval:3f2a9c01bd",
        "2026-11",
        expect="waiting",
        data={"state": "approved"},
        now=START + timedelta(minutes=5),
    )
    assert written is None
    assert await store.get_budget("monthly-cap", "approval:3f2a9c01bd", "2026-11") == rejected
    # The losing transition left no transaction open: a batch can still begin and commit.
    async with store.batch() as batch:
        await batch.put_budget(budget("account", spent=1.0))
    assert rows(store.path, "SELECT count(*) FROM budgets") == [(2,)]


async def test_a_transition_of_a_missing_record_creates_nothing(store: SqliteStore) -> None:
    await store.put_budget(budget("approval:3f2a9c01bd", state="waiting"))
    for rule, scope, month in [
        ("other-rule", "approval:3f2a9c01bd", "2026-11"),
        ("monthly-cap", "approval:3f2a9c01bd", "2026-12"),
        ("monthly-cap", "approval:0000000000", "2026-11"),
    ]:
        written = await store.transition_budget(
            rule, scope, month, expect="waiting", data={"state": "approved"}, now=START
        )
        assert written is None
    assert rows(store.path, "SELECT rule, scope, month FROM budgets") == [
        ("monthly-cap", "approval:3f2a9c01bd", "2026-11")
    ]


async def test_a_record_without_a_state_never_matches(store: SqliteStore) -> None:
    await store.put_budget(budget("account", spent=3.0))
    written = await store.transition_budget(
        "monthly-cap", "account", "2026-11", expect="waiting", data={"state": "x"}, now=START
    )
    assert written is None
    assert await store.get_budget("monthly-cap", "account", "2026-11") == budget(
        "account", spent=3.0
    )


async def test_two_connections_racing_to_decide_leave_exactly_one_decision(
    tmp_path: Path, clock: FakeClock
) -> None:
    # Two stores on one file, as the daemon and `cloudpilot approve` are: one wins, one sees None.
    daemon = SqliteStore(tmp_path / "state.db", clock=clock)
    approver = SqliteStore(tmp_path / "state.db", clock=clock)
    await daemon.open()
    await approver.open()
    try:
        for n in range(20):
            await daemon.put_budget(budget(f"approval:{n:010x}", state="waiting"))

        async def decide(store: SqliteStore, scope: str, state: str) -> BudgetRecord | None:
            return await store.transition_budget(
                "monthly-cap", scope, "2026-11", expect="waiting", data={"state": state}, now=START
            )

        for n in range(20):
            scope = f"approval:{n:010x}"
            expired, approved = await asyncio.gather(
                decide(daemon, scope, "expired"), decide(approver, scope, "approved")
            )
            winners = [one for one in (expired, approved) if one is not None]
            assert len(winners) == 1, (expired, approved)
            stored = await daemon.get_budget("monthly-cap", scope, "2026-11")
            assert stored == winners[0]
    finally:
        await approver.close()
        await daemon.close()


async def test_a_transition_refuses_data_it_cannot_encode_and_keeps_the_record(
    store: SqliteStore,
) -> None:
    waiting = budget("approval:3f2a9c01bd", state="waiting")
    await store.put_budget(waiting)
    with pytest.raises(StateError, match="approval:3f2a9c01bd"):
        await store.transition_budget(
            "monthly-cap",
            "approval:3f2a9c01bd",
            "2026-11",
            expect="waiting",
            data={"state": "approved", "by": object()},
            now=START,
        )
    assert await store.get_budget("monthly-cap", "approval:3f2a9c01bd", "2026-11") == waiting


async def test_a_transition_inside_a_batch_is_refused(store: SqliteStore) -> None:
    await store.put_budget(budget("approval:3f2a9c01bd", state="waiting"))
    with pytest.raises(StateError, match="inside a batch"):
        async with store.batch():
            await store.transition_budget(
                "monthly-cap",
                "approval:3f2a9c01bd",
                "2026-11",
                expect="waiting",
                data={"state": "approved"},
                now=START,
            )
    stored = await store.get_budget("monthly-cap", "approval:3f2a9c01bd", "2026-11")
    assert stored is not None
    assert stored.data == {"state": "waiting"}
