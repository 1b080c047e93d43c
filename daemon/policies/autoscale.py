"""The autoscale policy: after each CPU poll, decide per server whether its cores should change.

Where the provider offers `set_cores`, a decision is a `set_cores` action, carried out in place
through the guard. Where it offers only `resize_plan` (its API cannot resize), it is a
recommendation: an alert naming the plan with the cores needed and its monthly price
difference, and the gauge `cloudpilot_autoscale_recommended_cores`. Past resizes (for the
cooldown and the daily cap) are the rule's decisions in the ledger. The policy never names a
provider: it reads each one's traits.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from daemon.client.plans import PlanCatalogue
from daemon.facts import Facts, ServerFact
from daemon.models import Decision, Event
from daemon.notifications import Severity, event_alert
from daemon.observability.collector import Sample
from daemon.observability.metrics import Metrics
from daemon.observability.problems import Hold, Problems
from daemon.policies.scaling import DAY, Verdict, decide
from daemon.rules.compiled import AutoscaleRule, RuleSet
from daemon.rules.vocabulary import CpuReadings, ProviderTraits, Where
from daemon.state.store import LedgerEntry, LedgerState

RECOMMENDATION = "autoscale.recommendation"
RESIZE = "autoscale.resize"
# Ledger states that do not count as a resize: nothing was (or will be) done.
_NOT_RESIZED = frozenset({LedgerState.ABORTED, LedgerState.SKIPPED})


class BudgetGate(Protocol):
    """The budget policy's answer to a scale-up: allowed, or denied with the reason."""

    def allow_scale_up(
        self, rule: str, server: ServerFact, extra_monthly_euros: float | None
    ) -> tuple[bool, str]:
        """Return whether the extra monthly cost fits, and why not when it does not."""
        ...


@dataclass(frozen=True, slots=True)
class Recommendation:
    """The Seeweb plan that has the cores a verdict wants, and what it costs more per month."""

    plan: str
    cores: int
    current_plan: str | None
    price_difference: float | None


@dataclass(frozen=True, slots=True)
class ServerVerdict:
    """One rule's verdict on one server, as /status and `cloudpilot plan` show it."""

    rule: str
    provider: str
    server: str
    verdict: Verdict
    at: datetime
    recommendation: Recommendation | None = None
    hold: Hold | None = None
    """Why the rule cannot decide for the server, when data it needs is missing."""
    decided: bool = True
    """False when the data missing kept the rule from sizing the server at all: no gauges."""

    def as_dict(self) -> dict[str, object]:
        """Return the verdict as JSON-able data."""
        data: dict[str, object] = {
            "rule": self.rule,
            "provider": self.provider,
            "server": self.server,
            "current_cores": self.verdict.current,
            "target_cores": self.verdict.target,
            "direction": self.verdict.direction,
            "reason": self.verdict.reason,
            "cpu_percent": self.verdict.cpu_percent,
            "at": self.at.isoformat(),
        }
        if self.recommendation is not None:
            data["plan"] = self.recommendation.plan
            data["current_plan"] = self.recommendation.current_plan
            data["price_difference_euros"] = self.recommendation.price_difference
        if self.hold is not None:
            data["blocked"] = {
                "reason": self.hold.reason,
                "detail": self.hold.detail,
                "endpoint": self.hold.endpoint,
                "field": self.hold.field,
            }
        return data


@dataclass(slots=True)
class Scaled:
    """What one evaluation decided: decisions, the events they answer, alerts to end."""

    decisions: list[Decision] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    resolve: list[str] = field(default_factory=list)


def recommendation_key(rule: str, server: str) -> str:
    """Return the identity of a rule's recommendation alert about a server."""
    return f"{rule}/{server}"


class AutoscalePolicy:
    """Turn CPU facts into resize decisions (Glesys) and recommendations (Seeweb)."""

    def __init__(
        self,
        *,
        facts: Facts,
        metrics: Metrics,
        problems: Problems,
        providers: Mapping[str, ProviderTraits],
        budget: BudgetGate | None = None,
    ) -> None:
        self._providers = providers
        self._facts = facts
        self._metrics = metrics
        self._problems = problems
        self._budget = budget
        self._rules: tuple[AutoscaleRule, ...] = ()
        self._resizes: dict[tuple[str, str], list[datetime]] = {}
        self._recommending: set[tuple[str, str]] = set()
        self._advice: dict[str, tuple[str, Recommendation]] = {}
        """The recommendation standing for each server, with the rule that made it."""
        self.plans: dict[str, PlanCatalogue] = {}
        """Each recommending provider's plan list, as last read."""
        self.plans_error: dict[str, str] = {}
        """Why the last read of a provider's plan list failed, while no list has been read."""
        self.verdicts: dict[tuple[str, str], ServerVerdict] = {}
        metrics.read_from(self.series)

    def wants_plans(self, provider: str) -> bool:
        """Return whether a rule in force recommends plans of `provider`, so its list is needed."""
        return any(
            rule.provider == provider and rule.enabled and self._traits(rule).recommends
            for rule in self._rules
        )

    def plans_of(self, provider: str) -> PlanCatalogue:
        """Return a provider's plan list as last read (empty before the first read)."""
        return self.plans.get(provider, _NO_PLANS)

    def _traits(self, rule: AutoscaleRule) -> ProviderTraits:
        return self._providers[rule.provider]

    def _cpu(self, rule: AutoscaleRule) -> CpuReadings:
        readings = self._traits(rule).cpu
        assert readings is not None, "the loader accepts autoscalable providers only"
        return readings

    def replace_rules(self, rules: RuleSet) -> None:
        """Use the autoscale rules of a new rule set, and keep the CPU history they read."""
        self._rules = rules.autoscale
        self._facts.keep_cpu_for(cpu_history_needed(self._rules))
        names = {rule.name for rule in self._rules}
        for key in [key for key in self.verdicts if key[0] not in names]:
            del self.verdicts[key]
        self._advice = {s: (r, a) for s, (r, a) in self._advice.items() if r in names}
        for rule in self._rules:
            if not rule.enabled:
                self._problems.settle(rule.name, ())

    def remember(self, entries: Iterable[LedgerEntry], recommending: Iterable[str]) -> None:
        """Learn past resizes from the ledger and firing recommendations from the alerts."""
        names = {rule.name for rule in self._rules}
        for entry in entries:
            decision = entry.decision
            if decision.rule in names and entry.state not in _NOT_RESIZED and decision.event:
                self._resizes.setdefault((decision.rule, decision.event.resource), []).append(
                    decision.time
                )
        for key in recommending:
            rule, _, server = key.partition("/")
            if rule in names:
                self._recommending.add((rule, server))

    def evaluate(self, source: str, now: datetime) -> Scaled:
        """Decide for every server the rules watch whose CPU comes from `source`."""
        scaled = Scaled()
        for rule in self._rules:
            if not rule.enabled or self._cpu(rule).source != source:
                continue
            watched: set[str] = set()
            holds: list[Hold] = []
            for server in self._facts.servers_of(rule.provider):
                if not rule.servers.matches(server):
                    continue
                watched.add(server.name)
                hold = self._evaluate(rule, server, now, scaled)
                if hold is not None:
                    holds.append(hold)
            self._problems.settle(rule.name, holds)
            self._forget(rule, watched)
        return scaled

    def _missing(self, rule: AutoscaleRule, server: ServerFact, cores: int | None) -> Hold | None:
        """Return why the rule cannot size this server at all, if data it needs is missing."""
        readings = self._cpu(rule)
        if self._traits(rule).recommends:
            plans = self.plans_of(rule.provider)
            if not plans:
                error = self.plans_error.get(rule.provider)
                why = f" ({error})" if error else ""
                return _hold(
                    rule,
                    "*",
                    "plans_unavailable",
                    f"no plan list has been read{why}: no plan can be recommended",
                    readings.plans,
                )
            plan = plans.get(server.plan)
            if plan is None:
                return _hold(
                    rule,
                    server.name,
                    "plan_not_in_catalogue",
                    f"{server.name}: its plan {server.plan!r} is not in the plan list "
                    f"({len(plans)} plans, names compared in any case)",
                    readings.plan,
                )
            if not plans.priced_family(plan):
                return _hold(
                    rule,
                    server.name,
                    "no_priced_plan",
                    f"{server.name}: no plan of its family ({plans.family(plan).describe()}) "
                    "carries a monthly price, so no move can be priced",
                    readings.price,
                )
        if cores is None:
            return _hold(
                rule,
                server.name,
                "cores_unknown",
                f"{server.name}: the listing does not say how many cores it has",
                readings.cores,
            )
        return None

    def _evaluate(
        self, rule: AutoscaleRule, server: ServerFact, now: datetime, scaled: Scaled
    ) -> Hold | None:
        """Decide for one server; return the hold when data the rule needs is missing."""
        key = (rule.name, server.name)
        plans = self.plans_of(rule.provider)
        plan = plans.get(server.plan) if self._traits(rule).recommends else None
        # A listing without the cores still names the plan, which has them.
        cores = server.cores if server.cores is not None else plan.cpu if plan else None
        missing = self._missing(rule, server, cores)
        if missing is not None or cores is None:
            current = cores or 0
            reason = missing.describe() if missing is not None else "cores unknown"
            self.verdicts[key] = ServerVerdict(
                rule.name,
                rule.provider,
                server.name,
                Verdict(current, current, "hold", f"blocked: {reason}"),
                now,
                hold=missing,
                decided=False,
            )
            return missing
        window = self._facts.cpu.get((rule.provider, server.name))
        samples = list(window) if window is not None else []
        history = [at for at in self._resizes.get(key, []) if now - at < DAY + timedelta(hours=1)]
        self._resizes[key] = history
        sizes = plans.sizes(plan) if plan is not None else server.sizes
        verdict = decide(rule.spec, samples, cores, now, history, sizes or None)
        hold: Hold | None = None
        if verdict.missing is not None:
            cpu = self._cpu(rule).cpu
            hold = Hold(
                rule.name,
                server.name,
                verdict.missing,
                f"{server.name}: {verdict.reason}",
                cpu.endpoint.replace("{name}", server.name),
                cpu.field,
            )
        recommendation: Recommendation | None = None
        if verdict.resize and plan is not None:
            chosen = plans.choose(plan, verdict.target)
            if chosen is None:
                verdict = _held(
                    verdict,
                    f"{verdict.reason}, but no other {plans.family(plan).describe()} plan has "
                    f"{verdict.target} cores and the disk of {plan.name}",
                )
            else:
                difference = None
                if plan.monthly_price is not None and chosen.monthly_price is not None:
                    difference = round(chosen.monthly_price - plan.monthly_price, 2)
                recommendation = Recommendation(chosen.name, chosen.cpu, plan.name, difference)
        if verdict.resize and verdict.direction == "up" and self._budget is not None:
            extra = recommendation.price_difference if recommendation else None
            allowed, why = self._budget.allow_scale_up(rule.name, server, extra)
            if not allowed:
                verdict = _held(verdict, f"{verdict.reason}, but the budget says no: {why}")
                recommendation = None
        self.verdicts[key] = ServerVerdict(
            rule.name, rule.provider, server.name, verdict, now, recommendation, hold
        )
        if verdict.resize:
            history.append(now)
            if recommendation is not None:
                self._recommend(rule, server, verdict, recommendation, now, scaled)
            else:
                self._resize(rule, server, verdict, now, scaled)
        elif verdict.wanted == "hold" and key in self._recommending and hold is None:
            # The load is back within the thresholds: the advice no longer stands.
            self._recommending.discard(key)
            scaled.resolve.append(recommendation_key(rule.name, server.name))
            self._advice.pop(server.name, None)
        return hold

    def _resize(
        self,
        rule: AutoscaleRule,
        server: ServerFact,
        verdict: Verdict,
        now: datetime,
        scaled: Scaled,
    ) -> None:
        event = _event(RESIZE, rule, server, verdict, now, {})
        params: dict[str, object] = {
            "server": server.name,
            "provider": rule.provider,
            "cores": verdict.target,
        }
        if rule.snapshot is not None:
            params["snapshot"] = rule.snapshot
        scaled.events.append(event)
        scaled.decisions.append(
            Decision(
                key=f"{rule.name}/set_cores/{event.key}",
                rule=rule.name,
                action="set_cores",
                params=params,
                mode=rule.mode,
                event=event,
                time=now,
            )
        )

    def _recommend(
        self,
        rule: AutoscaleRule,
        server: ServerFact,
        verdict: Verdict,
        advice: Recommendation,
        now: datetime,
        scaled: Scaled,
    ) -> None:
        difference = advice.price_difference
        price = "price unknown" if difference is None else f"{difference:+.2f} EUR/month"
        summary = (
            f"{server.name}: move from {advice.current_plan or 'its plan'} "
            f"({verdict.current} cores) to {advice.plan} ({advice.cores} cores), {price}"
        )
        title = self._traits(rule).title
        detail = (
            f"{verdict.reason}. {title} cannot resize through its API: change the plan in the "
            "panel."
        )
        event = _event(
            RECOMMENDATION,
            rule,
            server,
            verdict,
            now,
            {
                "plan": advice.plan,
                "current_plan": advice.current_plan,
                "recommended_cores": advice.cores,
                "price_difference_euros": difference,
                "summary": summary,
                "detail": detail,
            },
        )
        scaled.events.append(event)
        scaled.decisions.append(
            event_alert(
                f"{rule.name}/recommend/{event.key}",
                rule.name,
                event,
                severity=Severity.WARNING,
                labels={"plan": advice.plan, "recommended_cores": str(advice.cores)},
                to=rule.to,
                mode=rule.mode,
            )
        )
        self._recommending.add((rule.name, server.name))
        self._advice[server.name] = (rule.name, advice)

    def _forget(self, rule: AutoscaleRule, watched: set[str]) -> None:
        """Drop the verdicts and advice of servers the rule no longer watches."""
        for key in [key for key in self.verdicts if key[0] == rule.name and key[1] not in watched]:
            del self.verdicts[key]
        self._advice = {
            server: (by, advice)
            for server, (by, advice) in self._advice.items()
            if by != rule.name or server in watched
        }

    def series(self) -> Iterator[Sample]:
        """Return each verdict's cores and each standing recommendation (the scrape's reader)."""
        if not self._metrics.per_server:
            return
        current, target = self._metrics.autoscale_current, self._metrics.autoscale_target
        for key, verdict in self.verdicts.items():
            if verdict.decided:
                yield current, key, verdict.verdict.current
                yield target, key, verdict.verdict.target
        recommended, difference = (
            self._metrics.autoscale_recommended,
            self._metrics.autoscale_price_delta,
        )
        for server, (_, advice) in self._advice.items():
            labels = (server, advice.plan)
            yield recommended, labels, advice.cores
            if advice.price_difference is not None:
                yield difference, labels, advice.price_difference


_NO_PLANS = PlanCatalogue()


def _hold(rule: AutoscaleRule, subject: str, reason: str, detail: str, where: Where | None) -> Hold:
    """Return a hold naming the request and field the missing data comes from."""
    return Hold(
        rule.name,
        subject,
        reason,
        detail,
        where.endpoint if where is not None else "",
        where.field if where is not None else "",
    )


def _held(verdict: Verdict, reason: str) -> Verdict:
    return Verdict(
        verdict.current, verdict.current, "hold", reason, verdict.cpu_percent, verdict.wanted
    )


#: CPU history kept beyond the longest `for`: the sample before a run began (held_since reads
#: it), a late poll, and the status line's view of the last hour.
CPU_HISTORY_MARGIN = timedelta(hours=1)


def cpu_history_needed(rules: Iterable[AutoscaleRule]) -> timedelta:
    """Return how far back the autoscale rules read a server's CPU samples.

    Only that is kept: a day of five-minute samples for 10,000 servers would be 2.9 million
    objects nobody reads.
    """
    longest = max(
        (max(rule.spec.up.for_s, rule.spec.down.for_s) for rule in rules if rule.enabled),
        default=0.0,
    )
    return timedelta(seconds=longest) + CPU_HISTORY_MARGIN


def _event(
    kind: str,
    rule: AutoscaleRule,
    server: ServerFact,
    verdict: Verdict,
    now: datetime,
    extra: dict[str, object],
) -> Event:
    return Event(
        type=kind,
        key=f"{kind}:{server.provider}:{server.name}:{now.isoformat()}",
        time=now,
        resource=server.name,
        data={
            "rule": rule.name,
            "provider": server.provider,
            "server": server.name,
            "current_cores": verdict.current,
            "target_cores": verdict.target,
            "direction": verdict.direction,
            "reason": verdict.reason,
            "cpu_percent": verdict.cpu_percent,
            **extra,
        },
        source="autoscale",
    )
