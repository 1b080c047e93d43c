"""The dispatcher: deliver the outbox, one queue per destination, each with its own pace.

Every destination (a route, or one URL of a route with several) has a worker that sends its
deliveries oldest first, one at a time. An alert's notifications go in order, so a resolved one
never overtakes its firing one; other alerts go on past one that is being retried. A delivery
leaves the outbox only when the receiver accepted it, or refused it for good; failures are
retried with capped exponential backoff (or the receiver's Retry-After) until
`give_up_after`. A destination that hangs or fails holds up only its own queue.

Alertmanager forgets an alert whose `endsAt` has passed, so its routes are also refreshed: every
firing alert is sent again each `resend_every`, and each resolved one for five minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Protocol, cast

import structlog

from daemon.clock import Clock
from daemon.notifications import AlertStatus, Delivery, Notification, Sender, SendResult, Verdict
from daemon.observability.metrics import Metrics
from daemon.retry import backoff_delay
from daemon.state.store import Store

Logger = structlog.typing.FilteringBoundLogger

RESOLVED_RESEND_S = 300.0
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 300.0
RETRY_AFTER_MAX_S = 3600.0
# A worker looks at its queue at least this often, and waits this long after a store error.
IDLE_CHECK_S = 60.0
STORE_ERROR_WAIT_S = 5.0
MIN_WAIT_S = 0.05


class Refresher(Protocol):
    """A sender that can post the current state of many alerts at once (Alertmanager)."""

    async def post_alerts(
        self, destination: str, notifications: Sequence[Notification]
    ) -> SendResult:
        """Send these alerts' current state to one destination."""
        ...


class _Pace:
    """At most `rate` sends per second for one destination."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next = float("-inf")

    def wait(self, now: float) -> float:
        """Return how long to wait before the next send may go."""
        return max(0.0, self._next - now)

    def took(self, now: float) -> None:
        """Note a send made at `now`."""
        self._next = now + self._interval


class Dispatcher:
    """Deliver queued notifications per destination, and keep Alertmanager's alerts fresh."""

    def __init__(
        self,
        *,
        store: Store,
        senders: Mapping[str, Sender],
        metrics: Metrics,
        clock: Clock,
        log: Logger,
        rng: random.Random | None = None,
        give_up_after: Callable[[str], float] = lambda _route: 86400.0,
        refresh_every: Mapping[str, float] | None = None,
    ) -> None:
        self._store = store
        self._senders = dict(senders)
        self._metrics = metrics
        self._clock = clock
        self._log = log
        self._rng = rng or random.Random()
        self._give_up_after = give_up_after
        self._refresh_every = dict(refresh_every or {})
        self._targets: dict[str, Sender] = {
            destination: sender
            for sender in self._senders.values()
            for destination in sender.destinations
        }
        self._paces = {name: _Pace(sender.rate_per_s) for name, sender in self._targets.items()}
        self._locks = {name: asyncio.Lock() for name in self._targets}
        self._wakeups = {name: asyncio.Event() for name in self._targets}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._queued_routes: set[str] = set()

    @property
    def destinations(self) -> tuple[str, ...]:
        """Return every destination the dispatcher delivers to."""
        return tuple(self._targets)

    # --- running ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start a worker per destination (each delivers what is queued at once) and refreshers."""
        loop = asyncio.get_running_loop()
        for destination in self._targets:
            self._tasks.append(loop.create_task(self._work(destination)))
        for route, every in self._refresh_every.items():
            self._tasks.append(loop.create_task(self._refresh_loop(route, every)))

    def wake(self, destinations: Iterable[str]) -> None:
        """Tell these destinations' workers that deliveries were queued."""
        for destination in destinations:
            wakeup = self._wakeups.get(destination)
            if wakeup is not None:
                wakeup.set()

    async def stop(self, grace: float) -> None:
        """Let sends under way finish for up to `grace` seconds, then cancel the rest.

        A send cut off here stays in the outbox and goes again after the restart: a receiver
        may see it twice, but never not at all.
        """
        self._stop.set()
        for wakeup in self._wakeups.values():
            wakeup.set()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=grace)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _work(self, destination: str) -> None:
        wakeup = self._wakeups[destination]
        while not self._stop.is_set():
            wakeup.clear()
            try:
                delay = await self.pump(destination)
            except Exception as exc:  # the store failing must not end the worker
                self._log.error(
                    "notify_queue_failed",
                    destination=destination,
                    error=f"{type(exc).__name__}: {exc}",
                )
                delay = STORE_ERROR_WAIT_S
            wait = IDLE_CHECK_S if delay is None else min(max(delay, MIN_WAIT_S), IDLE_CHECK_S)
            with contextlib.suppress(TimeoutError):
                # Loop time on purpose: this only bounds how long an idle worker sleeps.
                await asyncio.wait_for(wakeup.wait(), wait)

    # --- delivering ------------------------------------------------------------------------------

    async def pump(self, destination: str) -> float | None:
        """Send what is due for one destination; return seconds until more falls due, or None."""
        sender = self._targets[destination]
        async with self._locks[destination]:
            changed = False
            try:
                while not self._stop.is_set():
                    # The store gives each alert's oldest delivery only: a resolved notification
                    # never overtakes its firing one (a resolve sent first would end nothing,
                    # and the trigger after it would open an incident no one resolves), while
                    # other alerts go on past one being retried.
                    due = await self._store.due_deliveries(destination, self._clock.now(), 1)
                    if not due:
                        break
                    wait = self._paces[destination].wait(self._clock.monotonic())
                    if wait > 0:
                        return wait
                    changed = True
                    delivery = due[0]
                    if self._expired(sender, delivery) or await self._superseded(sender, delivery):
                        await self._store.remove_delivery(delivery.id)
                        continue
                    result = await self._send(sender, destination, delivery)
                    if result.verdict is Verdict.RETRY:
                        delay = self._backoff(delivery.attempts, result.retry_after_s)
                        retry_at = self._clock.now() + timedelta(seconds=delay)
                        await self._store.postpone_delivery(delivery.id, retry_at, result.detail)
                        self._log.warning(
                            "notification_retry",
                            route=sender.route,
                            destination=destination,
                            alert=delivery.notification.alert_key,
                            status=delivery.notification.status.value,
                            attempt=delivery.attempts + 1,
                            detail=result.detail,
                            retry_in_s=round(delay, 1),
                        )
                        continue
                    await self._store.remove_delivery(delivery.id)
                next_at = await self._store.next_delivery_at(destination)
                if next_at is None:
                    return None
                return max(0.0, (next_at - self._clock.now()).total_seconds())
            finally:
                if changed:
                    await self.count_queued()

    async def _superseded(self, sender: Sender, delivery: Delivery) -> bool:
        """Return whether a late firing to Alertmanager would revive an alert since resolved.

        Alertmanager holds state, not messages: once the alert resolved (and the refresh may
        already have said so), its older firing notification is obsolete, not owed.
        """
        notification = delivery.notification
        if sender.route not in self._refresh_every or notification.status is not AlertStatus.FIRING:
            return False
        alert = await self._store.get_alert(notification.alert_key)
        return (
            alert is not None
            and alert.status == AlertStatus.RESOLVED
            and alert.started_at == notification.started_at
        )

    def _expired(self, sender: Sender, delivery: Delivery) -> bool:
        limit = self._give_up_after(sender.route)
        age = (self._clock.now() - delivery.created_at).total_seconds()
        if delivery.attempts == 0 or age <= limit:
            return False
        self._metrics.notifications.labels(sender.route, "expired").inc()
        self._log.error(
            "notification_expired",
            route=sender.route,
            alert=delivery.notification.alert_key,
            status=delivery.notification.status.value,
            attempts=delivery.attempts,
            last_error=delivery.last_error,
            given_up_after_s=limit,
        )
        return True

    async def _send(self, sender: Sender, destination: str, delivery: Delivery) -> SendResult:
        started = self._clock.monotonic()
        self._paces[destination].took(started)
        try:
            async with asyncio.timeout(sender.timeout_s):
                result = await sender.send(destination, delivery.notification)
        except TimeoutError:
            result = SendResult(Verdict.RETRY, f"no answer within {sender.timeout_s:g} s")
        except Exception as exc:  # a sender's bug must not stop the queue; messages may hold URLs
            result = SendResult(Verdict.RETRY, f"sender failed: {type(exc).__name__}")
        self._metrics.notification_duration.labels(sender.route).observe(
            max(0.0, self._clock.monotonic() - started)
        )
        outcome = "retried" if result.verdict is Verdict.RETRY else result.verdict.value
        self._metrics.notifications.labels(sender.route, outcome).inc()
        notification = delivery.notification
        if result.verdict is Verdict.DELIVERED:
            self._log.info(
                "notification_delivered",
                route=sender.route,
                destination=destination,
                alert=notification.alert_key,
                status=notification.status.value,
                attempts=delivery.attempts + 1,
            )
        elif result.verdict is Verdict.REJECTED:
            self._log.error(
                "notification_rejected",
                route=sender.route,
                destination=destination,
                alert=notification.alert_key,
                status=notification.status.value,
                detail=result.detail,
            )
        return result

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        # `attempts` counts the tries before this one: the first failure waits BACKOFF_FIRST_S.
        delay = backoff_delay(attempts + 1, first=BACKOFF_FIRST_S, cap=BACKOFF_MAX_S, rng=self._rng)
        if retry_after is not None:
            delay = max(delay, min(retry_after, RETRY_AFTER_MAX_S))
        return delay

    async def count_queued(self) -> None:
        """Set the queued-notifications gauge per route from the outbox."""
        counts: dict[str, int] = {}
        for destination, count in (await self._store.pending_deliveries()).items():
            sender = self._targets.get(destination)
            route = sender.route if sender is not None else destination.partition("#")[0]
            counts[route] = counts.get(route, 0) + count
        for route in self._queued_routes - counts.keys():
            self._metrics.notifications_queued.labels(route).set(0)
        for route, count in counts.items():
            self._metrics.notifications_queued.labels(route).set(count)
        self._queued_routes |= counts.keys()

    # --- Alertmanager refresh --------------------------------------------------------------------

    async def _refresh_loop(self, route: str, every: float) -> None:
        while not self._stop.is_set():
            try:
                await self.refresh(route)
            except Exception as exc:  # the store failing: try again next round
                self._log.error(
                    "alert_refresh_failed", route=route, error=f"{type(exc).__name__}: {exc}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), every)

    async def refresh(self, route: str) -> int:
        """Send a route its firing alerts and those resolved in the last five minutes.

        Return how many destinations accepted. Best effort: what fails is sent again next round,
        and new changes still go through the outbox.
        """
        sender = self._senders[route]
        accepted = 0
        for destination in sender.destinations:
            # Read and post under the destination's lock: a state change queued meanwhile is
            # delivered after this post, so a refresh in flight never re-fires a resolved alert.
            async with self._locks[destination]:
                since = self._clock.now() - timedelta(seconds=RESOLVED_RESEND_S)
                notifications = [
                    Notification.from_dict(alert.data["notification"])
                    for alert in await self._store.alerts_to_refresh(since)
                    if route in alert.data.get("routes", ())
                ]
                if not notifications:
                    return 0
                try:
                    async with asyncio.timeout(sender.timeout_s):
                        refresher = cast(Refresher, sender)
                        result = await refresher.post_alerts(destination, notifications)
                except TimeoutError:
                    result = SendResult(Verdict.RETRY, f"no answer within {sender.timeout_s:g} s")
            if result.verdict is Verdict.DELIVERED:
                accepted += 1
                self._metrics.notifications.labels(route, "refreshed").inc()
            else:
                self._metrics.notifications.labels(route, "refresh_failed").inc()
                self._log.warning(
                    "alert_refresh_failed",
                    route=route,
                    destination=destination,
                    alerts=len(notifications),
                    detail=result.detail,
                )
        return accepted
