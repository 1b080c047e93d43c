"""Golden rule files: every valid file loads, every invalid one gives exactly its .error text.

An invalid file `NAME.yaml` sits next to `NAME.error`, the output `cloudpilot check` must print
for it (one problem per line), with the file named as given: checks run inside `invalid/`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import Field

from daemon.actions.base import ActionParams
from daemon.durations import Seconds
from daemon.engine import RuleError, check_rules, load_rules

HERE = Path(__file__).parent
VALID = sorted((HERE / "valid").glob("*.yaml"))
INVALID = sorted((HERE / "invalid").glob("*.yaml"))
EXAMPLES = sorted((HERE.parent.parent / "rules").glob("*.yaml"))


class LogParams(ActionParams):
    message: str
    level: Literal["debug", "info", "warning", "error"] = "info"


class WebhookParams(ActionParams):
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Seconds = 10.0


ACTIONS: Mapping[str, type[ActionParams]] = {"log": LogParams, "webhook": WebhookParams}


def problem_lines(paths: list[Path]) -> str:
    return "\n".join(str(problem) for problem in check_rules(paths, ACTIONS))


@pytest.mark.parametrize("path", VALID, ids=[path.name for path in VALID])
def test_valid_file_loads(path: Path) -> None:
    assert problem_lines([path]) == ""
    assert len(load_rules([path], ACTIONS).rules) >= 0


def test_valid_files_load_together() -> None:
    rules = load_rules([HERE / "valid"], ACTIONS)
    assert rules.files == tuple(str(path) for path in VALID)
    assert rules.guard is not None
    assert len(rules) == sum(1 for rule in rules.rules if rule.enabled) > 0


@pytest.mark.parametrize("path", INVALID, ids=[path.name for path in INVALID])
def test_invalid_file_gives_its_error_text(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(path.parent)
    expected = path.with_suffix(".error").read_text(encoding="utf-8").rstrip("\n")
    text = problem_lines([Path(path.name)])
    assert text == expected
    assert "Traceback" not in text
    with pytest.raises(RuleError) as caught:
        load_rules([Path(path.name)], ACTIONS)
    assert str(caught.value) == expected


def test_every_invalid_file_has_its_error_text_and_back() -> None:
    errors = sorted((HERE / "invalid").glob("*.error"))
    assert [path.stem for path in errors] == [path.stem for path in INVALID]


def test_a_file_over_1_mib_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    line = "# " + "x" * 1022 + "\n"
    Path("huge.yaml").write_text("rules: []\n" + line * 1024)
    size = Path("huge.yaml").stat().st_size
    assert problem_lines([Path("huge.yaml")]) == (
        f"huge.yaml: file: file is larger than 1 MiB ({size} bytes)"
    )
    Path("fits.yaml").write_text("rules: []\n" + "#" * (1024 * 1024 - 11) + "\n")
    assert Path("fits.yaml").stat().st_size == 1024 * 1024
    assert problem_lines([Path("fits.yaml")]) == ""


def test_duplicate_names_across_files_name_the_other_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("a.yaml").write_text("rules:\n  - {name: page, on: x, do: [{log: {message: m}}]}\n")
    Path("b.yaml").write_text("\nrules:\n  - {name: page, on: y, do: [{log: {message: m}}]}\n")
    assert problem_lines([Path("a.yaml"), Path("b.yaml")]) == (
        "b.yaml:3: rules[0].name: duplicate rule name 'page' (first at a.yaml:2)"
    )


def test_two_guard_sections_name_the_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("rules").mkdir()
    Path("rules/a.yaml").write_text("rules: []\nguard: {risky: [power_off]}\n")
    Path("rules/b.yaml").write_text("rules: []\n\nguard:\n  risky: [set_cores]\n")
    assert problem_lines([Path("rules")]) == (
        "rules/b.yaml:3: guard: only one guard section is allowed; the first is at rules/a.yaml:2"
    )


def test_problems_from_every_file_are_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(HERE / "invalid")
    names = [Path("empty.yaml"), Path("wrong-types.yaml"), Path("alias-bomb.yaml")]
    expected = "\n".join(
        path.with_suffix(".error").read_text(encoding="utf-8").rstrip("\n") for path in names
    )
    assert problem_lines(names) == expected


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_rule_files_pass_check_with_the_real_actions(path: Path) -> None:
    from daemon.actions.log import LogAction
    from daemon.actions.webhook import WebhookAction

    actions = {action.name: action.params_model for action in (LogAction, WebhookAction)}
    assert [str(problem) for problem in check_rules([path], actions)] == []


def test_the_examples_load_together() -> None:
    assert len(EXAMPLES) >= 3
    from daemon.actions.log import LogAction
    from daemon.actions.webhook import WebhookAction

    actions = {action.name: action.params_model for action in (LogAction, WebhookAction)}
    rules = load_rules(EXAMPLES, actions)
    assert rules.guard is not None
    assert {step.action for rule in rules.rules for step in rule.steps} <= {"log", "webhook"}


def test_the_examples_do_what_their_comments_say() -> None:
    from daemon.actions.log import LogAction
    from daemon.actions.webhook import WebhookAction
    from daemon.engine import Engine
    from daemon.facts import Facts
    from daemon.models import Event

    actions = {action.name: action.params_model for action in (LogAction, WebhookAction)}
    engine = Engine(load_rules(EXAMPLES, actions), stale_after=3600)
    now = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)

    def event(kind: str, key: str, resource: str, /, **data: Any) -> Event:
        return Event(kind, key, now, resource, data)

    events = [
        event("seeweb.action.failed", "a:1", "ec1", type="power_off", user="alice"),
        event("seeweb.action.failed", "a:2", "ec1", type="power_off", user="ci-bot"),
        event("seeweb.action.stuck", "a:3", "ec2", type="rollback", user="bob"),
        event("seeweb.log", "l:1", "foo", actor="foo", action="Login", status="failure"),
        event("seeweb.log", "l:2", "ec1", actor="bob", action="DeleteServer", severity=None),
        event("seeweb.log", "l:3", "ec1", actor="bob", action=None, severity="error"),
        event("k8sgpu.pod.failed", "p:1", "u1", cluster="skg1", name="train", status="failed"),
    ]
    decided = [(d.key, d.mode.value) for d in engine.evaluate(events, Facts(), now)]
    assert decided == [
        ("failed-actions/0/a:1", "enforce"),
        ("failed-actions/1/a:1", "enforce"),
        ("destructive-actions-by-people/0/a:1", "enforce"),
        ("stuck-actions/0/a:3", "enforce"),
        ("failed-logins/0/l:1", "enforce"),
        ("deletes-outside-cloudpilot/0/l:2", "dry_run"),
        ("audit-warnings/0/l:3", "enforce"),
        ("gpu-pod-failed/0/p:1", "enforce"),
    ]
