"""`cloudpilot approve` against a real store in a temporary folder, driven by a fake clock."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daemon.approve import approve_with, run_approve
from daemon.clock import FakeClock
from daemon.registry import load_config
from daemon.state import BudgetRecord, SqliteStore

START = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
LATER = START + timedelta(minutes=30)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(LATER)


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "state.db", clock=clock)
    await store.open()
    yield store
    await store.close()


def request(
    id_: str,
    *,
    rule: str = "monthly-cap",
    month: str = "2026-11",
    state: str = "waiting",
    target: str = "ec600003",
    expires_in: timedelta = timedelta(hours=4),
    on_timeout: str = "cancel",
    **extra: Any,
) -> BudgetRecord:
    """An approval request written at START, as the daemon writes one."""
    data = {
        "id": id_,
        "state": state,
        "rule": rule,
        "step": "1:power_off",
        "action": "power_off",
        "target": target,
        "summary": f"power off {target} (notes: batch-1 expendable)",
        "requested_at": START.isoformat(),
        "expires_at": (START + expires_in).isoformat(),
        "on_timeout": on_timeout,
        **extra,
    }
    return BudgetRecord(rule, f"approval:{id_}", month, START, data)


async def put(store: SqliteStore, *records: BudgetRecord) -> None:
    async with store.batch() as batch:
        for record in records:
            await batch.put_budget(record)


async def run(
    store: SqliteStore, clock: FakeClock, approval_id: str | None = None, *, reject: bool = False
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await approve_with(store, approval_id, reject=reject, clock=clock, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


async def data_of(store: SqliteStore, record: BudgetRecord) -> Mapping[str, Any]:
    stored = await store.get_budget(record.rule, record.scope, record.month)
    assert stored is not None
    return stored.data


# Listing


async def test_nothing_waiting_says_so(store: SqliteStore, clock: FakeClock) -> None:
    await put(store, request("aaaaaaaaaa", state="approved"))
    assert await run(store, clock) == (0, "no budget action is waiting for approval\n", "")


async def test_the_listing_shows_waiting_requests_of_every_month_soonest_first(
    store: SqliteStore, clock: FakeClock
) -> None:
    await put(
        store,
        request("3f2a9c01bd", month="2026-11", expires_in=timedelta(hours=4)),
        request("0b1c2d3e4f", month="2026-10", target="ec600007", expires_in=timedelta(hours=1)),
        request(
            "ffffeeee00",
            rule="gpu-cap",
            expires_in=timedelta(hours=2),
            on_timeout="proceed",
            step="2:delete_pod",
            action="delete_pod",
            summary="delete pod train-7 (newest of 3)",
        ),
        request("aaaaaaaaaa", state="rejected"),
        request("bbbbbbbbbb", state="expired"),
    )
    code, out, err = await run(store, clock)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "0b1c2d3e4f  monthly-cap  1:power_off  power off ec600007 (notes: batch-1 expendable)"
        "  expires 2026-11-10T13:00:00Z  on timeout: cancel",
        "ffffeeee00  gpu-cap  2:delete_pod  delete pod train-7 (newest of 3)"
        "  expires 2026-11-10T14:00:00Z  on timeout: proceed",
        "3f2a9c01bd  monthly-cap  1:power_off  power off ec600003 (notes: batch-1 expendable)"
        "  expires 2026-11-10T16:00:00Z  on timeout: cancel",
    ]


async def test_the_listing_marks_a_request_past_its_expiry(
    store: SqliteStore, clock: FakeClock
) -> None:
    await put(store, request("3f2a9c01bd", expires_in=timedelta(minutes=10)))
    code, out, _ = await run(store, clock)
    assert code == 0
    assert out == (
        "3f2a9c01bd  monthly-cap  1:power_off  power off ec600003 (notes: batch-1 expendable)"
        "  expired 2026-11-10T12:10:00Z, the daemon will record it  on timeout: cancel\n"
    )


# Approving and rejecting


async def test_approve_by_id_records_the_decision_and_keeps_the_rest(
    store: SqliteStore, clock: FakeClock
) -> None:
    waiting = request("3f2a9c01bd", opaque={"from": "daemon", "n": [1, 2]})
    other = request("0b1c2d3e4f", target="ec600007")
    await put(store, waiting, other)
    code, out, err = await run(store, clock, "3f2a9c01bd")
    assert (code, err) == (0, "")
    assert out == (
        "approved 3f2a9c01bd: power off ec600003 (notes: batch-1 expendable)"
        " (monthly-cap, step 1:power_off); the daemon acts on its next evaluation\n"
    )
    stored = await store.get_budget("monthly-cap", "approval:3f2a9c01bd", "2026-11")
    assert stored is not None
    assert stored.updated_at == LATER
    assert stored.data == {
        **waiting.data,
        "state": "approved",
        "decided_at": "2026-11-10T12:30:00+00:00",
        "decided_by": "cloudpilot approve",
    }
    assert await data_of(store, other) == other.data


async def test_approve_by_a_prefix_finds_a_request_of_another_month(
    store: SqliteStore, clock: FakeClock
) -> None:
    waiting = request("0b1c2d3e4f", month="2026-10")
    await put(store, waiting, request("3f2a9c01bd"))
    code, out, _ = await run(store, clock, "0B1C")
    assert code == 0
    assert out.startswith("approved 0b1c2d3e4f: ")
    assert (await data_of(store, waiting))["state"] == "approved"


async def test_reject_records_the_refusal(store: SqliteStore, clock: FakeClock) -> None:
    waiting = request("3f2a9c01bd")
    await put(store, waiting)
    code, out, err = await run(store, clock, "3f2a9c", reject=True)
    assert (code, err) == (0, "")
    assert out == (
        "rejected 3f2a9c01bd: power off ec600003 (notes: batch-1 expendable)"
        " (monthly-cap, step 1:power_off); the daemon will not take this action\n"
    )
    data = await data_of(store, waiting)
    assert data["state"] == "rejected"
    assert data["decided_by"] == "cloudpilot approve"
    # Rejected is final: approving it afterwards changes nothing.
    code, out, err = await run(store, clock, "3f2a9c01bd")
    assert (code, out) == (1, "")
    assert err == (
        "cloudpilot approve: 3f2a9c01bd was already rejected at 2026-11-10T12:30:00Z"
        " by cloudpilot approve; nothing changed\n"
    )
    assert (await data_of(store, waiting))["state"] == "rejected"


# Refusals


async def test_an_unknown_id_lists_the_waiting_ones(store: SqliteStore, clock: FakeClock) -> None:
    await put(
        store,
        request("3f2a9c01bd"),
        request("0b1c2d3e4f", month="2026-10"),
        request("aaaaaaaaaa", state="approved"),
    )
    code, out, err = await run(store, clock, "dead")
    assert (code, out) == (1, "")
    assert err == (
        "cloudpilot approve: no approval request dead; waiting: 0b1c2d3e4f, 3f2a9c01bd\n"
    )


async def test_an_unknown_id_with_nothing_waiting_says_so(
    store: SqliteStore, clock: FakeClock
) -> None:
    code, _, err = await run(store, clock, "deadbeef00")
    assert code == 1
    assert err == (
        "cloudpilot approve: no approval request deadbeef00;"
        " no budget action is waiting for approval\n"
    )


async def test_an_ambiguous_prefix_changes_nothing(store: SqliteStore, clock: FakeClock) -> None:
    one, two = request("3f2a9c01bd"), request("3f2a000000", month="2026-10", state="approved")
    await put(store, one, two)
    code, out, err = await run(store, clock, "3f2a")
    assert (code, out) == (1, "")
    assert err == (
        "cloudpilot approve: 3f2a matches 2 requests: 3f2a000000 (monthly-cap, 2026-10,"
        " approved), 3f2a9c01bd (monthly-cap, 2026-11, waiting); give more\n"
    )
    assert await data_of(store, one) == one.data
    assert await data_of(store, two) == two.data


@pytest.mark.parametrize(
    ("on_timeout", "then"),
    [
        ("cancel", "the daemon cancels it"),
        ("proceed", "the daemon proceeds without approval"),
    ],
)
async def test_an_expired_request_is_left_for_the_daemon(
    store: SqliteStore, clock: FakeClock, on_timeout: str, then: str
) -> None:
    waiting = request("3f2a9c01bd", expires_in=timedelta(minutes=30), on_timeout=on_timeout)
    await put(store, waiting)
    code, out, err = await run(store, clock, "3f2a9c01bd")  # at LATER: the very moment it expires
    assert (code, out) == (1, "")
    assert err == (
        "cloudpilot approve: 3f2a9c01bd expired at 2026-11-10T12:30:00Z and was not approved;"
        f" {then} and records the timeout on its next evaluation\n"
    )
    stored = await store.get_budget("monthly-cap", "approval:3f2a9c01bd", "2026-11")
    assert stored == waiting


async def test_a_request_approved_just_before_it_expires_is_approved(
    store: SqliteStore, clock: FakeClock
) -> None:
    waiting = request("3f2a9c01bd", expires_in=timedelta(minutes=31))
    await put(store, waiting)
    assert (await run(store, clock, "3f2a9c01bd"))[0] == 0
    assert (await data_of(store, waiting))["state"] == "approved"
    clock.advance(120)  # past the expiry now: it stays approved, and says so
    code, _, err = await run(store, clock, "3f2a9c01bd", reject=True)
    assert code == 1
    assert "was already approved at 2026-11-10T12:30:00Z" in err
    assert (await data_of(store, waiting))["state"] == "approved"


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (
            "expired",
            "3f2a9c01bd expired at 2026-11-10T16:00:00Z without approval and was cancelled",
        ),
        (
            "proceeded",
            "3f2a9c01bd expired at 2026-11-10T16:00:00Z without approval and the daemon proceeded",
        ),
        ("approved", "3f2a9c01bd was already approved"),
        ("held", "3f2a9c01bd is 'held', not waiting"),
    ],
)
async def test_a_decided_request_is_not_changed(
    store: SqliteStore, clock: FakeClock, state: str, message: str
) -> None:
    decided = request("3f2a9c01bd", state=state)
    await put(store, decided)
    code, out, err = await run(store, clock, "3f2a9c01bd", reject=True)
    assert (code, out) == (1, "")
    assert err == f"cloudpilot approve: {message}; nothing changed\n"
    assert await store.get_budget("monthly-cap", "approval:3f2a9c01bd", "2026-11") == decided


class _DaemonDecidesFirst(SqliteStore):
    """A store where the daemon records the timeout between approve's read and its write."""

    async def transition_budget(
        self,
        rule: str,
        scope: str,
        month: str,
        *,
        expect: str,
        data: Mapping[str, Any],
        now: datetime,
    ) -> BudgetRecord | None:
        current = await self.get_budget(rule, scope, month)
        assert current is not None
        await self.put_budget(
            BudgetRecord(rule, scope, month, now, {**current.data, "state": "expired"})
        )
        return await super().transition_budget(
            rule, scope, month, expect=expect, data=data, now=now
        )


async def test_losing_the_race_to_the_daemon_reports_its_decision(
    tmp_path: Path, clock: FakeClock
) -> None:
    store = _DaemonDecidesFirst(tmp_path / "state.db", clock=clock)
    await store.open()
    try:
        await put(store, request("3f2a9c01bd"))
        code, out, err = await run(store, clock, "3f2a9c01bd")
        assert (code, out) == (1, "")
        assert err == (
            "cloudpilot approve: 3f2a9c01bd was decided meanwhile (now expired); nothing changed\n"
        )
        data = await data_of(store, request("3f2a9c01bd"))
        assert data["state"] == "expired"
        assert "decided_by" not in data
    finally:
        await store.close()


@pytest.mark.parametrize("given", ["3f2", "3f2a-9c", "zzzz", ""])
async def test_a_malformed_id_is_a_usage_error(
    store: SqliteStore, clock: FakeClock, given: str
) -> None:
    waiting = request("3f2a9c01bd")
    await put(store, waiting)
    code, out, err = await run(store, clock, given)
    assert (code, out) == (2, "")
    assert err.startswith(f"cloudpilot approve: {given!r} is not a request id: ")
    assert await data_of(store, waiting) == waiting.data


async def test_reject_without_an_id_is_a_usage_error(store: SqliteStore, clock: FakeClock) -> None:
    waiting = request("3f2a9c01bd")
    await put(store, waiting)
    code, out, err = await run(store, clock, None, reject=True)
    assert (code, out) == (2, "")
    assert err == "cloudpilot approve: --reject needs the ID of the request to reject\n"
    assert await data_of(store, waiting) == waiting.data


# Through the config


async def test_run_approve_opens_the_configs_store(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "cloudpilot.toml"
    path.write_text('[state]\npath = "state.db"\n')
    store = SqliteStore(tmp_path / "state.db", clock=clock)
    await store.open()
    await put(store, request("3f2a9c01bd"))
    await store.close()
    out, err = io.StringIO(), io.StringIO()
    code = await run_approve(load_config(path), "3f2a", reject=False, clock=clock, out=out, err=err)
    assert (code, err.getvalue()) == (0, "")
    assert out.getvalue().startswith("approved 3f2a9c01bd: ")
    await store.open()
    try:
        assert (await data_of(store, request("3f2a9c01bd")))["state"] == "approved"
    finally:
        await store.close()


async def test_run_approve_without_a_database_creates_none(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "cloudpilot.toml"
    path.write_text('[state]\npath = "state.db"\n')
    out, err = io.StringIO(), io.StringIO()
    code = await run_approve(load_config(path), None, reject=False, clock=clock, out=out, err=err)
    assert (code, out.getvalue()) == (1, "")
    assert err.getvalue() == (
        f"cloudpilot approve: {tmp_path / 'state.db'}: no state database;"
        f" has the daemon run with {path}?\n"
    )
    assert not (tmp_path / "state.db").exists()
