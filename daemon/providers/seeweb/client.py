"""The Seeweb ECS API client (`/ecs/v2`): servers, actions, logs, snapshots, plans and billing."""

from __future__ import annotations

import random
from typing import Annotated, Any, Literal

import aiohttp
from pydantic import AliasChoices, BeforeValidator, ConfigDict, Field, RootModel, model_validator

from daemon.client.base import (
    ApiKeyAuth,
    Authenticator,
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
from daemon.client.errors import BadResponseError
from daemon.client.records import (
    Account,
    Action,
    EachItem,
    Image,
    Integer,
    LogEntry,
    MetricSample,
    PageItems,
    Plan,
    Record,
    Region,
    RequiredInteger,
    Server,
    ServerBill,
    ServerBilling,
    ServerCpu,
    ServerMetrics,
    ServerStatus,
    Snapshot,
    SnapshotBilling,
    Template,
    TemplateBill,
    TemplateBilling,
    Text,
    Timestamp,
    each_item,
)
from daemon.clock import Clock
from daemon.secret import Secret

#: Header for long-lived API tokens; the docs also spell it X-API-TOKEN, real clients send this.
API_TOKEN_HEADER = "X-APITOKEN"  # noqa: S105 (a header name, not a secret)
#: How long an ECS JWT lives when the login answer does not say (the docs: 4 hours).
DEFAULT_JWT_LIFETIME = 4 * 3600.0

BillingKind = Literal["servers", "templates", "snapshots"]


def _action_id(value: Any) -> Any:
    """Read an action reference given as an id or as a whole action object."""
    if isinstance(value, dict):
        return value.get("id")
    return value


def _region_name(value: Any) -> Any:
    if isinstance(value, dict):
        return value.get("location", value.get("region"))
    return value


def _flat_regions(value: Any) -> Any:
    """Read available regions: the live API nests the list (`[["it-fr2", …]]`); the docs do not."""
    if isinstance(value, list) and all(isinstance(item, list) for item in value):
        return [region for inner in value for region in inner]
    return value


ActionRef = Annotated[RequiredInteger, BeforeValidator(_action_id)]


class _Login(Record):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    token: SecretToken
    expire: Timestamp = None
    status: Text = None


class _ActionsPage(Listing):
    items_key = "actions"
    actions: Annotated[tuple[Action, ...], EachItem]
    total_actions: Integer = None


class _ActionStarted(Record):
    """A server action's answer: the action itself (bare or wrapped), or only its id."""

    action: Action | None = None
    action_id: Integer = None

    @model_validator(mode="before")
    @classmethod
    def _accept_bare(cls, data: Any) -> Any:
        if isinstance(data, dict) and "action" not in data and "action_id" not in data:
            return {"action": data}
        return data


class _ActionReply(Envelope):
    action: Action
    key = "action"


class _LogsPage(Listing):
    items_key = "logs"
    logs: Annotated[tuple[LogEntry, ...], EachItem]
    total_logs: Integer = None


class _LogReply(Envelope):
    log: LogEntry
    key = "log"


class _AccountReply(Envelope):
    account: Account
    key = "account"


class _ServersPage(Record):
    # The docs and the live API name the list "server" (singular); accept the plural as well.
    servers: Annotated[tuple[Server, ...], each_item("server")] = Field(
        validation_alias=AliasChoices("server", "servers")
    )
    count: Integer = None


class _ServerReply(Record):
    server: Server


class _ServerCreated(Record):
    server: Server
    # Real answers say "action_id"; the docs show "action" (an id, sometimes a whole action).
    action_id: ActionRef = Field(validation_alias=AliasChoices("action_id", "action"))


class _StatusReply(Record):
    server: ServerStatus


class _MetricsReply(Record):
    metrics: ServerMetrics


class _CpuReply(Record):
    metrics: ServerCpu


class _SnapshotsPage(Record):
    snapshots: Annotated[tuple[Snapshot, ...], EachItem]


class _SnapshotReply(Record):
    snapshot: Snapshot


class _SnapshotAndAction(Record):
    snapshot: Snapshot
    action: Action


class _TemplatesPage(Record):
    templates: Annotated[tuple[Template, ...], EachItem]


class _TemplateReply(Record):
    template: Template


class _TemplateCreated(Record):
    template: Template
    action_id: ActionRef = Field(validation_alias=AliasChoices("action_id", "action"))


class _PlansPage(Record):
    plans: Annotated[tuple[Plan, ...], EachItem]


class _RegionsPage(Record):
    regions: Annotated[tuple[Region, ...], EachItem]


class _ImagesPage(Record):
    images: Annotated[tuple[Image, ...], EachItem]


class _AvailableRegions(Record):
    regions: Annotated[
        tuple[Annotated[str, BeforeValidator(_region_name)], ...], BeforeValidator(_flat_regions)
    ]


class _ServerBills(RootModel[tuple[ServerBill, ...]]):
    pass


class _TemplateBills(RootModel[tuple[TemplateBill, ...]]):
    pass


class SeewebClient(HttpProvider):
    """The Seeweb ECS REST API, authenticated by API token or by username/password login."""

    name = "seeweb"
    api_prefix = "/ecs/v2"
    capabilities = frozenset({"power_on", "power_off", "rollback", "snapshot", "delete_server"})

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        clock: Clock,
        token: Secret | None = None,
        username: str | None = None,
        password: Secret | None = None,
        settings: ClientSettings | None = None,
        rng: random.Random | None = None,
        logger: RequestLog | None = None,
        observer: RequestObserver | None = None,
        on_problem: ProblemObserver | None = None,
        on_wait: WaitObserver | None = None,
    ) -> None:
        auth: Authenticator
        if token is not None and username is None and password is None:
            auth = ApiKeyAuth(API_TOKEN_HEADER, token)
        elif token is None and username is not None and password is not None:
            self._username = username
            self._password = password
            auth = JwtAuth(self._login, clock)
        else:
            raise ValueError("seeweb: give either an API token or a username and password")
        super().__init__(
            session,
            base_url,
            clock=clock,
            auth=auth,
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
            "/login",
            body={"username": self._username, "password": self._password.reveal()},
            retry_safe=True,  # a login changes nothing, so it may be repeated
            authenticate=False,
            show_input=False,
        )
        lifetime = (
            (login.expire - self._clock.now()).total_seconds()
            if login.expire is not None
            else DEFAULT_JWT_LIFETIME
        )
        return IssuedToken(login.token, lifetime)

    # --- account, actions, logs ------------------------------------------------------------------

    async def account(self) -> Account:
        """Return the account's identity and discount flags."""
        return (await self.fetch(_AccountReply, "GET", "/account")).account

    async def list_actions(
        self, start: int = 0, length: int = 50, resource: str | None = None
    ) -> tuple[list[Action], int]:
        """Return one page of actions, newest first, and the total count."""
        page = await self.fetch(
            _ActionsPage,
            "GET",
            "/actions",
            params={"start": start, "length": length, "resource": resource},
        )
        total = page.total_actions if page.total_actions is not None else start + page.listed
        return PageItems(page.actions, page.listed, ids=page.ids, total=page.total_actions), total

    async def get_action(self, action_id: int) -> Action:
        """Return one action by id."""
        reply = await self.fetch(_ActionReply, "GET", "/actions/{id}", path={"id": action_id})
        return reply.action

    async def list_logs(
        self, start: int = 0, length: int = 50, resource: str | None = None
    ) -> tuple[list[LogEntry], int]:
        """Return one page of audit-log entries, newest first, and the total count."""
        page = await self.fetch(
            _LogsPage,
            "GET",
            "/logs",
            params={"start": start, "length": length, "resource": resource},
        )
        total = page.total_logs if page.total_logs is not None else start + page.listed
        return PageItems(page.logs, page.listed, ids=page.ids, total=page.total_logs), total

    async def get_log(self, log_id: int) -> LogEntry:
        """Return one audit-log entry by id."""
        return (await self.fetch(_LogReply, "GET", "/logs/{id}", path={"id": log_id})).log

    # --- servers ---------------------------------------------------------------------------------

    async def list_servers(self) -> list[Server]:
        """Return every server of the account."""
        return list((await self.fetch(_ServersPage, "GET", "/servers")).servers)

    async def get_server(self, name: str) -> Server:
        """Return one server."""
        reply = await self.fetch(_ServerReply, "GET", "/servers/{name}", path={"name": name})
        return reply.server

    async def create_server(
        self, plan: str, image: str, location: str, notes: str, group: str | None = None
    ) -> tuple[Server, int]:
        """Order a new server; return it (still booting) and the id of its creation action."""
        body: dict[str, object] = {"plan": plan, "image": image, "location": location}
        body["notes"] = notes
        if group is not None:
            body["group"] = group
        created = await self.fetch(_ServerCreated, "POST", "/servers", body=body)
        return created.server, created.action_id

    async def delete_server(self, name: str) -> Action:
        """Destroy a server; return the deletion action."""
        reply = await self.fetch(_ActionReply, "DELETE", "/servers/{name}", path={"name": name})
        return reply.action

    async def update_server(
        self, name: str, *, notes: str | None = None, group: str | None = None
    ) -> None:
        """Change a server's label (notes) and/or group (`nogroup` removes it from its group)."""
        # The docs' one label example sends "note", while server creation and every server
        # record use "notes"; we send "notes" so one name means one thing throughout.
        body: dict[str, object] = {}
        if notes is not None:
            body["notes"] = notes
        if group is not None:
            body["group"] = group
        if not body:
            raise ValueError("update_server: give notes or group")
        await self.request("PUT", "/servers/{name}", path={"name": name}, body=body)

    async def server_status(self, name: str) -> ServerStatus:
        """Return a server's power state (RUNNING, SHUTOFF, ...)."""
        reply = await self.fetch(_StatusReply, "GET", "/servers/{name}/status", path={"name": name})
        return reply.server

    async def server_metrics(self, name: str) -> ServerMetrics:
        """Return a server's recent CPU, disk and network series."""
        reply = await self.fetch(
            _MetricsReply, "GET", "/servers/{name}/metrics", path={"name": name}
        )
        return reply.metrics

    async def server_cpu(self, name: str) -> tuple[MetricSample, ...]:
        """Return a server's recent CPU samples, reading nothing else of its metrics."""
        reply = await self.fetch(_CpuReply, "GET", "/servers/{name}/metrics", path={"name": name})
        return reply.metrics.cpu

    async def server_action(self, name: str, type: str, snapshot: int | None = None) -> Action:
        """Start `power_on`, `power_off` or `rollback` (to `snapshot`) on a server."""
        if (type == "rollback") != (snapshot is not None):
            raise ValueError("server_action: a snapshot id goes with rollback, and only with it")
        body: dict[str, object] = {"type": type}
        if snapshot is not None:
            body["snapshot"] = snapshot
        reply = await self.fetch(
            _ActionStarted, "POST", "/servers/{name}/actions", path={"name": name}, body=body
        )
        if reply.action is not None:
            return reply.action
        if reply.action_id is not None:
            return await self.get_action(reply.action_id)
        raise BadResponseError(
            self.name,
            "POST",
            f"{self.api_prefix}/servers/{name}/actions",
            "no action in the answer",
        )

    # --- snapshots -------------------------------------------------------------------------------

    async def create_snapshot(
        self, name: str, description: str, notes: str
    ) -> tuple[Snapshot, Action]:
        """Snapshot a server; return the snapshot (still creating) and its action."""
        reply = await self.fetch(
            _SnapshotAndAction,
            "POST",
            "/servers/{name}/snapshots",
            path={"name": name},
            body={"description": description, "notes": notes},
        )
        return reply.snapshot, reply.action

    async def list_snapshots(self, name: str) -> list[Snapshot]:
        """Return a server's snapshots."""
        reply = await self.fetch(
            _SnapshotsPage, "GET", "/servers/{name}/snapshots", path={"name": name}
        )
        return list(reply.snapshots)

    async def get_snapshot(self, name: str, snapshot_id: int) -> Snapshot:
        """Return one snapshot of a server."""
        reply = await self.fetch(
            _SnapshotReply,
            "GET",
            "/servers/{name}/snapshots/{id}",
            path={"name": name, "id": snapshot_id},
        )
        return reply.snapshot

    async def update_snapshot(
        self,
        name: str,
        snapshot_id: int,
        *,
        description: str | None = None,
        notes: str | None = None,
        protected: bool | None = None,
    ) -> Snapshot:
        """Change a snapshot's description, notes or protection."""
        body: dict[str, object] = {}
        if description is not None:
            body["description"] = description
        if notes is not None:
            body["notes"] = notes
        if protected is not None:
            body["protected"] = protected
        if not body:
            raise ValueError("update_snapshot: give description, notes or protected")
        reply = await self.fetch(
            _SnapshotReply,
            "PATCH",
            "/servers/{name}/snapshots/{id}",
            path={"name": name, "id": snapshot_id},
            body=body,
        )
        return reply.snapshot

    async def delete_snapshot(self, name: str, snapshot_id: int) -> tuple[Snapshot, Action]:
        """Delete a snapshot; return it (deleting) and the deletion action."""
        reply = await self.fetch(
            _SnapshotAndAction,
            "DELETE",
            "/servers/{name}/snapshots/{id}",
            path={"name": name, "id": snapshot_id},
        )
        return reply.snapshot, reply.action

    # --- templates -------------------------------------------------------------------------------

    async def list_templates(self) -> list[Template]:
        """Return the account's templates."""
        return list((await self.fetch(_TemplatesPage, "GET", "/templates")).templates)

    async def get_template(self, name: str) -> Template:
        """Return one template."""
        reply = await self.fetch(_TemplateReply, "GET", "/templates/{name}", path={"name": name})
        return reply.template

    async def create_template(
        self, *, description: str, server: str | None = None, snapshot: int | None = None
    ) -> tuple[Template, int]:
        """Make a template from a server or a snapshot; return it and its action id."""
        if (server is None) == (snapshot is None):
            raise ValueError("create_template: give exactly one of server or snapshot")
        body: dict[str, object] = {"description": description}
        if server is not None:
            body["server"] = server
        else:
            body["snapshot"] = snapshot
        created = await self.fetch(_TemplateCreated, "POST", "/templates", body=body)
        return created.template, created.action_id

    async def delete_template(self, name: str) -> Action:
        """Delete a template; return the deletion action."""
        reply = await self.fetch(_ActionReply, "DELETE", "/templates/{name}", path={"name": name})
        return reply.action

    # --- plans and regions -----------------------------------------------------------------------

    async def list_plans(self) -> list[Plan]:
        """Return every plan the account may use, with prices."""
        return list((await self.fetch(_PlansPage, "GET", "/plans")).plans)

    async def list_available_plans(self) -> list[Plan]:
        """Return the plans that can be activated right now, with images and hosts."""
        return list((await self.fetch(_PlansPage, "GET", "/plans/availables")).plans)

    async def list_images(self) -> list[Image]:
        """Return the public base images."""
        return list((await self.fetch(_ImagesPage, "GET", "/images/basics")).images)

    async def list_regions(self) -> list[Region]:
        """Return every region."""
        return list((await self.fetch(_RegionsPage, "GET", "/regions")).regions)

    async def available_regions(self, plan: str) -> list[str]:
        """Return the locations where `plan` is available."""
        reply = await self.fetch(
            _AvailableRegions,
            "POST",
            "/regions/availables",
            body={"plan": plan},
            retry_safe=True,  # a query sent as POST: it changes nothing
        )
        return list(reply.regions)

    # --- billing ---------------------------------------------------------------------------------

    async def billing_servers(self, year: int, month: int) -> ServerBilling:
        """Return the servers' consumption for a month."""
        rows = await self.fetch(
            _ServerBills,
            "GET",
            "/billing/servers/{year}/{month}",
            path={"year": year, "month": month},
            params={"type": "json"},
        )
        return ServerBilling(year=year, month=month, rows=rows.root)

    async def billing_templates(self, year: int, month: int) -> TemplateBilling:
        """Return the templates' consumption for a month."""
        rows = await self.fetch(
            _TemplateBills,
            "GET",
            "/billing/templates/{year}/{month}",
            path={"year": year, "month": month},
            params={"type": "json"},
        )
        return TemplateBilling(year=year, month=month, rows=rows.root)

    async def billing_snapshots(self, year: int, month: int) -> SnapshotBilling:
        """Return the snapshots' consumption for a month, with the API's total."""
        return await self.fetch(
            SnapshotBilling,
            "GET",
            "/billing/snapshots/{year}/{month}",
            path={"year": year, "month": month},
            params={"type": "json"},
        )

    async def billing_csv(self, kind: BillingKind, year: int, month: int) -> str:
        """Return a month's consumption of `kind` as the API's CSV text."""
        reply = await self.request(
            "GET",
            f"/billing/{kind}/{{year}}/{{month}}",
            path={"year": year, "month": month},
            params={"type": "csv"},
            accept="text/csv",
        )
        return self.decode_text(reply)
