"""`cloudpilot approve`: list the budget actions waiting for approval, approve or reject one.

A budget step with `approval:` does not act by itself: the daemon stores a request as a budget
record (scope `approval:<id>`, `data["state"] == "waiting"`) and acts only once the record says
`approved`. This command is the other writer of that record. It changes a request only from
`waiting`, in one transaction (`Store.transition_budget`), so when the daemon records a timeout at
the same moment, exactly one of the two decisions lands. An expired request is left for the
daemon to close: it alone writes `expired` (cancel) or `proceeded`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from daemon.clock import Clock
from daemon.config import Config
from daemon.exitcodes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from daemon.state import SqliteStore
from daemon.state.store import BudgetRecord, StateError, Store

APPROVAL_SCOPE_PREFIX = "approval:"
MIN_ID_PREFIX = 4
"""The fewest characters of an id the command accepts: fewer would match too much by chance."""

DECIDED_BY = "cloudpilot approve"
WAITING = "waiting"

_HEX = frozenset("0123456789abcdef")
_PROG = "cloudpilot approve"


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """A budget step's request for approval, read leniently from the record the daemon wrote."""

    record: BudgetRecord

    @property
    def id(self) -> str:
        """Return the request's id, the part of the scope after `approval:`."""
        return self.record.scope.removeprefix(APPROVAL_SCOPE_PREFIX)

    @property
    def data(self) -> Mapping[str, Any]:
        """Return the record's data."""
        return self.record.data

    @property
    def state(self) -> str:
        """Return the request's state: waiting, approved, rejected, expired or proceeded."""
        return str(self.data.get("state", "?"))

    @property
    def step(self) -> str:
        """Return the step's label, e.g. `1:power_off`."""
        return str(self.data.get("step", "?"))

    @property
    def summary(self) -> str:
        """Return what the step would do, in words."""
        summary = self.data.get("summary")
        if summary:
            return str(summary)
        words = f"{self.data.get('action', '')} {self.data.get('target', '')}".strip()
        return words or "(no summary)"

    @property
    def on_timeout(self) -> str:
        """Return what the daemon does when the request expires: cancel or proceed."""
        return str(self.data.get("on_timeout", "cancel"))

    @property
    def expires_at(self) -> datetime | None:
        """Return when the request expires, or None when the record does not say (readably)."""
        return _parse_time(self.data.get("expires_at"))

    def expired(self, now: datetime) -> bool:
        """Return whether the request can no longer be approved at `now`."""
        expires_at = self.expires_at
        return expires_at is not None and now >= expires_at

    def describe(self) -> str:
        """Return the request as `summary (rule, step label)`."""
        return f"{self.summary} ({self.record.rule}, step {self.step})"


async def run_approve(
    config: Config,
    approval_id: str | None,
    *,
    reject: bool,
    clock: Clock,
    out: TextIO,
    err: TextIO,
) -> int:
    """Open the config's state database, then list, approve or reject; return the exit code."""
    problem = usage_problem(approval_id, reject=reject)
    if problem is not None:
        print(f"{_PROG}: {problem}", file=err)
        return EXIT_USAGE
    path = config.state_path
    if not path.exists():
        # Opening would create an empty database: say instead that there is nothing to approve.
        print(
            f"{_PROG}: {path}: no state database; has the daemon run with {config.path}?",
            file=err,
        )
        return EXIT_FAILURE
    store = SqliteStore(path, clock=clock)
    try:
        await store.open()
        try:
            return await approve_with(
                store, approval_id, reject=reject, clock=clock, out=out, err=err
            )
        finally:
            await store.close()
    except StateError as exc:
        print(f"{_PROG}: {exc}", file=err)
        return EXIT_FAILURE


async def approve_with(
    store: Store,
    approval_id: str | None,
    *,
    reject: bool,
    clock: Clock,
    out: TextIO,
    err: TextIO,
) -> int:
    """List the waiting requests (no id), or approve or reject one; return the exit code."""
    problem = usage_problem(approval_id, reject=reject)
    if problem is not None:
        print(f"{_PROG}: {problem}", file=err)
        return EXIT_USAGE
    if approval_id is None:
        return await _list_waiting(store, clock.now(), out)
    return await _decide(
        store, approval_id.strip().lower(), reject=reject, clock=clock, out=out, err=err
    )


def usage_problem(approval_id: str | None, *, reject: bool) -> str | None:
    """Return what is wrong with the arguments, or None when they can be used."""
    if approval_id is None:
        return "--reject needs the ID of the request to reject" if reject else None
    wanted = approval_id.strip().lower()
    if len(wanted) < MIN_ID_PREFIX or not set(wanted) <= _HEX:
        return (
            f"{approval_id!r} is not a request id: give at least {MIN_ID_PREFIX} of its hex"
            " digits (run `cloudpilot approve` to list the waiting ones)"
        )
    return None


async def waiting_requests(store: Store) -> list[ApprovalRequest]:
    """Return the requests still waiting, of every month, the soonest to expire first."""
    requests = await _requests(store)
    waiting = [request for request in requests if request.state == WAITING]
    never = datetime.max.replace(tzinfo=UTC)
    return sorted(waiting, key=lambda request: (request.expires_at or never, request.id))


async def _requests(store: Store, id_prefix: str = "") -> list[ApprovalRequest]:
    records = await store.budgets(scope_prefix=APPROVAL_SCOPE_PREFIX + id_prefix)
    return [ApprovalRequest(record) for record in records]


async def _list_waiting(store: Store, now: datetime, out: TextIO) -> int:
    waiting = await waiting_requests(store)
    if not waiting:
        print("no budget action is waiting for approval", file=out)
        return EXIT_OK
    for request in waiting:
        print(_listing_line(request, now), file=out)
    return EXIT_OK


def _listing_line(request: ApprovalRequest, now: datetime) -> str:
    expires_at = request.expires_at
    if expires_at is None:
        expiry = f"expires {request.data.get('expires_at', 'never')!s}"
    elif request.expired(now):
        expiry = f"expired {_stamp(expires_at)}, the daemon will record it"
    else:
        expiry = f"expires {_stamp(expires_at)}"
    return (
        f"{request.id}  {request.record.rule}  {request.step}  {request.summary}"
        f"  {expiry}  on timeout: {request.on_timeout}"
    )


async def _decide(
    store: Store, wanted: str, *, reject: bool, clock: Clock, out: TextIO, err: TextIO
) -> int:
    verb = "rejected" if reject else "approved"
    matches = await _requests(store, wanted)
    if not matches:
        waiting = await waiting_requests(store)
        known = (
            f"waiting: {', '.join(request.id for request in waiting)}"
            if waiting
            else "no budget action is waiting for approval"
        )
        print(f"{_PROG}: no approval request {wanted}; {known}", file=err)
        return EXIT_FAILURE
    if len(matches) > 1:
        found = ", ".join(
            f"{request.id} ({request.record.rule}, {request.record.month}, {request.state})"
            for request in matches
        )
        print(f"{_PROG}: {wanted} matches {len(matches)} requests: {found}; give more", file=err)
        return EXIT_FAILURE
    request = matches[0]
    if request.state != WAITING:
        print(f"{_PROG}: {_already(request)}; nothing changed", file=err)
        return EXIT_FAILURE
    now = clock.now()
    if request.expired(now):
        print(f"{_PROG}: {_expired(request, verb)}", file=err)
        return EXIT_FAILURE
    data = {
        **request.data,
        "state": verb,
        "decided_at": now.astimezone(UTC).isoformat(),
        "decided_by": DECIDED_BY,
    }
    record = request.record
    written = await store.transition_budget(
        record.rule, record.scope, record.month, expect=WAITING, data=data, now=now
    )
    if written is None:
        # The daemon (or another `cloudpilot approve`) decided between our read and our write.
        current = await store.get_budget(record.rule, record.scope, record.month)
        state = "gone" if current is None else ApprovalRequest(current).state
        print(
            f"{_PROG}: {request.id} was decided meanwhile (now {state}); nothing changed",
            file=err,
        )
        return EXIT_FAILURE
    then = (
        "the daemon acts on its next evaluation"
        if not reject
        else "the daemon will not take this action"
    )
    print(f"{verb} {request.id}: {request.describe()}; {then}", file=out)
    return EXIT_OK


def _already(request: ApprovalRequest) -> str:
    state = request.state
    if state in ("approved", "rejected"):
        decided_at = _parse_time(request.data.get("decided_at"))
        when = f" at {_stamp(decided_at)}" if decided_at is not None else ""
        by = request.data.get("decided_by")
        return f"{request.id} was already {state}{when}{f' by {by}' if by else ''}"
    expires_at = request.expires_at
    when = f" at {_stamp(expires_at)}" if expires_at is not None else ""
    if state == "expired":
        return f"{request.id} expired{when} without approval and was cancelled"
    if state == "proceeded":
        return f"{request.id} expired{when} without approval and the daemon proceeded"
    return f"{request.id} is {state!r}, not waiting"


def _expired(request: ApprovalRequest, verb: str) -> str:
    expires_at = request.expires_at
    assert expires_at is not None
    then = (
        "the daemon proceeds without approval"
        if request.on_timeout == "proceed"
        else "the daemon cancels it"
    )
    return (
        f"{request.id} expired at {_stamp(expires_at)} and was not {verb}; {then} and records"
        " the timeout on its next evaluation"
    )


def _parse_time(value: Any) -> datetime | None:
    """Return an ISO-8601 time as aware UTC (a naive one is taken as UTC), or None."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
