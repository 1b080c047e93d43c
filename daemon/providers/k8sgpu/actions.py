"""The `delete_pod` action: ask Seeweb Serverless GPU (k8sgpu) to delete a GPU pod.

GPU pods have no snapshots, so the guard does not wrap this action (it is not a ServerAction);
it reads the pod first and asks for the deletion only while nobody has asked for it yet.
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar

from pydantic import AfterValidator, Field

from daemon.actions.server import ActionError, not_configured
from daemon.client.errors import ConflictError, NotFoundError
from daemon.client.records import Pod
from daemon.models import Outcome, OutcomeStatus
from daemon.providers.k8sgpu.client import K8sGpuClient
from daemon.rules.action import ActionContext, ActionParams

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
TERMINATED = "terminated"


def _pod_uuid(value: str) -> str:
    """Return `value` if it is a pod uuid, else raise ValueError saying what to write."""
    if not _UUID.fullmatch(value):
        # Action parameters are not templated (only alert texts are): say so, as `{{ }}` is the
        # likeliest way to get here.
        raise ValueError(
            f"must be a pod uuid (8-4-4-4-12 hex digits), not {value!r}; parameters are not "
            "templated: leave `pod` out to use the pod of the k8sgpu event"
        )
    return value.lower()


PodUuid = Annotated[str, AfterValidator(_pod_uuid)]


class DeletePodParams(ActionParams):
    """Parameters of `delete_pod`."""

    pod: PodUuid | None = Field(
        default=None,
        description="The pod's uuid; default: the event's pod (k8sgpu.pod.* and k8sgpu.event.*).",
        json_schema_extra={"format": "uuid"},
    )
    cluster: str | None = Field(
        default=None,
        min_length=1,
        description="The tenant the pod must belong to; a pod of another tenant is left alone.",
    )
    name: str | None = Field(
        default=None, min_length=1, description="The pod's name, for people and logs only."
    )


def pod_gone_words(pod: Pod) -> str | None:
    """Return why a pod needs no deletion (`terminated`, `in deletion`), or None if it does."""
    if (pod.status or "").strip().lower() == TERMINATED:
        return TERMINATED
    if pod.in_deletion:
        return "in deletion"
    return None


class DeletePodAction:
    """Delete a Serverless GPU pod (`delete_pod`), once: never ask twice for the same pod."""

    name: ClassVar[str] = "delete_pod"
    params_model: ClassVar[type[ActionParams]] = DeletePodParams
    destructive: ClassVar[bool] = True
    depends_on: ClassVar[frozenset[str]] = frozenset({"k8sgpu"})

    def __init__(self, client: K8sGpuClient | None) -> None:
        self.client = client

    def need_client(self) -> K8sGpuClient:
        """Return the Serverless GPU client, or raise ActionError if it is not configured."""
        if self.client is None:
            raise not_configured(K8sGpuClient.name)
        return self.client

    def target(self, ctx: ActionContext) -> tuple[str, str]:
        """Return the pod's uuid (the `pod` parameter, else the event's) and a label for it."""
        params = ctx.params(DeletePodParams)
        uuid = params.pod
        if uuid is None:
            event = ctx.decision.event
            ref = event.resource if event is not None else ""
            if not ref:
                raise ActionError("no pod: give `pod`, or use the action on a k8sgpu pod's event")
            try:
                uuid = _pod_uuid(ref)
            except ValueError:
                raise ActionError(
                    f"event resource {ref!r} is not a pod uuid: give `pod`, or use the action "
                    "on a k8sgpu pod's event"
                ) from None
        label = f"pod {params.name} ({uuid})" if params.name else f"pod {uuid}"
        return uuid, label

    async def _read(self, ctx: ActionContext, uuid: str, label: str) -> Pod:
        """Return the pod; raise ActionError if it belongs to another tenant than `cluster`."""
        pod = await self.need_client().get_pod(uuid)
        cluster = ctx.params(DeletePodParams).cluster
        if cluster is not None and pod.cluster != cluster:
            raise ActionError(f"{label} is in cluster {pod.cluster!r}, not {cluster!r}: left alone")
        return pod

    async def run(self, ctx: ActionContext) -> Outcome:
        """Ask for the pod's deletion unless it is gone, terminated or already in deletion."""
        uuid, label = self.target(ctx)
        client = self.need_client()
        try:
            pod = await self._read(ctx, uuid, label)
        except NotFoundError:
            return Outcome(OutcomeStatus.SKIPPED, f"{label} not found: nothing to delete")
        gone = pod_gone_words(pod)
        if gone is not None:
            return Outcome(OutcomeStatus.DONE, f"{label}: already {gone}, not deleted again")
        try:
            await client.delete_pod(uuid)
        except NotFoundError:
            return Outcome(OutcomeStatus.SKIPPED, f"{label} not found: nothing to delete")
        except ConflictError:
            # It ended between the read and the request (a 409 says it is already terminated).
            pod = await client.get_pod(uuid)
            gone = pod_gone_words(pod)
            if gone is None:
                raise
            return Outcome(OutcomeStatus.DONE, f"{label}: already {gone}, not deleted again")
        ctx.log.info("pod_deletion_requested", pod=uuid, cluster=pod.cluster)
        return Outcome(OutcomeStatus.DONE, f"{label}: deletion requested")

    async def reconcile(self, ctx: ActionContext) -> Outcome | None:
        """Return DONE when the pod is gone, terminated or in deletion, else None (run again)."""
        uuid, label = self.target(ctx)
        try:
            pod = await self._read(ctx, uuid, label)
        except NotFoundError:
            return Outcome(OutcomeStatus.DONE, f"{label}: gone")
        gone = pod_gone_words(pod)
        return None if gone is None else Outcome(OutcomeStatus.DONE, f"{label}: {gone}")
