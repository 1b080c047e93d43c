"""Readiness: rules loaded and every enabled source polled once."""

from __future__ import annotations

from daemon.observability.http import Readiness


def test_nothing_done_lists_rules_and_every_source_in_name_order() -> None:
    readiness = Readiness(["logs", "actions"])

    assert not readiness.ready
    assert readiness.reasons() == [
        "rules not loaded",
        "source actions has not polled yet",
        "source logs has not polled yet",
    ]


def test_ready_once_rules_are_loaded_and_each_source_polled() -> None:
    readiness = Readiness(["actions", "logs"])
    readiness.rules_loaded()
    readiness.source_polled("actions")
    assert readiness.reasons() == ["source logs has not polled yet"]
    assert not readiness.ready

    readiness.source_polled("logs")

    assert readiness.ready
    assert readiness.reasons() == []


def test_rules_alone_are_not_enough_when_sources_are_expected_later() -> None:
    readiness = Readiness()
    readiness.rules_loaded()
    assert readiness.ready  # no source enabled yet

    readiness.expect_sources(["glesys"])

    assert not readiness.ready
    assert readiness.reasons() == ["source glesys has not polled yet"]


def test_a_poll_of_a_source_that_is_not_enabled_changes_nothing() -> None:
    readiness = Readiness(["actions"])
    readiness.source_polled("billing")

    assert readiness.reasons() == ["rules not loaded", "source actions has not polled yet"]


def test_a_source_polled_before_it_was_expected_still_counts() -> None:
    readiness = Readiness()
    readiness.rules_loaded()
    readiness.source_polled("actions")

    readiness.expect_sources(["actions"])

    assert readiness.ready


def test_polled_answers_for_the_expected_sources_named() -> None:
    readiness = Readiness(["actions", "metrics"])
    readiness.source_polled("actions")
    assert readiness.polled(["actions"])
    assert not readiness.polled(["actions", "metrics"])
    assert readiness.polled(["actions", "glesys"])  # not configured: nothing to wait for
    readiness.source_polled("metrics")
    assert readiness.polled(frozenset({"actions", "metrics"}))
