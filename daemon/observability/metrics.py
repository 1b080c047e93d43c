"""Every Prometheus series the daemon exports, on one injected registry.

Counters, histograms and the few process-wide gauges are set as things happen. The per-object
gauges (servers, autoscale verdicts, budgets, alerts, holds, month cost) are `StateGauge`s, read
from their owners' state at scrape time: see `daemon/observability/collector.py`.
"""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from daemon import __version__
from daemon.observability.collector import Reader, StateCollector

_POLL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_ACTION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 1800.0)
_SEND_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The daemon's metric families. Tests build one on a fresh `CollectorRegistry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.per_server = True
        """Whether series labelled by server are exported (`[http] per_server_metrics`)."""
        self.registry = registry
        # The gauges read from state; registered last, once all are declared.
        self.state = state = StateCollector()
        self.build_info = Info(
            "cloudpilot_build", "The running Cloudpilot version.", registry=registry
        )
        self.build_info.info({"version": __version__, "python": platform.python_version()})

        # Sources.
        self.poll_duration = Histogram(
            "cloudpilot_poll_duration_seconds",
            "Time one poll of a source took, successful or not.",
            ["source"],
            buckets=_POLL_BUCKETS,
            registry=registry,
        )
        self.poll_errors = Counter(
            "cloudpilot_poll_errors_total",
            "Polls of a source that failed.",
            ["source"],
            registry=registry,
        )
        self.poll_overruns = Counter(
            "cloudpilot_poll_overruns_total",
            "Polls of a source that took longer than its interval.",
            ["source"],
            registry=registry,
        )
        self.poll_ticks_skipped = Counter(
            "cloudpilot_poll_ticks_skipped_total",
            "Scheduled polls of a source skipped because the last one was still running or late.",
            ["source"],
            registry=registry,
        )
        self.last_poll_success = Gauge(
            "cloudpilot_last_successful_poll_timestamp_seconds",
            "Unix time of a source's last successful poll.",
            ["source"],
            registry=registry,
        )
        self.source_up = Gauge(
            "cloudpilot_source_up",
            "1 while a source's last poll succeeded, 0 while it is failing.",
            ["source"],
            registry=registry,
        )
        self.api_requests = Counter(
            "cloudpilot_api_requests_total",
            "Provider API requests by endpoint template and HTTP status (or error kind).",
            ["provider", "endpoint", "code"],
            registry=registry,
        )
        self.api_rate_waits = Counter(
            "cloudpilot_api_rate_limit_wait_seconds_total",
            "Time provider requests waited for the provider's rate limit (`[<provider>] rate`).",
            ["provider"],
            registry=registry,
        )
        self.parse_errors = Counter(
            "cloudpilot_parse_errors_total",
            "List items a provider's answer held that did not fit their record and were left "
            "out, by provider, endpoint and field.",
            ["provider", "endpoint", "field"],
            registry=registry,
        )
        self.api_request_duration = Histogram(
            "cloudpilot_api_request_duration_seconds",
            "Time provider API requests took, retries included.",
            ["provider"],
            buckets=_POLL_BUCKETS,
            registry=registry,
        )

        # Events and rules.
        self.events = Counter(
            "cloudpilot_events_total",
            "New events by type, after deduplication.",
            ["type"],
            registry=registry,
        )
        self.events_stale = Counter(
            "cloudpilot_events_stale_total",
            "Events too old to decide on (recorded as seen, no decision).",
            ["type"],
            registry=registry,
        )
        self.rule_matches = Counter(
            "cloudpilot_rule_matches_total",
            "Events that met a rule's conditions, before `for` and throttling.",
            ["rule"],
            registry=registry,
        )
        self.decisions = Counter(
            "cloudpilot_decisions_total",
            "Decisions made, by rule and mode (enforce or dry_run).",
            ["rule", "mode"],
            registry=registry,
        )
        self.rule_errors = Counter(
            "cloudpilot_rule_evaluation_errors_total",
            "Conditions that could not be evaluated for an event (counted as not met).",
            ["rule"],
            registry=registry,
        )
        self.rules_loaded = Gauge(
            "cloudpilot_rules_loaded", "Rules currently loaded and enabled.", registry=registry
        )
        self.rule_reloads = Counter(
            "cloudpilot_rule_reloads_total",
            "Rule reloads, by result (ok, or error when the last good rules were kept).",
            ["result"],
            registry=registry,
        )

        # Actions.
        self.actions = Counter(
            "cloudpilot_actions_total",
            "Actions carried out, by type and outcome.",
            ["action", "outcome"],
            registry=registry,
        )
        self.action_duration = Histogram(
            "cloudpilot_action_duration_seconds",
            "Time actions took to run.",
            ["action"],
            buckets=_ACTION_BUCKETS,
            registry=registry,
        )
        self.ledger_open = Gauge(
            "cloudpilot_ledger_open_entries",
            "Decisions recorded but not yet finished.",
            registry=registry,
        )

        # Alerts and notifications: labelled by rule and by configured route, both bounded.
        self.alerts_firing = state.gauge(
            "cloudpilot_alerts_firing",
            "Alerts firing now, by rule.",
            ["rule"],
        )
        self.alert_changes = Counter(
            "cloudpilot_alert_changes_total",
            "Alerts that fired, fired again while firing, or resolved, by rule.",
            ["rule", "change"],
            registry=registry,
        )
        self.template_errors = Counter(
            "cloudpilot_alert_template_errors_total",
            "Alert texts that failed to render (a plain summary was sent instead), by rule.",
            ["rule"],
            registry=registry,
        )
        self.notifications = Counter(
            "cloudpilot_notifications_total",
            "Notification sends by route and outcome: delivered, rejected (4xx, not retried), "
            "retried, expired (given up), refreshed or refresh_failed (Alertmanager resends).",
            ["route", "outcome"],
            registry=registry,
        )
        self.notifications_queued = Gauge(
            "cloudpilot_notifications_queued",
            "Notifications stored and not yet accepted, by route.",
            ["route"],
            registry=registry,
        )
        self.notification_duration = Histogram(
            "cloudpilot_notification_send_seconds",
            "Time one notification send took, by route.",
            ["route"],
            buckets=_SEND_BUCKETS,
            registry=registry,
        )

        # Mission gauges: bounded by the servers watched, the clusters and the budget scopes.
        self.server_cores = state.gauge(
            "cloudpilot_server_cores",
            "Cores of a watched server.",
            ["provider", "server"],
        )
        self.server_cpu = state.gauge(
            "cloudpilot_server_cpu_ratio",
            "CPU use of a watched server as a share of its cores (0 to 1), latest sample.",
            ["provider", "server"],
        )
        self.watched_servers = state.gauge(
            "cloudpilot_watched_servers",
            "Servers a source watches (their cores and CPU are polled), by provider.",
            ["provider"],
        )
        self.watched_cpu = state.gauge(
            "cloudpilot_watched_cpu_ratio_mean",
            "Mean over the watched servers with samples of their latest CPU share (0 to 1).",
            ["provider"],
        )
        self.sweep_remaining = state.gauge(
            "cloudpilot_sweep_remaining_servers",
            "Watched servers the last sweep of a source did not reach for lack of time (read "
            "first by the next); above 0 on every poll means the provider's rate is too low.",
            ["source"],
        )
        self.gpu_pods = Gauge(
            "cloudpilot_k8sgpu_pods",
            "Serverless GPU pods online, by cluster and runtime class.",
            ["cluster", "runtime_class"],
            registry=registry,
        )
        self.month_cost = state.gauge(
            "cloudpilot_month_to_date_cost_euros",
            "Spend in the current calendar month, by budget scope.",
            ["scope"],
        )

        # The guard and autoscale.
        self.guard_snapshots = Counter(
            "cloudpilot_guard_snapshots_total",
            "Snapshots the guard took or found before a risky action, by how they ended.",
            ["outcome"],
            registry=registry,
        )
        self.guard_checks = Counter(
            "cloudpilot_guard_checks_total",
            "Checks after a risky action that its effect took hold, by action and result.",
            ["action", "result"],
            registry=registry,
        )
        self.snapshots_deleted = Counter(
            "cloudpilot_guard_snapshots_deleted_total",
            "Cloudpilot's own old snapshots deleted to keep `keep_snapshots` per server.",
            registry=registry,
        )
        self.autoscale_current = state.gauge(
            "cloudpilot_autoscale_current_cores",
            "Cores of a server an autoscale rule watches, as its last decision saw them.",
            ["rule", "server"],
        )
        self.autoscale_target = state.gauge(
            "cloudpilot_autoscale_target_cores",
            "Cores an autoscale rule wants for a server (equal to current when it holds).",
            ["rule", "server"],
        )
        self.autoscale_recommended = state.gauge(
            "cloudpilot_autoscale_recommended_cores",
            "Cores recommended for a server its provider cannot resize, with that plan.",
            ["server", "plan"],
        )
        self.autoscale_price_delta = state.gauge(
            "cloudpilot_autoscale_recommended_price_difference_euros",
            "Monthly price of the recommended plan minus the current plan's.",
            ["server", "plan"],
        )

        self.policy_blocked = state.gauge(
            "cloudpilot_policy_blocked",
            "Servers (or other subjects) a rule cannot decide for because data it needs is "
            "missing or odd, by rule and reason; /status says which and why.",
            ["rule", "reason"],
        )

        # Budgets.
        self.budget_spend = state.gauge(
            "cloudpilot_budget_spend_euros",
            "A budget's spend this month: billed, estimated (billed plus the use since the "
            "bill) and forecast to month end.",
            ["budget", "kind"],
        )
        self.budget_cap = state.gauge(
            "cloudpilot_budget_cap_euros",
            "A budget's monthly cap.",
            ["budget"],
        )
        self.budget_ratio = state.gauge(
            "cloudpilot_budget_ratio",
            "A budget's estimated month-to-date spend divided by its cap.",
            ["budget"],
        )
        self.budget_burn = state.gauge(
            "cloudpilot_budget_burn_rate_euros_per_hour",
            "What a budget's scope costs per hour now, as the estimate counts it.",
            ["budget"],
        )
        self.budget_estimate_error = state.gauge(
            "cloudpilot_budget_estimate_error_euros",
            "At the last bill: the estimate for the hours it newly covered minus their bill.",
            ["budget"],
        )
        self.budget_warnings = Counter(
            "cloudpilot_budget_warnings_total",
            "Budget warnings sent, on actual or forecast spend.",
            ["budget", "kind"],
            registry=registry,
        )
        self.budget_enforcements = Counter(
            "cloudpilot_budget_enforcements_total",
            "Budget enforcement decisions by step and outcome (decided, dry_run, denied, "
            "would_deny, limited, approval_requested, approved, rejected, expired, proceeded).",
            ["budget", "step", "outcome"],
            registry=registry,
        )
        registry.register(state)

    def read_from(self, reader: Reader) -> None:
        """Read state gauges' samples from `reader` at every scrape (see `StateCollector`)."""
        self.state.read_from(reader)

    def observe_wait(self, provider: str, seconds: float) -> None:
        """Count the time a request waited for its provider's rate limit (the `on_wait` hook)."""
        self.api_rate_waits.labels(provider).inc(seconds)

    def observe_request(self, provider: str, endpoint: str, code: str, seconds: float) -> None:
        """Count one provider API request (the providers' `observer` hook)."""
        self.api_requests.labels(provider, endpoint, code).inc()
        self.api_request_duration.labels(provider).observe(seconds)
