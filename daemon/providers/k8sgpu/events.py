"""The events the Serverless GPU source and the GPU bill emit, with their `data` fields."""

from __future__ import annotations

from daemon.rules.events import BILL_FIELDS, EventType

_POD = ("uuid", "cluster", "name", "status", "runtime_class")

_GPU_EVENT = (  # a pod event's fields (records.GpuEvent)
    "id",
    "pod",
    "cluster",
    "uuid",
    "user",
    "date",
    "runtime_class",
    "local_reference_namespace",
    "local_reference_name",
    "remote_reference_namespace",
    "remote_reference_name",
    "event_epoch",
    "event_type",
)

EVENTS: tuple[EventType, ...] = (
    EventType(
        "k8sgpu.event.*",
        _GPU_EVENT,
        "a Serverless GPU pod event; the last part is its kind (started, terminated, ...)",
    ),
    EventType("k8sgpu.pod.failed", _POD, "a GPU pod failed"),
    EventType(
        "k8sgpu.pod.terminated",
        (*_POD, "in_deletion", "failed", "succeeded"),
        "a GPU pod ended",
    ),
    EventType(
        "k8sgpu.billing.updated", (*BILL_FIELDS, "clusters"), "the Serverless GPU bill changed"
    ),
)
