"""The Seeweb Serverless GPU ("k8sgpu") API client (`/k8sgpu/v1`): tenants, pods, events."""

from __future__ import annotations

import random
from typing import Annotated

import aiohttp
from pydantic import ConfigDict, RootModel

from daemon.client.base import (
    ClientSettings,
    Envelope,
    HttpProvider,
    IssuedToken,
    JwtAuth,
    Listing,
    ProblemObserver,
    RequestLog,
    RequestObserver,
    SecretToken,
    WaitObserver,
)
from daemon.client.records import (
    Cluster,
    EachItem,
    GpuBill,
    GpuEvent,
    Integer,
    Number,
    PageItems,
    Pod,
    Record,
    Text,
    Timestamp,
)
from daemon.clock import Clock
from daemon.secret import Secret

#: Refresh the JWT once this share of its `max_age` has passed.
REFRESH_FRACTION = 0.9
#: How long a k8sgpu JWT lives when the login answer gives neither max_age nor expire.
DEFAULT_JWT_LIFETIME = 4 * 3600.0


class _Login(Record):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    token: SecretToken
    expire: Timestamp = None
    user: Text = None
    max_age: Number = None


class _Clusters(RootModel[Annotated[tuple[Cluster, ...], EachItem]]):
    pass


class _ClusterReply(Envelope):
    key = "cluster"
    cluster: Cluster


class _EventsPage(Listing):
    items_key = "items"
    items: Annotated[tuple[GpuEvent, ...], EachItem]
    length: Integer = None
    total: Integer = None


class _Pods(RootModel[Annotated[tuple[Pod, ...], EachItem]]):
    pass


class _PodReply(Envelope):
    key = "pod"
    pod: Pod


class K8sGpuClient(HttpProvider):
    """The Serverless GPU REST API, authenticated by a JWT login."""

    name = "k8sgpu"
    api_prefix = "/k8sgpu/v1"
    capabilities = frozenset({"delete_pod"})

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        clock: Clock,
        username: str,
        password: Secret,
        settings: ClientSettings | None = None,
        rng: random.Random | None = None,
        logger: RequestLog | None = None,
        observer: RequestObserver | None = None,
        on_problem: ProblemObserver | None = None,
        on_wait: WaitObserver | None = None,
    ) -> None:
        self._username = username
        self._password = password
        super().__init__(
            session,
            base_url,
            clock=clock,
            auth=JwtAuth(self._login, clock, refresh_fraction=REFRESH_FRACTION),
            settings=settings,
            rng=rng,
            logger=logger,
            observer=observer,
            on_problem=on_problem,
            on_wait=on_wait,
        )

    async def _login(self) -> IssuedToken:
        """Log in with username and password and return the JWT."""
        login = await self.fetch(
            _Login,
            "POST",
            "/user/login/",
            body={"username": self._username, "password": self._password.reveal()},
            retry_safe=True,  # a login changes nothing, so it may be repeated
            authenticate=False,
            show_input=False,
        )
        # max_age is relative and immune to clock skew; `expire` is a naive time of unclear zone.
        if login.max_age is not None:
            lifetime = login.max_age
        elif login.expire is not None:
            lifetime = (login.expire - self._clock.now()).total_seconds()
        else:
            lifetime = DEFAULT_JWT_LIFETIME
        return IssuedToken(login.token, lifetime)

    async def list_clusters(self) -> list[Cluster]:
        """Return every tenant (cluster)."""
        return list((await self.fetch(_Clusters, "GET", "/cluster/")).root)

    async def get_cluster(self, name: str) -> Cluster:
        """Return one tenant."""
        reply = await self.fetch(_ClusterReply, "GET", "/cluster/{name}", path={"name": name})
        return reply.cluster

    async def list_events(
        self, offset: int = 0, length: int = 50, search: str | None = None
    ) -> tuple[list[GpuEvent], int]:
        """Return one page of pod events, newest first, and the total count."""
        page = await self.fetch(
            _EventsPage,
            "GET",
            "/events/",
            params={"offset": offset, "length": length, "search": search},
        )
        total = page.total if page.total is not None else offset + page.listed
        return PageItems(page.items, page.listed, ids=page.ids, total=page.total), total

    async def list_pods(self, cluster: str | None = None) -> list[Pod]:
        """Return the pods, optionally of one tenant."""
        return list((await self.fetch(_Pods, "GET", "/pod/", params={"cluster": cluster})).root)

    async def get_pod(self, uuid: str) -> Pod:
        """Return one pod."""
        return (await self.fetch(_PodReply, "GET", "/pod/{uuid}", path={"uuid": uuid})).pod

    async def delete_pod(self, uuid: str) -> None:
        """Ask for a pod's deletion; it turns `terminated` once processed."""
        await self.request("DELETE", "/pod/{uuid}", path={"uuid": uuid})

    async def billing(self, year: int, month: int) -> GpuBill:
        """Return the GPU consumption for a month."""
        return await self.fetch(
            GpuBill, "GET", "/billing/{year}/{month}", path={"year": year, "month": month}
        )

    async def billing_csv(self, year: int, month: int) -> str:
        """Return a month's GPU consumption as the API's CSV text."""
        reply = await self.request(
            "GET",
            "/billing/{year}/{month}",
            path={"year": year, "month": month},
            accept="text/csv",
        )
        return self.decode_text(reply)
