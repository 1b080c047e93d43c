"""Evaluation: which rules meet an event, `for` and throttle windows, staleness, purity."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from engine_fakes import T0, RecordingObserver, load_text, make_event

from daemon.engine import Engine
from daemon.facts import Facts
from daemon.models import Decision, Event, Mode
from daemon.rules.compiled import RuleSet, RunOptions
from daemon.rules.memory import MemoryEntry, MemoryKind

FACTS = Facts()
HOUR = 3600.0


def engine_for(
    tmp_path: Path,
    rules: str,
    *,
    memory: tuple[MemoryEntry, ...] = (),
    observer: RecordingObserver | None = None,
) -> Engine:
    return Engine(
        load_text(tmp_path, "rules:\n" + rules),
        stale_after=HOUR,
        memory=memory,
        observer=observer,
    )


def at(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def run(engine: Engine, events: list[Event], now_s: float | None = None) -> list[Decision]:
    """Evaluate, commit the memory changes as the app would, and return the decisions."""
    now = T0 + at(now_s if now_s is not None else max(e.time - T0 for e in events).seconds)
    evaluation = engine.plan(events, FACTS, now)
    engine.apply(evaluation)
    return evaluation.decisions


def rules_of(decisions: list[Decision]) -> list[str]:
    return [decision.rule for decision in decisions]


ON_RULES = """\
  - {name: exact-failed, on: seeweb.action.failed, do: [{log: {message: a}}]}
  - {name: any-action, on: "seeweb.action.*", do: [{log: {message: b}}]}
  - {name: exact-log, on: seeweb.log, do: [{log: {message: c}}]}
  - {name: ended, on: "seeweb.action.[cf]*", do: [{log: {message: d}}]}
  - {name: off, on: "*", enabled: false, do: [{log: {message: e}}]}
"""


def test_an_event_meets_only_the_rules_for_its_type_in_load_order(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, ON_RULES)
    assert rules_of(run(engine, [make_event("seeweb.action.failed")])) == [
        "exact-failed",
        "any-action",
        "ended",
    ]
    assert rules_of(run(engine, [make_event("seeweb.action.started")])) == ["any-action"]
    assert rules_of(run(engine, [make_event("seeweb.action.completed")])) == [
        "any-action",
        "ended",
    ]
    assert rules_of(run(engine, [make_event("seeweb.log")])) == ["exact-log"]
    assert run(engine, [make_event("k8sgpu.pod.failed")]) == []


def test_a_decision_per_step_with_a_stable_key(tmp_path: Path) -> None:
    engine = engine_for(
        tmp_path,
        """\
  - name: page
    on: seeweb.action.failed
    mode: dry_run
    do:
      - log: {message: failed, level: error}
      - webhook: {url: "https://hooks.example.com/x"}
""",
    )
    event = make_event(key="seeweb.action:709:failed", at=10)
    now = T0 + at(20)
    decisions = engine.evaluate([event], FACTS, now)
    assert decisions == [
        Decision(
            key="page/0/seeweb.action:709:failed",
            rule="page",
            action="log",
            params={"message": "failed", "level": "error"},
            mode=Mode.DRY_RUN,
            event=event,
            time=now,
        ),
        Decision(
            key="page/1/seeweb.action:709:failed",
            rule="page",
            action="webhook",
            params={"url": "https://hooks.example.com/x"},
            mode=Mode.DRY_RUN,
            event=event,
            time=now,
        ),
    ]
    assert engine.evaluate([event], FACTS, now + at(5))[0].key == decisions[0].key


def test_match_and_when_must_both_hold(tmp_path: Path) -> None:
    engine = engine_for(
        tmp_path,
        """\
  - name: r
    on: seeweb.action.failed
    match: {data.type: [power_off, rollback]}
    when: 'event.data.user != "ci-bot"'
    do: [{log: {message: m}}]
""",
    )
    events = [
        make_event(key="1", data={"type": "power_off", "user": "alice"}),
        make_event(key="2", data={"type": "power_off", "user": "ci-bot"}),
        make_event(key="3", data={"type": "power_on", "user": "alice"}),
        make_event(key="4", data={"type": "rollback", "user": "bob"}),
    ]
    assert [d.event.key for d in run(engine, events) if d.event] == ["1", "4"]


THROTTLED = """\
  - name: r
    on: seeweb.action.failed
    throttle: {once_within: 30m, group_by: [resource, data.type]}
    do: [{log: {message: m}}]
"""


def test_throttle_decides_once_per_window_and_group(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, THROTTLED)

    def failed(seconds: float, resource: str = "ec1", kind: str = "power_off") -> Event:
        return make_event(
            at=seconds, resource=resource, key=f"{resource}:{seconds}", data={"type": kind}
        )

    assert len(run(engine, [failed(0)])) == 1
    assert run(engine, [failed(60)]) == []
    assert len(run(engine, [failed(60, resource="ec2")])) == 1
    assert len(run(engine, [failed(61, kind="rollback")])) == 1
    assert run(engine, [failed(1799)]) == []
    assert len(run(engine, [failed(1800)])) == 1
    assert {(entry.group, entry.since) for entry in engine.memory} == {
        ("ec1|power_off", T0 + at(1800)),
        ("ec2|power_off", T0 + at(60)),
        ("ec1|rollback", T0 + at(61)),
    }


def test_a_missing_group_value_groups_as_empty(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, THROTTLED)
    run(engine, [make_event(key="a", resource="ec1")])
    assert [entry.group for entry in engine.memory] == ["ec1|"]


def test_later_events_in_a_batch_see_earlier_memory(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, THROTTLED)
    events = [make_event(at=s, key=str(s), data={"type": "power_off"}) for s in (0, 10, 20)]
    evaluation = engine.plan(events, FACTS, T0 + at(30))
    assert [d.event.key for d in evaluation.decisions if d.event] == ["0"]
    assert evaluation.put == [MemoryEntry(MemoryKind.THROTTLE, "r", "ec200001|power_off", T0)]
    assert evaluation.drop == []


FOR_RULE = """\
  - name: hot
    on: seeweb.server.cpu
    match: {data.cpu_percent: {gt: 90}}
    for: 5m
    do: [{log: {message: hot}}]
"""


def cpu(seconds: float, percent: float, server: str = "ec1") -> Event:
    return make_event(
        "seeweb.server.cpu", at=seconds, resource=server, key=f"{server}:{seconds}",
        cpu_percent=percent,
    )  # fmt: skip


def test_for_decides_only_once_the_condition_has_held_long_enough(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, FOR_RULE)
    assert run(engine, [cpu(0, 95)]) == []
    assert engine.memory == [MemoryEntry(MemoryKind.FOR, "hot", "ec1", T0)]
    assert run(engine, [cpu(120, 97)]) == []
    assert run(engine, [cpu(299, 97), cpu(0, 99, server="ec2")]) == []
    decisions = run(engine, [cpu(300, 96)])
    assert [d.event.key for d in decisions if d.event] == ["ec1:300"]
    assert len(run(engine, [cpu(360, 96)])) == 1  # without a throttle, it keeps deciding


def test_a_broken_condition_closes_the_window(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, FOR_RULE)
    run(engine, [cpu(0, 95), cpu(0, 95, server="ec2")])
    evaluation = engine.plan([cpu(200, 50)], FACTS, T0 + at(200))
    assert evaluation.drop == [MemoryEntry(MemoryKind.FOR, "hot", "ec1", T0)]
    engine.apply(evaluation)
    assert engine.memory == [MemoryEntry(MemoryKind.FOR, "hot", "ec2", T0)]
    assert run(engine, [cpu(301, 95)]) == []
    assert len(run(engine, [cpu(601, 95)])) == 1


def test_a_window_opened_and_broken_in_one_batch_leaves_nothing(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, FOR_RULE)
    evaluation = engine.plan([cpu(0, 95), cpu(10, 20)], FACTS, T0 + at(10))
    assert (evaluation.put, evaluation.drop) == ([], [])


def test_for_and_throttle_together(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, FOR_RULE + "    throttle: {once_within: 1h}\n")
    results = [len(run(engine, [cpu(s, 95)])) for s in (0, 300, 400, 3000, 3900)]
    assert results == [0, 1, 0, 0, 1]


def test_stale_events_never_decide_and_are_counted_once(tmp_path: Path) -> None:
    observer = RecordingObserver()
    engine = engine_for(tmp_path, ON_RULES + FOR_RULE, observer=observer)
    old = make_event("seeweb.action.failed", at=0, key="old")
    unwatched = make_event("k8sgpu.billing.updated", at=0, key="unwatched")
    fresh = make_event("seeweb.action.failed", at=HOUR, key="fresh")
    evaluation = engine.plan([old, unwatched, fresh], FACTS, T0 + at(HOUR + 1))
    assert {d.event.key for d in evaluation.decisions if d.event} == {"fresh"}
    assert [call for call in observer.calls if call[0] == "stale"] == [("stale", "old")]
    stale_cpu = engine.plan([cpu(0, 99)], FACTS, T0 + at(2 * HOUR))
    assert (stale_cpu.decisions, stale_cpu.put) == ([], [])


def test_plan_is_pure_and_apply_commits(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, THROTTLED)
    events = [make_event(at=5, data={"type": "power_off"})]
    now = T0 + at(10)
    first = engine.plan(events, FACTS, now)
    second = engine.plan(events, FACTS, now)
    assert first == second
    assert len(first.decisions) == 1
    assert engine.memory == []
    engine.apply(first)
    assert engine.plan(events, FACTS, now).decisions == []


def test_memory_from_the_store_is_honoured(tmp_path: Path) -> None:
    remembered = MemoryEntry(MemoryKind.THROTTLE, "r", "ec200001|power_off", T0)
    orphan = MemoryEntry(MemoryKind.THROTTLE, "gone", "ec1", T0)
    engine = engine_for(tmp_path, THROTTLED, memory=(remembered, orphan))
    assert engine.memory == [remembered]
    assert run(engine, [make_event(at=60, data={"type": "power_off"})]) == []


def test_replace_rules_keeps_memory_of_rules_that_remain(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, THROTTLED + FOR_RULE)
    run(engine, [make_event(at=0, data={"type": "power_off"}), cpu(0, 99)])
    assert {entry.rule for entry in engine.memory} == {"r", "hot"}
    kept = load_text(tmp_path, "rules:\n" + THROTTLED.replace("30m", "1h"))
    engine.replace_rules(kept)
    assert engine.rules is kept
    assert [entry.rule for entry in engine.memory] == ["r"]
    assert run(engine, [make_event(at=2000, data={"type": "power_off"})]) == []
    assert run(engine, [cpu(400, 99)]) == []


def test_run_options_by_rule_name(tmp_path: Path) -> None:
    engine = engine_for(
        tmp_path,
        """\
  - name: r
    on: seeweb.log
    concurrency: parallel
    max_running: 3
    timeout: 2m
    do: [{log: {message: m}}]
""",
    )
    assert engine.run_options("r") == RunOptions("parallel", 3, 120.0)
    assert engine.run_options("unknown") == RunOptions("queued", 10, 60.0)


def test_the_observer_hears_matches_decisions_and_errors(tmp_path: Path) -> None:
    observer = RecordingObserver()
    engine = engine_for(
        tmp_path,
        """\
  - name: actor
    on: seeweb.log
    when: 'event.data.actor == "root"'
    do: [{log: {message: m}}, {log: {message: n}}]
  - name: dry
    on: seeweb.log
    mode: dry_run
    do: [{log: {message: m}}]
""",
        observer=observer,
    )
    run(engine, [make_event("seeweb.log", key="a", actor="root")])
    run(engine, [make_event("seeweb.log", key="b", user="bob")])
    assert observer.calls == [
        ("matched", "actor"),
        ("decided", "actor", "enforce"),
        ("decided", "actor", "enforce"),
        ("matched", "dry"),
        ("decided", "dry", "dry_run"),
        ("error", "actor", "b", 'NOT_FOUND: Key not found in map : "actor"'),
        ("matched", "dry"),
        ("decided", "dry", "dry_run"),
    ]


def test_an_empty_rule_set_decides_nothing() -> None:
    engine = Engine(RuleSet(), stale_after=HOUR)
    assert engine.evaluate([make_event()], FACTS, T0) == []
    assert len(engine.rules) == 0
