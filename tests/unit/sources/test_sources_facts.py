"""Facts: bounded CPU windows, freshness, server lists per provider, pods online."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from daemon.facts import CpuSample, CpuWindow, Facts, PodFact, ServerFact

T0 = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


def at(minutes: float, percent: float = 50.0) -> CpuSample:
    return CpuSample(T0 + timedelta(minutes=minutes), percent, 2)


def server(provider: str, name: str) -> ServerFact:
    return ServerFact(provider=provider, name=name, id=name, observed_at=T0, cores=2)


def test_cpu_window_keeps_new_samples_only_and_drops_old_ones() -> None:
    window = CpuWindow(max_age=timedelta(hours=1))
    assert window.add(at(0))
    assert window.add(at(5))
    assert not window.add(at(5, 99.0)), "a sample already held is not added twice"
    assert not window.add(at(1)), "nor an older one"
    assert window.add(at(61))
    assert [s.time for s in window] == [at(5).time, at(61).time]
    assert window.latest == at(61)
    assert window.since(at(6).time) == [at(61)]
    assert window.since(at(5).time) == [at(5), at(61)]


def test_cpu_window_is_bounded_by_count() -> None:
    window = CpuWindow(max_samples=3)
    for minute in range(10):
        window.add(at(minute))
    assert len(window) == 3
    assert [s.time for s in window] == [at(m).time for m in (7, 8, 9)]


def test_fresh_takes_seconds_or_a_timedelta() -> None:
    facts = Facts()
    assert not facts.fresh("actions", T0, 60)
    facts.polled_at["actions"] = T0
    assert facts.fresh("actions", T0 + timedelta(seconds=60), 60)
    assert not facts.fresh("actions", T0 + timedelta(seconds=61), 60)
    assert facts.fresh("actions", T0 + timedelta(minutes=5), timedelta(minutes=5))
    assert not facts.fresh("logs", T0, timedelta(days=1))


def test_replace_servers_is_per_provider_and_forgets_the_gone() -> None:
    facts = Facts()
    facts.replace_servers("seeweb", [server("seeweb", "a"), server("seeweb", "b")])
    facts.replace_servers("glesys", [server("glesys", "a")])
    facts.add_cpu("seeweb", "b", at(0))
    facts.add_cpu("glesys", "a", at(0))

    gone = facts.replace_servers("seeweb", [server("seeweb", "a")])
    assert gone == {("seeweb", "b")}
    assert set(facts.servers) == {("seeweb", "a"), ("glesys", "a")}
    assert set(facts.cpu) == {("glesys", "a")}
    assert [s.name for s in facts.servers_of("seeweb")] == ["a"]
    assert facts.latest_cpu("glesys", "a") == at(0)
    assert facts.latest_cpu("seeweb", "a") is None


def test_cpu_window_follows_the_facts_setting() -> None:
    facts = Facts(cpu_window=timedelta(minutes=10))
    for minute in (0, 5, 11):
        facts.add_cpu("seeweb", "a", at(minute))
    assert [s.time for s in facts.cpu[("seeweb", "a")]] == [at(5).time, at(11).time]


def test_pods_online_by_cluster_and_runtime_class() -> None:
    def pod(uuid: str, cluster: str, runtime_class: str, online: bool) -> PodFact:
        return PodFact(
            uuid=uuid,
            cluster=cluster,
            name=uuid,
            runtime_class=runtime_class,
            status="running" if online else "terminated",
            online=online,
            failed=False,
            observed_at=T0,
        )

    facts = Facts()
    facts.pods = {
        p.uuid: p
        for p in (
            pod("1", "c1", "l4", True),
            pod("2", "c1", "l4", True),
            pod("3", "c1", "a100", False),
            pod("4", "c2", "a100", True),
        )
    }
    assert facts.pods_online() == {("c1", "l4"): 2, ("c2", "a100"): 1}
