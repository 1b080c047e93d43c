"""`first_seen`: go on only for values not seen lately; every sighting, stale or not, teaches."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from engine_fakes import ACTIONS, T0, RecordingObserver, load_text, make_event

from daemon.engine import Engine, Evaluation
from daemon.facts import Facts
from daemon.models import Decision, Event
from daemon.rules.loader import rule_file_schema
from daemon.rules.memory import MemoryEntry, MemoryKind

FACTS = Facts()
HOUR = 3600.0
DAY = 24 * HOUR

NEW_IP = """\
  - name: new-ip
    on: seeweb.log
    match: {data.action: Login}
    first_seen: {by: [data.actor, data.ip_address], within: 30d}
    do: [{log: {message: a login from a new address}}]
"""


def engine_for(
    tmp_path: Path,
    rules: str,
    *,
    memory: tuple[MemoryEntry, ...] = (),
    observer: RecordingObserver | None = None,
) -> Engine:
    return Engine(
        load_text(tmp_path, "rules:\n" + rules), stale_after=HOUR, memory=memory, observer=observer
    )


def login(
    seconds: float, actor: str = "alice", ip: str = "10.0.0.1", action: str = "Login"
) -> Event:
    return make_event(
        "seeweb.log",
        at=seconds,
        key=f"log:{actor}:{ip}:{seconds}",
        resource="",
        actor=actor,
        ip_address=ip,
        action=action,
    )


def run(engine: Engine, events: list[Event], now_s: float | None = None) -> list[Decision]:
    """Evaluate at `now_s` (default: the latest event's time), commit, return the decisions."""
    latest = max(event.time for event in events)
    now = T0 + timedelta(seconds=now_s) if now_s is not None else latest
    evaluation = engine.plan(events, FACTS, now)
    engine.apply(evaluation)
    return evaluation.decisions


def keys(decisions: list[Decision]) -> list[str]:
    return [decision.event.key for decision in decisions if decision.event is not None]


def seen(engine: Engine) -> dict[str, float]:
    """Return the `seen` memory as {values: seconds after T0}."""
    return {
        entry.group: (entry.since - T0).total_seconds()
        for entry in engine.memory
        if entry.kind == MemoryKind.SEEN
    }


def test_the_loader_compiles_first_seen(tmp_path: Path) -> None:
    rule = load_text(tmp_path, "rules:\n" + NEW_IP).rules[0]
    assert rule.first_seen is not None
    assert (rule.first_seen.within_s, rule.first_seen.by) == (
        30 * DAY,
        ("data.actor", "data.ip_address"),
    )
    assert rule.first_seen.group(login(0)) == "alice|10.0.0.1"
    plain = load_text(
        tmp_path, "rules:\n  - {name: r, on: seeweb.log, do: [{log: {message: m}}]}\n"
    )
    assert plain.rules[0].first_seen is None


def test_the_schema_describes_first_seen() -> None:
    schema = rule_file_schema(ACTIONS)
    rule = schema["$defs"]["RuleModel"]
    assert "first_seen" in rule["properties"]
    first_seen = schema["$defs"]["FirstSeenModel"]
    assert first_seen["additionalProperties"] is False
    assert sorted(first_seen["required"]) == ["by", "within"]
    assert first_seen["properties"]["by"]["minItems"] == 1


def test_new_values_decide_and_a_repeat_within_the_window_does_not(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, NEW_IP)
    assert keys(run(engine, [login(0)])) == ["log:alice:10.0.0.1:0"]
    assert run(engine, [login(HOUR)]) == []
    assert len(run(engine, [login(2 * HOUR, ip="10.0.0.2")])) == 1
    assert len(run(engine, [login(2 * HOUR, actor="bob")])) == 1
    assert run(engine, [login(3 * HOUR, action="Logout", ip="10.9.9.9")]) == [], "match first"
    assert seen(engine) == {
        "alice|10.0.0.1": HOUR,
        "alice|10.0.0.2": 2 * HOUR,
        "bob|10.0.0.1": 2 * HOUR,
    }


def test_values_decide_again_once_the_window_has_passed(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, NEW_IP)
    assert len(run(engine, [login(0)])) == 1
    assert run(engine, [login(30 * DAY - 1)]) == []
    assert len(run(engine, [login(60 * DAY - 1)])) == 1, "exactly `within` after the last sighting"
    assert seen(engine) == {"alice|10.0.0.1": 60 * DAY - 1}


def test_every_sighting_refreshes_so_a_value_seen_every_20_days_never_decides_again(
    tmp_path: Path,
) -> None:
    engine = engine_for(tmp_path, NEW_IP)
    decided = [len(run(engine, [login(n * 20 * DAY)])) for n in range(10)]
    assert decided == [1] + [0] * 9
    assert seen(engine) == {"alice|10.0.0.1": 9 * 20 * DAY}


def test_repeats_in_one_batch_see_the_first(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, NEW_IP)
    evaluation = engine.plan([login(0), login(10), login(20, ip="10.0.0.2")], FACTS, T0)
    assert keys(evaluation.decisions) == ["log:alice:10.0.0.1:0", "log:alice:10.0.0.2:20"]
    assert evaluation.put == [
        MemoryEntry(MemoryKind.SEEN, "new-ip", "alice|10.0.0.1", T0 + timedelta(seconds=10)),
        MemoryEntry(MemoryKind.SEEN, "new-ip", "alice|10.0.0.2", T0 + timedelta(seconds=20)),
    ]
    assert evaluation.drop == []


def test_an_older_event_does_not_move_the_memory_back(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, NEW_IP)
    run(engine, [login(DAY)])
    assert run(engine, [login(DAY - 60)], now_s=DAY) == []
    assert seen(engine) == {"alice|10.0.0.1": DAY}


def test_missing_values_count_as_empty(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, NEW_IP)
    event = make_event("seeweb.log", key="no-ip", resource="", actor="alice", action="Login")
    assert len(run(engine, [event])) == 1
    assert list(seen(engine)) == ["alice|"]


def test_memory_changes_only_when_applied(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, NEW_IP)
    first = engine.plan([login(0)], FACTS, T0)
    assert engine.plan([login(0)], FACTS, T0) == first
    assert len(first.decisions) == 1
    assert first.put == [MemoryEntry(MemoryKind.SEEN, "new-ip", "alice|10.0.0.1", T0)]
    assert engine.memory == []
    assert len(engine.plan([login(60)], FACTS, T0 + timedelta(seconds=60)).decisions) == 1
    engine.apply(first)
    assert engine.memory == first.put
    assert engine.plan([login(60)], FACTS, T0 + timedelta(seconds=60)).decisions == []


def test_remembered_values_from_the_store_are_honoured(tmp_path: Path) -> None:
    remembered = MemoryEntry(MemoryKind.SEEN, "new-ip", "alice|10.0.0.1", T0)
    engine = engine_for(tmp_path, NEW_IP, memory=(remembered,))
    assert run(engine, [login(29 * DAY)]) == []


def test_stale_events_teach_but_never_decide(tmp_path: Path) -> None:
    observer = RecordingObserver()
    engine = engine_for(tmp_path, NEW_IP, observer=observer)
    now_s = 10 * DAY
    evaluation = engine.plan(
        [login(0), login(DAY, ip="10.0.0.2"), login(DAY, actor="bob", action="Logout")],
        FACTS,
        T0 + timedelta(seconds=now_s),
    )
    assert evaluation.decisions == []
    assert evaluation.put == [
        MemoryEntry(MemoryKind.SEEN, "new-ip", "alice|10.0.0.1", T0),
        MemoryEntry(MemoryKind.SEEN, "new-ip", "alice|10.0.0.2", T0 + timedelta(seconds=DAY)),
    ]
    assert [call[0] for call in observer.calls] == ["stale"] * 3
    engine.apply(evaluation)
    # After the outage, the addresses already in use are not new; a new one is.
    fresh = [login(now_s - 60), login(now_s - 30, ip="10.0.0.2"), login(now_s, ip="10.0.0.3")]
    assert keys(run(engine, fresh)) == [f"log:alice:10.0.0.3:{now_s}"]


def test_a_stale_event_refreshes_a_value_it_decided_on(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, NEW_IP)
    assert len(run(engine, [login(0)])) == 1
    # Seen again at day 20, but the poll comes late: stale, so it only refreshes.
    assert run(engine, [login(20 * DAY)], now_s=20 * DAY + 2 * HOUR) == []
    assert run(engine, [login(40 * DAY)]) == [], "30 days after day 20 have not passed"


def test_stale_events_teach_only_through_match_and_when(tmp_path: Path) -> None:
    observer = RecordingObserver()
    rules = NEW_IP + "    when: 'event.data.actor != \"ci-bot\"'\n"
    engine = engine_for(tmp_path, rules, observer=observer)
    broken = make_event("seeweb.log", key="no-actor", resource="", action="Login")
    evaluation = engine.plan([login(0, actor="ci-bot"), broken], FACTS, T0 + timedelta(days=1))
    assert (evaluation.decisions, evaluation.put) == ([], [])
    assert [call[0] for call in observer.calls] == ["stale", "stale", "error"]


def test_stale_events_teach_nothing_to_rules_without_first_seen(tmp_path: Path) -> None:
    throttled = """\
  - name: throttled
    on: seeweb.log
    throttle: {once_within: 1h}
    do: [{log: {message: m}}]
"""
    engine = engine_for(tmp_path, throttled + NEW_IP)
    evaluation = engine.plan([login(0)], FACTS, T0 + timedelta(days=1))
    assert evaluation.decisions == []
    assert [entry.kind for entry in evaluation.put] == [MemoryKind.SEEN]
    only_throttled = engine_for(tmp_path, throttled)
    assert only_throttled.plan([login(0)], FACTS, T0 + timedelta(days=1)).put == []


def test_first_seen_comes_before_the_throttle(tmp_path: Path) -> None:
    rules = NEW_IP + "    throttle: {once_within: 1h, group_by: [data.actor]}\n"
    engine = engine_for(tmp_path, rules)
    assert len(run(engine, [login(0)])) == 1
    assert run(engine, [login(600, ip="10.0.0.2")]) == [], "new, but the actor's throttle holds"
    assert run(engine, [login(2 * HOUR)]) == [], "the throttle is over, but the address is known"
    assert len(run(engine, [login(2 * HOUR, ip="10.0.0.3")])) == 1
    assert run(engine, [login(3 * HOUR, ip="10.0.0.2")]) == [], "suppressed earlier, still seen"
    throttles = {
        entry.group: (entry.since - T0).total_seconds()
        for entry in engine.memory
        if entry.kind == MemoryKind.THROTTLE
    }
    assert throttles == {"alice": 2 * HOUR}, "only decisions start a throttle window"
    assert set(seen(engine)) == {"alice|10.0.0.1", "alice|10.0.0.2", "alice|10.0.0.3"}


def test_a_known_value_is_matched_but_not_decided(tmp_path: Path) -> None:
    observer = RecordingObserver()
    engine = engine_for(tmp_path, NEW_IP, observer=observer)
    run(engine, [login(0)])
    run(engine, [login(60)])
    assert observer.calls == [
        ("matched", "new-ip"),
        ("decided", "new-ip", "enforce"),
        ("matched", "new-ip"),
    ]


# --- expired -------------------------------------------------------------------------------------

EXPIRING = (
    NEW_IP
    + """\
  - name: throttled
    on: seeweb.log
    throttle: {once_within: 1h}
    do: [{log: {message: m}}]
  - name: hot
    on: seeweb.server.cpu
    for: 5m
    do: [{log: {message: m}}]
"""
)


def entry(kind: MemoryKind, rule: str, group: str, seconds: float) -> MemoryEntry:
    return MemoryEntry(kind, rule, group, T0 + timedelta(seconds=seconds))


def test_expired_lists_windows_that_ended_a_staleness_limit_ago(tmp_path: Path) -> None:
    seen_old = entry(MemoryKind.SEEN, "new-ip", "alice|10.0.0.1", 0)
    seen_new = entry(MemoryKind.SEEN, "new-ip", "alice|10.0.0.2", 1)
    throttle_old = entry(MemoryKind.THROTTLE, "throttled", "a", 30 * DAY - HOUR)
    throttle_new = entry(MemoryKind.THROTTLE, "throttled", "b", 30 * DAY - HOUR + 1)
    window = entry(MemoryKind.FOR, "hot", "ec1", 0)
    memory = (seen_old, seen_new, throttle_old, throttle_new, window)
    engine = engine_for(tmp_path, EXPIRING, memory=memory)
    now = T0 + timedelta(days=30, hours=1)  # 30d + 1h after the first sighting: gone by a hair
    assert engine.expired(now) == [seen_old, throttle_old]
    assert engine.expired(now - timedelta(seconds=1)) == []
    later = now + timedelta(days=365)
    assert engine.expired(later) == [seen_old, seen_new, throttle_old, throttle_new]


def test_dropping_expired_memory_changes_no_decision(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, NEW_IP)
    run(engine, [login(0)])
    now = T0 + timedelta(days=30, hours=1)
    expired = engine.expired(now)
    assert len(expired) == 1
    engine.apply(Evaluation([], [], expired))
    assert engine.memory == []
    # The earliest event that can still decide is exactly `within` after the sighting: new anyway.
    assert len(engine.plan([login(30 * DAY)], FACTS, now).decisions) == 1


def test_expired_lists_the_memory_of_rules_that_are_gone(tmp_path: Path) -> None:
    orphan = entry(MemoryKind.COOLDOWN, "gone", "ec1", 0)
    engine = engine_for(tmp_path, EXPIRING, memory=(orphan,))
    run(engine, [login(0), make_event("seeweb.server.cpu", at=0, key="cpu", resource="ec1")])
    assert engine.expired(T0) == [orphan]
    engine.replace_rules(load_text(tmp_path, "rules:\n" + NEW_IP))
    assert [(e.kind, e.rule) for e in engine.expired(T0)] == [
        (MemoryKind.COOLDOWN, "gone"),
        (MemoryKind.THROTTLE, "throttled"),
        (MemoryKind.FOR, "hot"),
    ]
    assert [e.rule for e in engine.memory] == ["new-ip"]
    engine.apply(Evaluation([], [], engine.expired(T0)))
    assert engine.expired(T0) == []
    assert [e.rule for e in engine.memory] == ["new-ip"]


def test_a_rule_back_under_its_name_finds_its_memory_until_it_is_dropped(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, NEW_IP)
    run(engine, [login(0)])
    engine.replace_rules(load_text(tmp_path, "rules: []\n"))
    assert engine.memory == []
    engine.replace_rules(load_text(tmp_path, "rules:\n" + NEW_IP))
    assert engine.expired(T0) == []
    assert run(engine, [login(60)]) == []


def test_expired_lists_memory_a_rule_no_longer_uses(tmp_path: Path) -> None:
    memory = (
        entry(MemoryKind.SEEN, "throttled", "x", 0),
        entry(MemoryKind.THROTTLE, "new-ip", "x", 0),
        entry(MemoryKind.FOR, "throttled", "x", 0),
        entry(MemoryKind.COOLDOWN, "throttled", "x", 0),
    )
    engine = engine_for(tmp_path, EXPIRING, memory=memory)
    assert engine.expired(T0) == list(memory[:3])
