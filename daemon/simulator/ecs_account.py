"""The ECS account's own things other tools call: SSH keys, cloud scripts, groups, cloud images.

Cloudpilot does not call these, but a team's other tools do (Seeweb's Terraform provider and Go
client, the `ecsapi` Python client), and the simulator should serve them a whole account. They
answer in the shapes recorded from the live API (`ecsapi`'s tests/store.py, the Go client's
tests): SSH keys under `pubkeys`/`pubkey` with a create that answers only `{"status": "ok"}`,
scripts under `scripts`/`script` updated with PATCH, groups under `groups`/`group`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field

from daemon.simulator.ecs import OK, RequestBody, id_arg, image_json
from daemon.simulator.entities import CloudScript, Group, SimError, SshKey
from daemon.simulator.http import ECS, SIM, json_body, validated
from daemon.simulator.timefmt import iso_micro
from daemon.simulator.world import World

# Public cloud images (`GET /images/cloud-images`): id, name, description, base, version.
CLOUD_IMAGES = (
    (542, "sci-gpu-driver-ubuntu-2204", "Ubuntu 22.04 LTS NVIDIA Driver", "ubuntu", "2204"),
    (545, "sci-k3s-ubuntu-2204", "K3s.io Ubuntu 22.04", "ubuntu", "2204"),
)


class NewKey(RequestBody):
    """POST /sshkeys."""

    key: str = Field(min_length=1, max_length=16_384)
    label: str = Field(min_length=1, max_length=255)


class NewScript(RequestBody):
    """POST /scripts."""

    title: str = Field(min_length=1, max_length=255)
    content: str = Field(max_length=65_536)
    windows: bool = False


class ScriptUpdate(RequestBody):
    """PATCH /scripts/{id}: the live client sends null for what it leaves alone."""

    title: str | None = Field(default=None, min_length=1, max_length=255)
    content: str | None = Field(default=None, max_length=65_536)
    windows: bool | None = None


class NewGroup(RequestBody):
    """POST /groups."""

    notes: str = Field(default="", max_length=255)
    password: str | None = None


def key_json(key: SshKey) -> dict[str, Any]:
    """Return an SSH key record."""
    return {"id": key.id, "label": key.label, "key": key.key, "created_at": iso_micro(key.created)}


def script_json(script: CloudScript) -> dict[str, Any]:
    """Return a cloud script record."""
    return {
        "id": script.id,
        "user": script.user,
        "title": script.title,
        "content": script.content,
        "windows": script.windows,
        "public": False,
        "category": None,
    }


def group_json(group: Group) -> dict[str, Any]:
    """Return a group record."""
    return {"id": group.id, "name": group.name, "notes": group.notes, "enabled": group.enabled}


def _world(request: web.Request) -> World:
    return request.app[SIM].world


def _found(table: dict[int, Any], request: web.Request, what: str) -> Any:
    ident = id_arg(request, "id")
    if ident not in table:
        raise SimError(404, f"{what} {ident} not found")
    return table[ident]


async def list_keys(request: web.Request) -> web.Response:
    """Return the account's SSH keys."""
    keys = [key_json(k) for k in _world(request).ssh_keys.values()]
    return web.json_response({"status": "ok", "pubkeys": keys})


async def get_key(request: web.Request) -> web.Response:
    """Return one SSH key."""
    key = _found(_world(request).ssh_keys, request, "ssh key")
    return web.json_response({"status": "ok", "pubkey": key_json(key)})


async def create_key(request: web.Request) -> web.Response:
    """Add an SSH key; as recorded, the answer does not carry it."""
    world = _world(request)
    body = validated(NewKey, await json_body(request), "POST /ecs/v2/sshkeys")
    if any(k.label == body.label for k in world.ssh_keys.values()):
        raise SimError(409, f"an ssh key labelled {body.label!r} already exists")
    ident = world.next_account_id()
    world.ssh_keys[ident] = SshKey(ident, body.label, body.key, world.now)
    return web.json_response(OK)


async def delete_key(request: web.Request) -> web.Response:
    """Remove an SSH key."""
    world = _world(request)
    key = _found(world.ssh_keys, request, "ssh key")
    del world.ssh_keys[key.id]
    return web.json_response(OK)


async def list_scripts(request: web.Request) -> web.Response:
    """Return the account's cloud scripts."""
    scripts = [script_json(s) for s in _world(request).scripts.values()]
    return web.json_response({"status": "ok", "scripts": scripts})


async def get_script(request: web.Request) -> web.Response:
    """Return one cloud script."""
    script = _found(_world(request).scripts, request, "script")
    return web.json_response({"status": "ok", "script": script_json(script)})


async def create_script(request: web.Request) -> web.Response:
    """Add a cloud script."""
    world = _world(request)
    body = validated(NewScript, await json_body(request), "POST /ecs/v2/scripts")
    ident = world.next_account_id()
    script = CloudScript(ident, body.title, body.content, body.windows, world.username)
    world.scripts[ident] = script
    return web.json_response({"status": "ok", "script": script_json(script)})


async def update_script(request: web.Request) -> web.Response:
    """Change a cloud script's title, content or Windows flag (PATCH, as the live API)."""
    script = _found(_world(request).scripts, request, "script")
    body = validated(ScriptUpdate, await json_body(request), "PATCH /ecs/v2/scripts/{id}")
    if body.title is not None:
        script.title = body.title
    if body.content is not None:
        script.content = body.content
    if body.windows is not None:
        script.windows = body.windows
    return web.json_response({"status": "ok", "script": script_json(script)})


async def delete_script(request: web.Request) -> web.Response:
    """Remove a cloud script."""
    world = _world(request)
    script = _found(world.scripts, request, "script")
    del world.scripts[script.id]
    return web.json_response(OK)


async def list_groups(request: web.Request) -> web.Response:
    """Return the account's groups."""
    groups = [group_json(g) for g in _world(request).groups.values()]
    return web.json_response({"status": "ok", "groups": groups})


async def create_group(request: web.Request) -> web.Response:
    """Add a group, named as the API names them (eg1xxxxx)."""
    body = validated(NewGroup, await json_body(request), "POST /ecs/v2/groups")
    group = _world(request).add_group(body.notes)
    return web.json_response({"status": "ok", "group": group_json(group)})


async def delete_group(request: web.Request) -> web.Response:
    """Remove a group; its servers leave it."""
    world = _world(request)
    group = _found(world.groups, request, "group")
    del world.groups[group.id]
    for server in world.servers.values():
        if server.group == group.name:
            server.group = None
    return web.json_response(OK)


async def list_cloud_images(request: web.Request) -> web.Response:
    """Return the public cloud images."""
    images = []
    for image in CLOUD_IMAGES:
        record = image_json(image)
        record["cloud_image"] = True
        images.append(record)
    return web.json_response({"status": "ok", "images": images})


def add_routes(app: web.Application) -> None:
    """Register the account's paths."""
    r = app.router
    r.add_get(f"{ECS}/sshkeys", list_keys)
    r.add_post(f"{ECS}/sshkeys", create_key)
    r.add_get(f"{ECS}/sshkeys/{{id}}", get_key)
    r.add_delete(f"{ECS}/sshkeys/{{id}}", delete_key)
    r.add_get(f"{ECS}/scripts", list_scripts)
    r.add_post(f"{ECS}/scripts", create_script)
    r.add_get(f"{ECS}/scripts/{{id}}", get_script)
    r.add_patch(f"{ECS}/scripts/{{id}}", update_script)
    r.add_delete(f"{ECS}/scripts/{{id}}", delete_script)
    r.add_get(f"{ECS}/groups", list_groups)
    r.add_post(f"{ECS}/groups", create_group)
    r.add_delete(f"{ECS}/groups/{{id}}", delete_group)
    r.add_get(f"{ECS}/images/cloud-images", list_cloud_images)
