"""The JSON Schema `cloudpilot schema` prints, as an editor uses it: every shipped and documented
rule passes, a mistake is reported against the right rule kind, and event types are listed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from daemon.registry import vocabulary
from daemon.rules.loader import SCHEMA_ID, parse_yaml, rule_file_schema

REPO = Path(__file__).resolve().parents[3]
SHIPPED = sorted((REPO / "rules").glob("*.yaml"))
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


SCHEMA = rule_file_schema(vocabulary())


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    Draft202012Validator.check_schema(SCHEMA)
    return Draft202012Validator(SCHEMA)


def documented_rule_files() -> list[tuple[str, Any]]:
    """Return every YAML example in the docs that is a whole rule file (not an excerpt)."""
    found = []
    for path in DOCUMENTS:
        text = path.read_text()
        for block in re.finditer(r"```yaml\n(.*?)```", text, re.S):
            if "…" in block.group(1):
                continue  # an excerpt, elided on purpose
            try:
                data = parse_yaml(block.group(1))
            except yaml.YAMLError:
                continue  # a list of alternatives (`when:` five times), not a file
            if isinstance(data, dict) and "rules" in data:
                line = text.count("\n", 0, block.start()) + 1
                found.append((f"{path.relative_to(REPO)}:{line}", data))
    return found


def messages(validator: Draft202012Validator, data: Any) -> list[str]:
    return sorted(
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(data)
    )


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_rule_file_is_valid(validator: Draft202012Validator, path: Path) -> None:
    assert messages(validator, parse_yaml(path.read_text())) == []


def test_every_documented_rule_file_is_valid(validator: Draft202012Validator) -> None:
    documented = documented_rule_files()
    assert len(documented) >= 10  # the README and the docs are full of them
    assert {where: messages(validator, data) for where, data in documented} == {
        where: [] for where, _ in documented
    }


def test_the_schema_has_an_id() -> None:
    assert SCHEMA["$id"] == SCHEMA_ID == "urn:cloudpilot:schema:rule-file:1"


def test_a_mistake_is_reported_against_its_own_rule_kind(
    validator: Draft202012Validator,
) -> None:
    broken = {
        "rules": [
            {"name": "scale", "autoscale": {"provider": "glesys", "max_cores": "many"}},
            {"name": "cap", "budget": {"scope": {"account": True}}},
            {"name": "page", "on": "seeweb.action.failed", "do": [], "colour": "blue"},
        ]
    }
    # Each names its own kind's fields only: no "'on' is a required property" for the
    # autoscale rule, no autoscale fields for the event rule.
    assert messages(validator, broken) == [
        "rules/0/autoscale/max_cores: 'many' is not of type 'integer'",
        "rules/0/autoscale: 'down' is a required property",
        "rules/0/autoscale: 'up' is a required property",
        "rules/1/budget: 'cap' is a required property",
        "rules/2/do: [] should be non-empty",
        "rules/2: Additional properties are not allowed ('colour' was unexpected)",
    ]


@pytest.mark.parametrize(
    ("on", "valid"),
    [
        ("seeweb.action.failed", True),
        ("k8sgpu.event.started", True),
        ("seeweb.action.*", True),
        ("seeweb.action.faild", False),
        ("seeweb.logs", False),
    ],
)
def test_event_types_are_listed(validator: Draft202012Validator, on: str, valid: bool) -> None:
    rule = {"name": "r", "on": on, "do": [{"log": {"message": "m"}}]}
    assert (messages(validator, {"rules": [rule]}) == []) is valid
    listed = SCHEMA["$defs"]["RuleModel"]["properties"]["on"]["anyOf"][0]["enum"]
    assert "seeweb.action.failed" in listed and "seeweb.logs" not in listed


@pytest.mark.parametrize("resolve_on", ["seeweb.action.completed", ["seeweb.action.completed"]])
def test_resolve_on_is_a_type_or_a_list(
    validator: Draft202012Validator, resolve_on: str | list[str]
) -> None:
    alert = {"summary": "s", "to": ["oncall"], "resolve": {"on": resolve_on}}
    rule = {"name": "r", "on": "seeweb.action.failed", "do": [{"alert": alert}]}
    assert messages(validator, {"rules": [rule]}) == []


def test_each_server_action_and_autoscale_name_the_providers_that_offer_them(
    validator: Draft202012Validator,
) -> None:
    def problems(rule: dict[str, Any]) -> list[str]:
        return [error.message for error in validator.iter_errors({"rules": [rule]})]

    def step(action: str, provider: str) -> dict[str, Any]:
        params: dict[str, Any] = {"provider": provider, "snapshot": "none"}
        if action == "set_cores":
            params["cores"] = 2
        return {"name": "r", "on": "seeweb.action.failed", "do": [{action: params}]}

    assert problems(step("power_off", "seeweb")) == []
    assert problems(step("set_cores", "glesys")) == []
    # Glesys has no power actions here, and Seeweb cannot change cores in place.
    assert problems(step("power_off", "glesys"))
    assert problems(step("set_cores", "seeweb"))
    definitions = SCHEMA["$defs"]
    assert definitions["PowerOffParams"]["properties"]["provider"]["enum"] == ["seeweb"]
    assert definitions["SetCoresParams"]["properties"]["provider"]["enum"] == ["glesys"]
    autoscale = next(d for d in definitions.values() if d.get("title") == "Autoscale")
    assert autoscale["properties"]["provider"]["enum"] == ["seeweb", "glesys"]
