"""Sources: poll the provider APIs, turn what is new into events, keep facts up to date."""

from daemon.sources.actions import ActionsSource
from daemon.sources.base import Source
from daemon.sources.billing import BillingSource
from daemon.sources.glesys import GlesysSource
from daemon.sources.k8sgpu import K8sGpuSource
from daemon.sources.logs import LogsSource
from daemon.sources.metrics import MetricsSource
from daemon.sources.scheduler import PollScheduler, SourceJob

__all__ = [
    "ActionsSource",
    "BillingSource",
    "GlesysSource",
    "K8sGpuSource",
    "LogsSource",
    "MetricsSource",
    "PollScheduler",
    "Source",
    "SourceJob",
]
