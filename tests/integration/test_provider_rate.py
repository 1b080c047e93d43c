"""A provider's request limits come from its config section, and its requests follow them.

`[seeweb] rate`, `burst` and `concurrency` set one limit for every source and action of the
provider. The simulator's request log, stamped with simulated time (the daemon's clock moves the
cloud as the limit makes requests wait), shows the rate the requests kept.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from pathlib import Path

import pytest
from configs import write_config
from conftest import SimFactory, linked_daemon, rows

from daemon.errors import ConfigError
from daemon.registry import load_config


def world(name: str, servers: int, prefix: str) -> str:
    """Return a scenario of `servers` idle ECS servers named `<prefix>00000`, `<prefix>00001`..."""
    return f"name: {name}\nseed: 3\nservers:\n" + "".join(
        f"  - {{name: {prefix}{n:05d}, plan: ECS1, demand: {{kind: constant, cores: 0.5}}}}\n"
        for n in range(servers)
    )


WORLD = world("rate", 30, "ec9")


async def test_the_requests_keep_the_configured_rate(simulator: SimFactory, tmp_path: Path) -> None:
    sim = await simulator(WORLD, metrics_step_s=60)
    daemon = linked_daemon(
        sim,
        tmp_path,
        "rules: []\n",
        provider_options={"seeweb": 'rate = "2/s"\nburst = 3\nconcurrency = 2'},
    )
    async with daemon:
        await daemon.poll_once()
        status = daemon.status()
        waited = daemon.metrics.registry.get_sample_value(
            "cloudpilot_api_rate_limit_wait_seconds_total", {"provider": "seeweb"}
        )
    times = sorted(
        datetime.fromisoformat(r["t"]).timestamp()
        for r in await sim.requests()
        if r["path"].startswith("/ecs/v2/")
    )
    # Every server's metrics and the other sources' reads: well past the burst.
    assert len(times) > 30
    # A token bucket of 2/s with a burst of 3: no stretch of time holds more than that allows.
    for (i, first), (j, last) in itertools.combinations(enumerate(times), 2):
        assert j - i + 1 <= 3 + 2 * (last - first) + 1e-6, (i, j, last - first)
    # And it is the limit, not something slower: the requests took about (n - burst) / rate.
    assert times[-1] - times[0] == pytest.approx((len(times) - 3) / 2, abs=1.0)
    assert waited is not None and waited > 0
    assert status["providers"] == {"seeweb": {"rate_per_s": 2.0, "burst": 3, "concurrency": 2}}


def test_limits_are_read_and_checked_with_the_provider_s_section(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, seeweb="https://api.seeweb.it", provider_options={"seeweb": 'rate = "300/min"'}
    )
    section = load_config(path, environ={}).model.provider("seeweb")
    assert section is not None
    assert section.model_dump()["rate"] == 5.0
    assert section.model_dump()["concurrency"] == 4  # the documented default
    for bad, reason in (
        ('rate = "fast"', "not a rate: 'fast'"),
        ('rate = "0/s"', "must be more than 0 requests"),
        ("concurrency = 0", "greater than or equal to 1"),
    ):
        write_config(tmp_path, seeweb="https://api.seeweb.it", provider_options={"seeweb": bad})
        with pytest.raises(ConfigError, match=reason) as caught:
            load_config(path, environ={})
        assert "seeweb." in str(caught.value)


BIG_WORLD = world("many", 100, "ec8")


async def test_a_sweep_cut_short_resumes_with_the_servers_it_did_not_reach(
    simulator: SimFactory, tmp_path: Path
) -> None:
    sim = await simulator(BIG_WORLD, metrics_step_s=60)
    # 100 servers at 2/s need 50 s; a 1-minute interval gives a sweep 30 s.
    daemon = linked_daemon(
        sim,
        tmp_path,
        "rules: []\n",
        provider_options={"seeweb": 'rate = "2/s"\nburst = 2\nconcurrency = 2'},
        extra='[poll]\nmetrics = "1m"\n',
    )

    async def read_since(mark: float) -> list[str]:
        return [
            r["path"].split("/")[4]
            for r in await sim.requests()
            if r["path"].endswith("/metrics") and datetime.fromisoformat(r["t"]).timestamp() >= mark
        ]

    async with daemon:
        start = daemon.clock.now().timestamp()
        await daemon.poll_once()
        first = await read_since(start)
        source = next(s for s in daemon.scheduler.jobs.values() if s.name == "metrics").source
        left = source.remaining  # type: ignore[attr-defined]
        gauge = daemon.metrics.registry.get_sample_value(
            "cloudpilot_sweep_remaining_servers", {"source": "metrics"}
        )
        sampled = {name for (provider, name) in daemon.facts.cpu if provider == "seeweb"}
        daemon.clock.advance(60)  # type: ignore[attr-defined]
        second_start = daemon.clock.now().timestamp()
        await daemon.poll_once()
        second = await read_since(second_start)
        left_after = source.remaining  # type: ignore[attr-defined]
        sampled_after = {name for (provider, name) in daemon.facts.cpu if provider == "seeweb"}

    everyone = {f"ec8{n:05d}" for n in range(100)}
    # The first sweep ran out of time part way, and kept what it read.
    assert 0 < len(first) < 100 and left == 100 - len(first) == gauge
    assert sampled == set(first)
    # The next one read the servers the first did not reach before any other.
    unread = everyone - set(first)
    assert set(second[: len(unread)]) == unread
    # Between them every server has samples: each is read at least once per servers / rate.
    assert sampled_after == everyone
    assert left_after == 100 - len(second)


async def test_cpu_samples_leave_no_seen_keys_and_come_once(
    simulator: SimFactory, tmp_path: Path
) -> None:
    sim = await simulator(WORLD, metrics_step_s=60)
    daemon = linked_daemon(sim, tmp_path, "rules: []\n", extra='[poll]\nmetrics = "1m"\n')
    counts = []
    async with daemon:
        for _ in range(4):
            await daemon.poll_once()
            counts.append(
                rows(
                    tmp_path / "state.db", "SELECT count(*) FROM seen WHERE key LIKE 'seeweb.cpu:%'"
                )
            )
            daemon.clock.advance(60)  # type: ignore[attr-defined]
        cursor = await daemon.store.get_cursor("metrics")
        cpu_events = daemon.metrics.registry.get_sample_value(
            "cloudpilot_events_total", {"type": "seeweb.server.cpu"}
        )
    # The metrics cursor keeps each server's newest sample; no row per sample is stored.
    assert counts == [[(0,)]] * 4
    assert cursor is not None and len(cursor["last"]) == 30
    # And each sample came once: 12 samples of history per server, then one a minute.
    assert cpu_events == 30 * 12 + 30 * 3
