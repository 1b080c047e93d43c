"""Loading rule files: safe YAML, every problem with file, line and field, compiled results."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_fakes import ACTIONS, check_text, load_text

from daemon.errors import ConfigError
from daemon.models import Mode
from daemon.rules.compiled import GuardSpec, RunOptions
from daemon.rules.loader import Problem, RuleError, check_rules, load_rules, rule_file_schema
from daemon.rules.vocabulary import Vocabulary

GOOD = """\
rules:
  - name: page-failed
    description: Tell the on-call about failed actions.
    on: seeweb.action.failed
    match: {data.type: [power_off, rollback]}
    when: 'event.data.user != "ci-bot"'
    for: 2m
    throttle: {once_within: 30m, group_by: [resource, data.type]}
    mode: dry_run
    concurrency: single
    max_running: 1
    timeout: 5s
    do:
      - log: {message: failed, level: warning}
      - webhook:
          url: https://hooks.example.com/x
  - name: off
    enabled: false
    on: "seeweb.*"
    do: [{log: {message: hi}}]
"""


def test_a_good_file_compiles_every_field(tmp_path: Path) -> None:
    rules = load_text(tmp_path, GOOD)
    first, second = rules.rules
    assert first.name == "page-failed"
    assert first.description == "Tell the on-call about failed actions."
    assert first.on == "seeweb.action.failed"
    assert first.mode is Mode.DRY_RUN
    assert first.for_s == 120.0
    assert first.throttle is not None
    assert first.throttle.once_within_s == 1800.0
    assert first.throttle.group_by == ("resource", "data.type")
    assert first.run == RunOptions("single", 1, 5.0)
    assert [(step.action, dict(step.params)) for step in first.steps] == [
        ("log", {"message": "failed", "level": "warning"}),
        ("webhook", {"url": "https://hooks.example.com/x"}),
    ]
    assert first.when is not None and first.when.text == 'event.data.user != "ci-bot"'
    assert first.where == f"{tmp_path}/rules.yaml:2"
    assert second.enabled is False and second.run == RunOptions("queued", 10, 60.0)
    assert len(rules) == 1
    assert rules.files == (str(tmp_path / "rules.yaml"),)
    assert rules.guard is None


def test_yaml_1_2_scalars_keep_words_and_dates_as_text(tmp_path: Path) -> None:
    rules = load_text(
        tmp_path,
        "rules:\n"
        "  - name: r\n"
        "    on: seeweb.log\n"
        "    match: {data.a: yes, data.b: 2026-11-10, data.c: 010, data.d: 0x1f, data.e: 1.5,"
        " data.f: ~, data.g: on}\n"
        "    do: [{log: {message: NO}}]\n",
    )
    predicate = rules.rules[0].match
    assert predicate is not None
    from engine_fakes import make_event

    data: dict[str, Any] = {
        "a": "yes",
        "b": "2026-11-10",
        "c": 10,
        "d": 31,
        "e": 1.5,
        "f": None,
        "g": "on",
    }
    assert predicate(make_event(data=data))
    assert rules.rules[0].steps[0].params == {"message": "NO"}


def test_problems_name_file_line_and_field(tmp_path: Path) -> None:
    text = """\
rules:
  - name: ok
    on: seeweb.log
    do: [{log: {message: hi}}]
  - name: bad
    on: seeweb.log
    mode: loud
    throttle:
      once_within: soon
      group_by: [resource, nowhere]
    match:
      data.cpu: {gt: high}
    do:
      - log: {message: 5}
      - webhook:
          url: https://x
          header: {a: b}
      - email: {}
      - log: {message: a}
        webhook: {url: b}
    colour: red
"""
    assert check_text(tmp_path, text) == [
        "rules.yaml:7: rules[1].mode: must be 'enforce' or 'dry_run', got 'loud'",
        "rules.yaml:9: rules[1].throttle.once_within: not a duration: 'soon'"
        " (write e.g. 30s, 5m, 1h, 2d)",
        "rules.yaml:10: rules[1].throttle.group_by[1]: not a field of the event: 'nowhere'"
        " (write type, key, time, resource or data.<name>)",
        "rules.yaml:12: rules[1].match.data.cpu: gt must be a number, got 'high'",
        "rules.yaml:14: rules[1].do[0].log.message: must be a string, got 5",
        "rules.yaml:17: rules[1].do[1].webhook.header: unknown field",
        "rules.yaml:18: rules[1].do[2].email: unknown action 'email' (known: log, webhook)",
        "rules.yaml:19: rules[1].do[3]: must have exactly one key, the action's name"
        " (got log, webhook)",
        "rules.yaml:21: rules[1].colour: unknown field",
    ]


def test_a_missing_field_points_at_its_mapping(tmp_path: Path) -> None:
    text = "rules:\n  - name: r\n\n    do: [{log: {message: hi}}]\n"
    assert check_text(tmp_path, text) == ["rules.yaml:2: rules[0].on: required"]


def test_when_errors_point_into_the_expression(tmp_path: Path) -> None:
    text = """\
rules:
  - {name: a, on: seeweb.log, do: [{log: {message: m}}], when: event.data.x == nope}
  - {name: b, on: seeweb.log, do: [{log: {message: m}}], when: 'event.data.x == nope'}
  - {name: c, on: seeweb.log, do: [{log: {message: m}}], when: "event.data.x == nope"}
  - name: d
    on: seeweb.log
    do: [{log: {message: m}}]
    when: |
      event.data.x == 1 &&
        nope
  - name: e
    on: seeweb.log
    do: [{log: {message: m}}]
    when: >
      event.data.x == 1 &&
      nope
"""
    undeclared = "undeclared reference to 'nope' (in container '')"
    lines = text.splitlines()
    where = [(number, lines[number - 1].index("nope") + 1) for number in (2, 3, 4, 10, 16)]
    assert where == [(2, 80), (3, 81), (4, 81), (10, 9), (16, 7)]
    assert check_text(tmp_path, text) == [
        f"rules.yaml:{line}: rules[{index}].when: {undeclared} (column {column})"
        for index, (line, column) in enumerate(where)
    ]


def test_when_is_limited_to_4096_characters(tmp_path: Path) -> None:
    condition = " || ".join(['event.data.x == "a"'] * 250)
    assert len(condition) > 4096
    text = (
        f"rules:\n  - name: r\n    on: seeweb.log\n    when: '{condition}'\n"
        "    do: [{log: {message: m}}]\n"
    )
    assert check_text(tmp_path, text) == [
        "rules.yaml:4: rules[0].when: must have at most 4096 characters"
    ]


def test_names_must_be_unique_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "rules:\n  - {name: r, on: seeweb.log, do: [{log: {message: m}}]}\n"
    )
    (tmp_path / "b.yaml").write_text(
        "rules:\n  - {name: s, on: seeweb.log, do: [{log: {message: m}}]}\n"
        "  - {name: r, on: seeweb.log, do: [{log: {message: m}}]}\n"
    )
    problems = check_rules([tmp_path / "a.yaml", tmp_path / "b.yaml"], ACTIONS)
    assert [str(problem) for problem in problems] == [
        f"{tmp_path}/b.yaml:3: rules[1].name: duplicate rule name 'r'"
        f" (first at {tmp_path}/a.yaml:2)"
    ]


def test_only_one_guard_section_is_allowed(tmp_path: Path) -> None:
    guard = "rules: []\nguard:\n  risky: [power_off]\n"
    (tmp_path / "a.yaml").write_text(guard)
    (tmp_path / "b.yaml").write_text("# second\n" + guard)
    problems = check_rules([tmp_path], ACTIONS)
    assert [str(problem) for problem in problems] == [
        f"{tmp_path}/b.yaml:3: guard: only one guard section is allowed;"
        f" the first is at {tmp_path}/a.yaml:2"
    ]


def test_the_guard_is_validated_and_exposed(tmp_path: Path) -> None:
    rules = load_text(
        tmp_path,
        "rules: []\nguard:\n  risky: [set_cores, power_off]\n  snapshot_timeout: 10m\n",
    )
    assert rules.guard == GuardSpec(
        risky=("set_cores", "power_off"),
        snapshot_first=True,
        snapshot_timeout_s=600.0,
        keep_snapshots=3,
        file=str(tmp_path / "rules.yaml"),
    )
    assert check_text(
        tmp_path, "rules: []\nguard:\n  keep_snapshots: -1\n  snapshot_first: maybe\n"
    ) == [
        "rules.yaml:3: guard.keep_snapshots: must be greater than or equal to 1",
        "rules.yaml:4: guard.snapshot_first: must be true or false, got 'maybe'",
    ]


def test_folders_load_their_yaml_files_sorted_and_not_recursively(tmp_path: Path) -> None:
    for name in ("b.yml", "a.yaml", ".hidden.yaml", "notes.txt", "sub/c.yaml"):
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        rule = name.replace(".", "-").replace("/", "-").strip("-")
        path.write_text(
            f"rules:\n  - {{name: {rule}, on: seeweb.log, do: [{{log: {{message: m}}}}]}}\n"
        )
    rules = load_rules([tmp_path, tmp_path / "a.yaml"], ACTIONS)
    assert [rule.name for rule in rules.rules] == ["a-yaml", "b-yml"]
    assert rules.files == (str(tmp_path / "a.yaml"), str(tmp_path / "b.yml"))


def test_a_missing_path_is_a_problem(tmp_path: Path) -> None:
    problems = check_rules([tmp_path / "nope.yaml"], ACTIONS)
    assert [str(problem) for problem in problems] == [
        f"{tmp_path}/nope.yaml: file: no such file or folder"
    ]


def test_rule_error_lists_every_problem(tmp_path: Path) -> None:
    with pytest.raises(RuleError) as caught:
        load_text(tmp_path, "rules:\n  - name: 5\n    on: seeweb.log\n    do: []\n")
    error = caught.value
    assert isinstance(error, ConfigError)
    assert error.problems == [
        Problem(str(tmp_path / "rules.yaml"), 2, "rules[0].name", "must be a string, got 5"),
        Problem(str(tmp_path / "rules.yaml"), 4, "rules[0].do", "must not be empty"),
    ]
    assert str(error) == "\n".join(str(problem) for problem in error.problems)


def test_problem_text() -> None:
    assert str(Problem("r.yaml", 3, "rules[0].on", "required")) == "r.yaml:3: rules[0].on: required"
    assert str(Problem("r.yaml", None, "file", "too big")) == "r.yaml: file: too big"


def test_an_empty_rules_list_is_fine(tmp_path: Path) -> None:
    rules = load_text(tmp_path, "rules: []\n")
    assert rules.rules == () and len(rules) == 0


def test_schema_describes_rules_and_each_actions_params() -> None:
    schema = rule_file_schema(ACTIONS)
    json.dumps(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == ["rules"]
    assert set(schema["properties"]) == {"rules", "guard"}
    rule = schema["$defs"]["RuleModel"]
    assert {"name", "on", "match", "when", "for", "throttle", "do", "mode"} <= set(
        rule["properties"]
    )
    assert "autoscale" not in rule["properties"] and "budget" not in rule["properties"]
    steps = rule["properties"]["do"]["items"]["oneOf"]
    assert [list(step["properties"]) for step in steps] == [["log"], ["webhook"]]
    log = schema["$defs"]["LogParams"]
    assert log["required"] == ["message"]
    assert log["properties"]["level"]["enum"] == ["debug", "info", "warning", "error"]
    assert "url" in schema["$defs"]["WebhookParams"]["properties"]
    duration = rule["properties"]["timeout"]
    assert {"type": "string", "pattern": duration["anyOf"][0]["pattern"]} in duration["anyOf"]


def test_an_unreadable_rules_folder_is_a_problem_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "rules"
    folder.mkdir()

    def refuse(self: Path) -> Iterator[Path]:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "iterdir", refuse)
    problems = check_rules([folder], Vocabulary({}))
    assert [str(problem) for problem in problems] == [
        f"{folder}: file: cannot read the folder: Permission denied"
    ]
