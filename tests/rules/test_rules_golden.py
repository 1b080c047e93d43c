"""Golden rule files: every valid file loads, every invalid one gives exactly its .error text.

An invalid file `NAME.yaml` sits next to `NAME.error`, the output `cloudpilot check` must print
for it (one problem per line), with the file named as given: checks run inside `invalid/`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import Field

from daemon.durations import Seconds
from daemon.notify.alerts import unknown_routes
from daemon.registry import BUILTIN, vocabulary
from daemon.rules.action import ActionParams
from daemon.rules.loader import RuleError, check_rules, load_rules
from daemon.rules.vocabulary import Vocabulary

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


# The shipped providers, and only the two actions these rules use.
ACTIONS = Vocabulary({"log": LogParams, "webhook": WebhookParams}, BUILTIN.traits)


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
    Path("a.yaml").write_text(
        "rules:\n  - {name: page, on: seeweb.log, do: [{log: {message: m}}]}\n"
    )
    Path("b.yaml").write_text(
        "\nrules:\n  - {name: page, on: seeweb.log, do: [{log: {message: m}}]}\n"
    )
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
    assert [str(problem) for problem in check_rules([path], vocabulary())] == []


def test_the_examples_load_together_and_alert_to_the_documented_routes() -> None:
    assert len(EXAMPLES) >= 3
    rules = load_rules(EXAMPLES, vocabulary())
    assert rules.guard is not None
    assert {step.action for rule in rules.rules for step in rule.steps} <= {"alert", "log"}
    # deploy/cloudpilot.toml configures these two routes; the shipped rules use no others.
    assert unknown_routes(rules, ["oncall", "security"]) == []


def test_the_examples_do_what_their_comments_say() -> None:
    from daemon.engine import Engine
    from daemon.facts import Facts
    from daemon.models import Event

    engine = Engine(load_rules(EXAMPLES, vocabulary()), stale_after=3600)
    now = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)

    def event(kind: str, key: str, resource: str, /, **data: Any) -> Event:
        return Event(kind, key, now, resource, data)

    login = {"action": "Login", "status": "success", "ip_address": "198.51.100.7"}
    pod = {"cluster": "skg1", "name": "infer", "status": "terminated", "failed": False}
    events = [
        event("seeweb.action.failed", "a:1", "ec1", type="power_off", user="alice"),
        event("seeweb.action.failed", "a:2", "ec1", type="power_off", user="ci-bot"),
        event("seeweb.action.stuck", "a:3", "ec2", id=3, type="rollback", user="bob"),
        event("seeweb.log", "l:1", "foo", actor="foo", action="Login", status="failure"),
        event("seeweb.log", "l:2", "ec1", actor="bob", action="DeleteServer", severity=None),
        event("seeweb.log", "l:3", "", actor="alice", **login),
        event("seeweb.log", "l:4", "", actor="alice", **login),  # the same address: not new
        event("seeweb.log", "l:5", "ci", actor="alice", action="Create API Token", target="ci"),
        event("k8sgpu.pod.failed", "p:1", "u1", cluster="skg1", name="train", status="failed"),
        event("k8sgpu.pod.terminated", "p:2", "u2", in_deletion=False, **pod),
        event("k8sgpu.pod.terminated", "p:3", "u3", in_deletion=True, **pod),
        event("cloudpilot.gap", "g:1", "actions", source="actions", after_id=1, before_id=9),
    ]
    decided = [(d.key, d.mode.value) for d in engine.evaluate(events, Facts(), now)]
    assert decided == [
        ("failed-actions/0/a:1", "enforce"),
        ("destructive-actions-by-people/0/a:1", "enforce"),
        ("stuck-actions/0/a:3", "enforce"),
        ("failed-logins/0/l:1", "enforce"),
        ("deletes-outside-cloudpilot/0/l:2", "dry_run"),
        ("login-from-new-ip/0/l:3", "enforce"),
        ("api-token-changes/0/l:5", "enforce"),
        ("gpu-pod-failed/0/p:1", "enforce"),
        ("gpu-pod-terminated/0/p:2", "enforce"),
        ("polling-gaps/0/g:1", "enforce"),
    ]
