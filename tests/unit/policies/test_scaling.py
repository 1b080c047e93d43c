"""The autoscale decision: thresholds held a while, clamps, cooldown, caps, windows, staleness."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from daemon.facts import CpuSample
from daemon.policies.scaling import Verdict, clamp_target, decide, demand_of, held_since, percent_of
from daemon.rules.compiled import ScalingSpec, Threshold
from daemon.rules.windows import Windows, parse_window

T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)  # a Monday
STEP = timedelta(minutes=5)


def spec(
    *,
    up: float = 75,
    up_for: float = 600,
    up_step: int = 1,
    down: float = 40,
    down_for: float = 1800,
    down_step: int = 1,
    min_cores: int = 1,
    max_cores: int = 8,
    cooldown: float = 1800,
    windows: Windows | None = None,
    emergency_above: float | None = None,
    max_resizes_per_day: int = 6,
) -> ScalingSpec:
    return ScalingSpec(
        up=Threshold(up, up_for, up_step),
        down=Threshold(down, down_for, down_step),
        min_cores=min_cores,
        max_cores=max_cores,
        cooldown_s=cooldown,
        windows=windows if windows is not None else Windows(()),
        emergency_above=emergency_above,
        max_resizes_per_day=max_resizes_per_day,
    )


def series(percents: Sequence[float], cores: int | None, start: datetime = T0) -> list[CpuSample]:
    """Return one sample per 5 minutes from `start`, each a percentage of `cores`."""
    return [CpuSample(start + i * STEP, pct, cores) for i, pct in enumerate(percents)]


def at_end(samples: Sequence[CpuSample]) -> datetime:
    return samples[-1].time


def run(
    settings: ScalingSpec,
    samples: Sequence[CpuSample],
    current: int,
    *,
    now: datetime | None = None,
    resizes: Sequence[datetime] = (),
    sizes: Sequence[int] | None = None,
) -> Verdict:
    return decide(settings, samples, current, now or at_end(samples), resizes=resizes, sizes=sizes)


# --- no data, stale data --------------------------------------------------------------------


def test_no_samples_hold() -> None:
    verdict = decide(spec(), [], 2, T0)
    assert verdict == Verdict(2, 2, "hold", "no CPU samples yet", missing="no_cpu_samples")
    assert not verdict.resize


def test_stale_samples_hold_even_when_hot() -> None:
    samples = series([100] * 12, cores=2)
    verdict = run(spec(), samples, 2, now=at_end(samples) + timedelta(minutes=25))
    assert verdict.direction == "hold"
    assert not verdict.resize
    assert "too old to act on" in verdict.reason
    assert verdict.cpu_percent == 100


def test_samples_exactly_twenty_minutes_old_are_still_fresh() -> None:
    samples = series([100] * 12, cores=2)
    verdict = run(spec(up_for=600), samples, 2, now=at_end(samples) + timedelta(minutes=20))
    assert verdict.direction == "up"


# --- scale up -------------------------------------------------------------------------------


def test_up_waits_for_the_whole_for() -> None:
    settings = spec(up=75, up_for=600)
    calm_then_hot = series([50, 50, 90], cores=2)
    # One hot sample covers 5 minutes back to the calm one before it: not yet 10 minutes.
    assert run(settings, calm_then_hot, 2).direction == "hold"
    calm_then_hot_twice = series([50, 50, 90, 90], cores=2)
    verdict = run(settings, calm_then_hot_twice, 2)
    assert (verdict.direction, verdict.target) == ("up", 3)
    assert verdict.resize
    assert verdict.reason == "CPU above 75% for 10m (now 90% of 2 cores)"
    assert verdict.cpu_percent == 90


def test_up_counts_time_from_the_first_hot_sample_when_there_is_no_earlier_one() -> None:
    settings = spec(up_for=600)
    assert run(settings, series([90, 90], cores=2), 2).direction == "hold"  # 5 minutes held
    assert run(settings, series([90, 90, 90], cores=2), 2).direction == "up"  # 10 minutes


def test_up_needs_cpu_strictly_above_the_threshold() -> None:
    assert run(spec(up=75), series([75] * 6, cores=2), 2).direction == "hold"


def test_a_cool_sample_restarts_the_wait() -> None:
    samples = series([90, 90, 90, 90, 50, 90], cores=2)
    assert run(spec(up_for=600), samples, 2).direction == "hold"


def test_a_gap_in_samples_counts_for_at_most_fifteen_minutes() -> None:
    calm = CpuSample(T0, 50, 2)
    hot = CpuSample(T0 + timedelta(hours=1), 90, 2)
    assert held_since([calm, hot], 2, lambda pct: pct > 75) == hot.time - timedelta(minutes=15)
    assert run(spec(up_for=900), [calm, hot], 2).direction == "up"
    assert run(spec(up_for=901), [calm, hot], 2).direction == "hold"


def test_up_steps_by_step() -> None:
    verdict = run(spec(up_step=2), series([90] * 4, cores=2), 2)
    assert (verdict.direction, verdict.target) == ("up", 4)


# --- scale down -----------------------------------------------------------------------------


def test_down_waits_for_down_for() -> None:
    settings = spec(down=40, down_for=1800)
    # Five cool samples after a busier one: 25 minutes below 40%.
    assert run(settings, series([45] + [30] * 5, cores=4), 4).direction == "hold"
    verdict = run(settings, series([45] + [30] * 6, cores=4), 4)
    assert (verdict.direction, verdict.target) == ("down", 3)
    assert verdict.reason == "CPU below 40% for 30m (now 30% of 4 cores)"


def test_down_only_when_the_smaller_size_stays_under_up_above() -> None:
    settings = spec(up=75, down=40, down_for=1800)
    # 39% of 2 cores is 0.78 cores: 78% of 1 core, over up.above.
    verdict = run(settings, series([39] * 12, cores=2), 2)
    assert verdict.direction == "hold"
    assert not verdict.resize
    assert "1 cores would have reached 78% (up.above 75%)" in verdict.reason
    # 35% of 2 cores is 0.7 cores: 70% of 1 core, under it.
    assert run(settings, series([35] * 12, cores=2), 2).target == 1


def test_down_looks_at_the_peak_of_the_cool_stretch() -> None:
    # 4 cores, mostly 20% (0.8 cores), one sample at 39% (1.56 cores).
    samples = series([20, 20, 39, 20, 20, 20, 20, 20], cores=4)
    # With a step of 1 the target is 3: the peak is 52% of it, so it goes.
    assert run(spec(up=75, down_step=1), samples, 4).target == 3
    # With a step of 2 the target is 2, where the peak would have been 78%.
    verdict = run(spec(up=75, down_step=2), samples, 4)
    assert verdict.direction == "hold"
    assert "2 cores would have reached 78% (up.above 75%)" in verdict.reason


def test_down_needs_cpu_strictly_below_the_threshold() -> None:
    assert run(spec(down=40), series([40] * 12, cores=4), 4).direction == "hold"


# --- clamps ---------------------------------------------------------------------------------


def test_up_at_max_cores_holds() -> None:
    verdict = run(spec(max_cores=4), series([95] * 6, cores=4), 4)
    assert verdict.direction == "hold"
    assert "already at max_cores 4" in verdict.reason


def test_down_at_min_cores_holds() -> None:
    verdict = run(spec(min_cores=2), series([5] * 12, cores=2), 2)
    assert verdict.direction == "hold"
    assert "already at min_cores 2" in verdict.reason


def test_a_big_step_stops_at_max_cores() -> None:
    verdict = run(spec(up_step=4, max_cores=8), series([95] * 6, cores=6), 6)
    assert (verdict.direction, verdict.target) == ("up", 8)


def test_a_big_step_down_stops_at_min_cores() -> None:
    verdict = run(spec(down_step=4, min_cores=2), series([5] * 12, cores=4), 4)
    assert (verdict.direction, verdict.target) == ("down", 2)


def test_up_goes_to_the_next_size_the_provider_offers() -> None:
    verdict = run(spec(), series([95] * 6, cores=2), 2, sizes=[1, 2, 4, 8])
    assert (verdict.direction, verdict.target) == ("up", 4)


def test_down_goes_to_the_next_smaller_size_the_provider_offers() -> None:
    verdict = run(spec(), series([5] * 12, cores=4), 4, sizes=[1, 2, 4, 8])
    assert (verdict.direction, verdict.target) == ("down", 2)


def test_no_bigger_size_within_max_cores_holds() -> None:
    verdict = run(spec(max_cores=6), series([95] * 6, cores=4), 4, sizes=[2, 4, 8])
    assert verdict.direction == "hold"
    assert "nearest size the provider offers" in verdict.reason


@pytest.mark.parametrize(
    ("current", "wanted", "sizes", "expected"),
    [
        (2, 3, None, 3),
        (2, 12, None, 8),
        (2, 0, None, 1),
        (2, 3, [1, 2, 4, 8], 4),
        (2, 5, [1, 2, 4, 8], 8),
        (4, 12, [1, 2, 4, 16], 4),  # 16 is over max_cores: stay
        (4, 6, [1, 2, 4, 6, 16], 6),
        (4, 3, [1, 2, 4, 8], 2),
        (4, 1, [2, 4, 8], 2),
        (2, 1, [2, 4, 8], 2),
        (3, 3, [1, 2, 4], 3),
    ],
)
def test_clamp_target(current: int, wanted: int, sizes: list[int] | None, expected: int) -> None:
    assert clamp_target(spec(min_cores=1, max_cores=8), current, wanted, sizes) == expected


# --- cooldown and the daily cap -------------------------------------------------------------


def test_cooldown_holds_after_a_resize() -> None:
    samples = series([95] * 6, cores=2)
    now = at_end(samples)
    verdict = run(spec(cooldown=1800), samples, 2, resizes=[now - timedelta(minutes=29)])
    assert verdict.direction == "hold"
    assert "cooling down until" in verdict.reason
    assert (now - timedelta(minutes=29) + timedelta(minutes=30)).isoformat() in verdict.reason
    after = run(spec(cooldown=1800), samples, 2, resizes=[now - timedelta(minutes=30)])
    assert (after.direction, after.target) == ("up", 3)


def test_cooldown_reads_the_newest_resize_whatever_the_order() -> None:
    samples = series([95] * 6, cores=2)
    now = at_end(samples)
    resizes = [now - timedelta(minutes=5), now - timedelta(hours=5)]
    assert run(spec(cooldown=1800), samples, 2, resizes=resizes).direction == "hold"


def test_daily_cap_holds_after_max_resizes_in_24_hours() -> None:
    samples = series([95] * 6, cores=2)
    now = at_end(samples)
    settings = spec(cooldown=900, max_resizes_per_day=2)
    two_today = [now - timedelta(hours=3), now - timedelta(hours=2)]
    verdict = run(settings, samples, 2, resizes=two_today)
    assert verdict.direction == "hold"
    assert "2 resizes in the last 24 h (max_resizes_per_day)" in verdict.reason
    one_yesterday = [now - timedelta(hours=24), now - timedelta(hours=2)]
    assert run(settings, samples, 2, resizes=one_yesterday).target == 3


# --- windows --------------------------------------------------------------------------------

NIGHTS = Windows((parse_window("Mon-Fri 22:00-06:00"),))


def test_closed_window_holds_an_up() -> None:
    samples = series([90] * 6, cores=2)  # Monday around 12:25 UTC
    verdict = run(spec(windows=NIGHTS), samples, 2)
    assert verdict.direction == "hold"
    assert verdict.reason.endswith("but outside the resize windows")


def test_closed_window_holds_a_down() -> None:
    samples = series([5] * 12, cores=4)
    verdict = run(spec(windows=NIGHTS, emergency_above=95), samples, 4)
    assert verdict.direction == "hold"
    assert "outside the resize windows" in verdict.reason


def test_open_window_lets_it_through() -> None:
    samples = series([90] * 6, cores=2, start=T0 + timedelta(hours=11))  # Monday 23:00 UTC
    assert run(spec(windows=NIGHTS), samples, 2).target == 3


def test_emergency_scales_up_outside_the_windows() -> None:
    settings = spec(windows=NIGHTS, emergency_above=95)
    verdict = run(settings, series([97] * 6, cores=2), 2)
    assert (verdict.direction, verdict.target) == ("up", 3)
    assert "emergency: above 95% outside the resize windows" in verdict.reason


def test_no_emergency_at_or_under_emergency_above() -> None:
    settings = spec(windows=NIGHTS, emergency_above=95)
    assert run(settings, series([95] * 6, cores=2), 2).direction == "hold"


def test_emergency_does_not_bypass_cooldown() -> None:
    samples = series([100] * 6, cores=2)
    settings = spec(windows=NIGHTS, emergency_above=95, cooldown=1800)
    verdict = run(settings, samples, 2, resizes=[at_end(samples) - timedelta(minutes=10)])
    assert verdict.direction == "hold"
    assert "cooling down" in verdict.reason


# --- samples across a resize ----------------------------------------------------------------


def test_percent_and_demand_read_samples_in_cores() -> None:
    sample = CpuSample(T0, 90, 2)
    assert demand_of(sample, 4) == pytest.approx(1.8)
    assert percent_of(sample, 4) == pytest.approx(45)
    assert percent_of(sample, 1) == 100  # capped
    unknown = CpuSample(T0, 90, None)  # no cores recorded: read as the current ones
    assert demand_of(unknown, 4) == pytest.approx(3.6)
    assert percent_of(unknown, 4) == pytest.approx(90)


def test_hot_samples_from_before_an_up_do_not_push_again() -> None:
    # 90% of 2 cores is 1.8 cores: 45% of the 4 cores the server has now.
    samples = series([90] * 8, cores=2)
    verdict = run(spec(), samples, 4)
    assert verdict.direction == "hold"
    assert verdict.cpu_percent == 45
    assert verdict.reason == "CPU 45% of 4 cores: within thresholds"


def test_hot_samples_from_before_a_down_still_count_toward_up() -> None:
    # 40% of 4 cores is 1.6 cores: 80% of the 2 cores the server has now.
    samples = series([40] * 3, cores=4)
    verdict = run(spec(up_for=600), samples, 2)
    assert (verdict.direction, verdict.target) == ("up", 3)
    assert verdict.cpu_percent == 80


def test_cool_stretch_carries_across_a_resize() -> None:
    before = series([10] * 4, cores=4)  # 0.4 cores
    after = series([20] * 3, cores=2, start=at_end(before) + STEP)  # still 0.4 cores
    verdict = run(spec(down_for=1800), before + after, 2)
    assert (verdict.direction, verdict.target) == ("down", 1)


def test_down_ignores_the_busy_sample_before_the_cool_stretch() -> None:
    # 3 cores, fully busy (3 cores of demand), then 35 minutes at 0.6 cores (20%).
    samples = series([100] + [20] * 7, cores=3)
    verdict = run(spec(up=75, down=40, down_for=1800), samples, 3)
    # Over the 30+ minutes below 40%, 2 cores would have run at 30%: scale down.
    assert (verdict.direction, verdict.target) == ("down", 2)


@pytest.mark.parametrize(
    ("percents", "reason"),
    [
        # A run above `up` that started between the 60% sample and the first 100% one.
        ([60, 60, 100], "CPU 100% of 2 cores: above 75% for 5m of 10m"),
        ([60, 30, 30, 30], "CPU 30% of 2 cores: below 40% for 15m of 30m"),
        ([60, 60, 60], "CPU 60% of 2 cores: within thresholds"),
    ],
    ids=["up-run-under-way", "down-run-under-way", "between"],
)
def test_a_hold_says_how_far_a_run_has_got(percents: list[float], reason: str) -> None:
    verdict = run(spec(), series(percents, cores=2), 2)
    assert (verdict.direction, verdict.reason) == ("hold", reason)
